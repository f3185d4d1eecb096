"""Query points and occupancy labels for one patch, from a reference DSM (2.5D ground truth).

ImpliCity learns an occupancy field: a 3D point is *occupied* when it lies below the surface. With
a DSM as ground truth the label of a query (x, y, z) is ``z < DSM(x, y)``. The DSM is read with
**nearest-neighbour** lookup (the value of the cell containing (x, y)): the DSM is treated as a
field of vertical prisms, so building walls stay vertical — bilinear interpolation would turn every
facade into a 0.5 m wide slope and mislabel points right beside it.

Queries mix three populations (fractions in :class:`QuerySamplingConfig`):

* **uniform** in the patch volume, z in [lowest DSM − margin, highest DSM + margin];
* **surface**: a random valid cell, (x, y) uniform inside it, z = its height + N(0, σ) with
  σ = 0.4 m as in the reference recipe;
* **edge/facade**: cells whose 3×3 neighbourhood spans more than ``edge_step_m`` (building edges,
  facades), (x, y) near the cell, z uniform over the neighbourhood's height range ± σ — samples
  along the whole wall, where the input clouds are poorest.

All coordinates here are *patch-local metres*: x, y in [0, patch_size) from the patch's south-west
corner, z absolute. DSM arrays have rows running north→south (row 0 = north edge).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class QuerySamplingConfig:
    """How queries are drawn and weighted."""

    uniform_fraction: float = 0.3
    surface_fraction: float = 0.5
    edge_fraction: float = 0.2
    surface_std: float = 0.4
    z_margin: float = 5.0
    edge_step_m: float = 2.0
    edge_xy_std: float = 0.35  # metres around the edge cell centre
    building_weight: float = 1.0
    forest_weight: float = 0.5
    water_weight: float = 0.5
    default_weight: float = 1.0

    def __post_init__(self) -> None:
        fractions = (self.uniform_fraction, self.surface_fraction, self.edge_fraction)
        if min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
            raise ValueError(f"query fractions must be >= 0 and sum to 1, got {fractions}")


def dsm_cells(x: np.ndarray, y: np.ndarray, resolution: float, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of the cells containing patch-local (x, y); points on the far edges are clamped."""
    h, w = shape
    cols = np.clip(np.floor(x / resolution).astype(np.int64), 0, w - 1)
    rows = np.clip(h - 1 - np.floor(y / resolution).astype(np.int64), 0, h - 1)
    return rows, cols


def occupancy_labels(query: np.ndarray, dsm: np.ndarray, resolution: float) -> np.ndarray:
    """float32 (M,): 1 where z < DSM at (x, y) (nearest cell), else 0 (also 0 where the DSM is NaN)."""
    rows, cols = dsm_cells(query[:, 0], query[:, 1], resolution, dsm.shape)
    surface = dsm[rows, cols]
    with np.errstate(invalid="ignore"):
        return (query[:, 2] < surface).astype(np.float32)


def loss_weights(query: np.ndarray, resolution: float, dsm: np.ndarray, valid: np.ndarray | None = None,
                 building: np.ndarray | None = None, forest: np.ndarray | None = None,
                 water: np.ndarray | None = None, config: QuerySamplingConfig | None = None) -> np.ndarray:
    """float32 (M,) weights from the land cover of each query's cell; 0 where invalid or NaN.

    Building wins over forest/water where masks overlap (the building weight applies).
    """
    cfg = config or QuerySamplingConfig()
    rows, cols = dsm_cells(query[:, 0], query[:, 1], resolution, dsm.shape)
    w = np.full(len(query), cfg.default_weight, dtype=np.float32)
    if forest is not None:
        w[forest[rows, cols] > 0] = cfg.forest_weight
    if water is not None:
        w[water[rows, cols] > 0] = cfg.water_weight
    if building is not None:
        w[building[rows, cols] > 0] = cfg.building_weight
    ok = np.isfinite(dsm[rows, cols])
    if valid is not None:
        ok &= valid[rows, cols] > 0
    w[~ok] = 0.0
    return w


def edge_cells(dsm: np.ndarray, step_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean edge map and the 3×3 local min/max heights (NaN cells excluded)."""
    finite = np.isfinite(dsm)
    hi = ndimage.maximum_filter(np.where(finite, dsm, -np.inf), size=3, mode="nearest")
    lo = ndimage.minimum_filter(np.where(finite, dsm, np.inf), size=3, mode="nearest")
    with np.errstate(invalid="ignore"):
        edges = finite & ((hi - lo) > step_m)
    return edges, lo, hi


def sample_queries(rng: np.random.Generator, dsm: np.ndarray, resolution: float, n: int,
                   config: QuerySamplingConfig | None = None, valid: np.ndarray | None = None) -> np.ndarray:
    """(n, 3) float64 patch-local queries (uniform + surface + edge, in that order).

    Surface and edge samples are drawn from valid, finite cells only; without any such cell every
    query is uniform (and will get weight 0 from :func:`loss_weights`).
    """
    cfg = config or QuerySamplingConfig()
    h, w = dsm.shape
    size_x, size_y = w * resolution, h * resolution
    usable = np.isfinite(dsm) if valid is None else (np.isfinite(dsm) & (valid > 0))
    flat = np.flatnonzero(usable)
    n_surface = int(round(n * cfg.surface_fraction)) if flat.size else 0
    edges, lo, hi = edge_cells(dsm, cfg.edge_step_m)
    edge_flat = np.flatnonzero(edges & usable)
    n_edge = int(round(n * cfg.edge_fraction)) if edge_flat.size else 0
    n_surface += 0 if edge_flat.size or not flat.size else int(round(n * cfg.edge_fraction))
    n_uniform = n - n_surface - n_edge
    if n_uniform < 0:
        n_surface += n_uniform
        n_uniform = 0

    zmin = float(np.nanmin(dsm[usable])) if flat.size else 0.0
    zmax = float(np.nanmax(dsm[usable])) if flat.size else 0.0
    uni = np.column_stack([rng.uniform(0, size_x, n_uniform), rng.uniform(0, size_y, n_uniform),
                           rng.uniform(zmin - cfg.z_margin, zmax + cfg.z_margin, n_uniform)])

    cells = flat[rng.integers(0, flat.size, n_surface)] if n_surface else np.zeros(0, np.int64)
    r, c = np.divmod(cells, w)
    sx = (c + rng.random(n_surface)) * resolution
    sy = (h - 1 - r + rng.random(n_surface)) * resolution
    sz = dsm[r, c] + rng.normal(0.0, cfg.surface_std, n_surface)
    surf = np.column_stack([sx, sy, sz])

    cells = edge_flat[rng.integers(0, edge_flat.size, n_edge)] if n_edge else np.zeros(0, np.int64)
    r, c = np.divmod(cells, w)
    ex = np.clip((c + 0.5) * resolution + rng.normal(0, cfg.edge_xy_std, n_edge), 0, np.nextafter(size_x, 0))
    ey = np.clip((h - 0.5 - r) * resolution + rng.normal(0, cfg.edge_xy_std, n_edge), 0, np.nextafter(size_y, 0))
    ez = rng.uniform(lo[r, c] - cfg.surface_std, hi[r, c] + cfg.surface_std)
    edge = np.column_stack([ex, ey, ez])
    return np.concatenate([uni, surf, edge]).reshape(-1, 3)

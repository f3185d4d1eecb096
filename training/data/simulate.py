"""A *simulation* of satellite-stereo point clouds from a dense cloud (LiDAR or synthetic samples).

No real photogrammetric cloud is available for training, so we degrade dense, accurate clouds the
way dense stereo matching of ~0.5 m satellite images degrades a city. This is a model of the
effects, not a physical simulation of matching; each effect is a separate, seeded, parameterised
step (:class:`StereoSimulationConfig`):

1. **2.5D surface** — stereo sees only the top surface: LiDAR returns more than
   ``top_surface_tolerance`` below the per-cell maximum (ground under trees, walls) are dropped.
2. **Edge smearing** — matching windows straddling a building edge take the height of the
   roof ("foreground fattening"): on the low side of height steps the surface is replaced, over
   ``smear_distance_m``, by the grey dilation of the DSM, in spatially coherent patches covering
   about ``smear_probability`` of the edges.
3. **Occlusions** — cells hidden behind taller objects in either of the two satellite views
   (azimuth/elevation) cannot be matched: their points are dropped with ``occlusion_dropout``.
4. **Shadows** — matching is weak in dark cast shadows: points there are dropped with
   ``shadow_dropout``.
5. **Uneven, lower density** — points are thinned to ``density`` per m² on average, modulated by
   a smooth log-normal field (texture-poor areas match worse than textured ones).
6. **Noise** — spatially correlated height errors (a smooth random field: neighbouring matches
   share their error, so gridding cannot average it away), plus independent Gaussian height noise,
   larger on steep slopes, and small planimetric noise.
7. **Blunders** — a fraction of the points get large height errors (mismatches).

Works on any cloud with a CRS (e.g. Nîmes LiDAR HD with EPSG:2154, Delft AHN3 with EPSG:28992).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from implicity.core.gridding import cell_index, fill_nearest, grid_points
from implicity.core.pointcloud import PointCloud
from implicity.core.raster import GridSpec
from implicity.core.reference import without_noise

from .visibility import blocked_mask


@dataclass(frozen=True)
class StereoSimulationConfig:
    """Parameters of the stereo-cloud simulation (lengths in metres of the cloud's CRS)."""

    gsd: float = 0.5  # ground sampling distance of the simulated images = analysis cell size
    density: float = 3.0  # mean points per m² after thinning
    density_variation: float = 0.5  # std of log(density) of the modulation field
    density_scale_m: float = 12.0  # correlation length of the density field
    top_surface_tolerance: float = 1.0
    correlated_noise_std: float = 0.6  # std of the smooth height-error field
    correlated_noise_scale_m: float = 3.0  # its correlation length
    noise_std: float = 0.35  # independent per-point height noise
    noise_slope_gain: float = 0.25  # extra noise std per unit slope (m/m), slope clipped at 4
    xy_noise_std: float = 0.1
    blunder_fraction: float = 0.005
    blunder_std: float = 8.0
    views: tuple[tuple[float, float], ...] = ((95.0, 68.0), (265.0, 62.0))  # (azimuth, elevation) deg
    occlusion_dropout: float = 0.95
    sun: tuple[float, float] | None = (150.0, 45.0)  # (azimuth, elevation) deg; None = no shadows
    shadow_dropout: float = 0.5
    smear_distance_m: float = 1.5
    smear_probability: float = 0.6
    smear_scale_m: float = 8.0
    edge_step_m: float = 2.0  # height jump that counts as a building edge
    surface_fill_m: float = 1.0  # close small gaps of the gridded surface before the analysis

    def __post_init__(self) -> None:
        for name in ("gsd", "density", "density_scale_m", "smear_scale_m", "correlated_noise_scale_m"):
            if getattr(self, name) <= 0:
                raise ValueError(f"StereoSimulationConfig.{name} must be positive")
        for name in ("occlusion_dropout", "shadow_dropout", "smear_probability", "blunder_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"StereoSimulationConfig.{name} must be in [0, 1]")


@dataclass(frozen=True)
class SimulationResult:
    """The simulated cloud and the per-cell masks of what happened (on ``grid``)."""

    cloud: PointCloud
    grid: GridSpec
    surface: np.ndarray  # float32 top surface of the dense cloud (NaN = no data)
    smeared: np.ndarray  # bool, cells whose height was smeared from a taller neighbour
    occluded: np.ndarray  # bool, hidden in at least one view
    shadowed: np.ndarray  # bool, in cast shadow
    keep_probability: np.ndarray  # float32, chance that a point of the cell survives


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with correlation length ``scale_px``."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=max(scale_px, 0.5), mode="reflect")
    return (field - field.mean()) / max(float(field.std()), 1e-12)


def _disk(radius_px: float) -> np.ndarray:
    r = int(np.ceil(radius_px))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (xx ** 2 + yy ** 2) <= radius_px ** 2 + 1e-9


def simulate_stereo_cloud(cloud: PointCloud, config: StereoSimulationConfig | None = None,
                          seed: int = 0) -> SimulationResult:
    """Degrade a dense cloud into a satellite-stereo-like cloud (see the module docstring)."""
    cfg = config or StereoSimulationConfig()
    rng = np.random.default_rng(seed)
    cloud = without_noise(cloud)
    xyz = cloud.xyz
    xmin, ymin, xmax, ymax = cloud.bounds
    grid = GridSpec.from_bounds(xmin, ymin, xmax + cfg.gsd * 1e-3, ymax, cfg.gsd, cloud.crs)
    res = grid.resolution

    top = grid_points(xyz, grid, "max")
    surface = fill_nearest(top, cfg.surface_fill_m / res)
    idx, inside = cell_index(xyz, grid)  # every point is inside by construction of the grid
    rows, cols = np.divmod(idx, grid.width)
    flat_surface = surface.ravel()
    on_top = xyz[inside, 2] >= flat_surface[idx] - cfg.top_surface_tolerance

    # 2. foreground fattening at height steps
    finite = np.isfinite(surface)
    low = np.where(finite, surface, -np.inf)
    dilated = ndimage.grey_dilation(low, footprint=_disk(cfg.smear_distance_m / res), mode="nearest")
    step = np.zeros(grid.shape)
    step[finite] = dilated[finite] - low[finite]
    patches = smooth_field(rng, grid.shape, cfg.smear_scale_m / res)
    threshold = np.quantile(patches, 1.0 - cfg.smear_probability) if cfg.smear_probability > 0 else np.inf
    smeared = finite & (step > cfg.edge_step_m) & (patches >= threshold)
    blend = rng.uniform(0.6, 1.0, grid.shape)
    offset = np.where(smeared, blend * step, 0.0)

    # 3./4. occlusions in the views, cast shadows
    occluded = np.zeros(grid.shape, dtype=bool)
    for azimuth, elevation in cfg.views:
        occluded |= blocked_mask(surface, res, azimuth, elevation)
    shadowed = np.zeros(grid.shape, dtype=bool)
    if cfg.sun is not None:
        shadowed = blocked_mask(surface, res, cfg.sun[0], cfg.sun[1])
    survive = (1.0 - cfg.occlusion_dropout * occluded) * (1.0 - cfg.shadow_dropout * shadowed)

    # 5. thinning to an uneven target density
    counts = np.bincount(idx[on_top], minlength=grid.width * grid.height).reshape(grid.shape)
    local_density = ndimage.uniform_filter(counts.astype(np.float64), size=5, mode="nearest") / res ** 2
    modulation = np.exp(cfg.density_variation * smooth_field(rng, grid.shape, cfg.density_scale_m / res)
                        - 0.5 * cfg.density_variation ** 2)
    thin = np.clip(cfg.density * modulation / np.maximum(local_density, 1e-9), 0.0, 1.0)
    keep_probability = (thin * survive).astype(np.float32)
    keep = on_top & (rng.random(idx.size) < keep_probability.ravel()[idx])

    sel = np.flatnonzero(inside)[keep]
    out_xyz = xyz[sel].copy()
    k_rows, k_cols = rows[keep], cols[keep]
    out_xyz[:, 2] += offset[k_rows, k_cols]

    # 6. noise, larger on slopes
    gy, gx = np.gradient(np.where(finite, surface, np.nanmedian(surface) if finite.any() else 0.0), res)
    slope = np.clip(np.hypot(gx, gy), 0.0, 4.0)
    sigma = cfg.noise_std + cfg.noise_slope_gain * slope[k_rows, k_cols]
    correlated = cfg.correlated_noise_std * smooth_field(rng, grid.shape, cfg.correlated_noise_scale_m / res)
    out_xyz[:, 2] += correlated[k_rows, k_cols] + rng.standard_normal(len(sel)) * sigma
    out_xyz[:, :2] += rng.normal(0.0, cfg.xy_noise_std, (len(sel), 2))

    # 7. blunders
    blunders = rng.random(len(sel)) < cfg.blunder_fraction
    out_xyz[blunders, 2] += rng.normal(0.0, cfg.blunder_std, int(blunders.sum()))

    sim = replace(cloud.subset(sel), xyz=out_xyz, classification=None,
                  source=f"{cloud.source} (simulated stereo cloud, seed {seed})")
    return SimulationResult(cloud=sim, grid=grid, surface=surface.astype(np.float32), smeared=smeared,
                            occluded=occluded, shadowed=shadowed, keep_probability=keep_probability)

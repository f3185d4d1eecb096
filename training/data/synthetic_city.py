"""Procedural cities with an exact reference DSM, for training and for trying the tools.

A city is generated on a raster (default 256 m × 256 m at 0.5 m) in a few vectorised steps:
gently sloping terrain; a street grid (optionally rotated) whose blocks are cut into lots; on each
lot either a building (flat, gable, hip or multi-level roof, 3–60 m) or a park with trees and
sometimes a pond; street trees along the kerbs. Every pixel finds its block and lot by
``searchsorted`` and reads that lot's parameters from lookup tables, so there is no Python loop
over pixels or buildings. The DSM is exact by construction (it *is* the generated surface), which
is what makes synthetic cities useful next to real LiDAR references.

Coordinates: the city lives in a *fake* georeference, by default EPSG:32632 (UTM zone 32N) with
its south-west corner at (500 000, 5 000 000) — a plausible spot near 9° E, 45° N. It only gives
GIS tools a CRS to display the rasters; nothing about the city is real. Every generator is seeded:
the same (config, seed) gives bit-identical rasters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from rasterio.crs import CRS
from scipy import ndimage
from scipy.spatial import cKDTree

from implicity.core.pointcloud import PointCloud
from implicity.core.raster import GridSpec

# ASPRS LAS classes used for the dense cloud sampled from a city
CLASS_GROUND, CLASS_VEGETATION, CLASS_BUILDING, CLASS_WATER = 2, 5, 6, 9
ROOF_TYPES = ("flat", "gable", "hip", "multi")


@dataclass(frozen=True)
class CityConfig:
    """Parameters of the city generator (lengths in metres)."""

    size_m: float = 256.0
    resolution: float = 0.5
    origin: tuple[float, float] = (500000.0, 5000000.0)  # south-west corner, fake georeference
    crs: str = "EPSG:32632"
    base_height: float = 250.0
    terrain_slope_max: float = 0.03  # m per m
    terrain_relief: float = 2.0  # std of the smooth undulation (m)
    rotation_deg: float | None = None  # street grid rotation; None = random in [0, 90)
    block_size: tuple[float, float] = (36.0, 80.0)
    street_width: tuple[float, float] = (8.0, 18.0)
    max_lots_per_side: int = 3
    building_probability: float = 0.8
    setback: tuple[float, float] = (0.5, 4.0)
    height_median: float = 12.0
    height_spread: float = 0.6  # sigma of log(height)
    height_range: tuple[float, float] = (3.0, 60.0)
    roof_weights: dict[str, float] = field(
        default_factory=lambda: {"flat": 0.35, "gable": 0.25, "hip": 0.2, "multi": 0.2})
    pitch_deg: tuple[float, float] = (20.0, 45.0)
    parapet_probability: float = 0.5
    park_tree_density: float = 0.006  # trees per m² in parks
    yard_tree_density: float = 0.0015
    street_tree_density: float = 0.004  # along kerbs
    crown_radius: tuple[float, float] = (2.0, 5.5)
    tree_height: tuple[float, float] = (5.0, 18.0)
    pond_probability: float = 0.5  # chance that one park gets a pond


@dataclass(frozen=True)
class SyntheticCity:
    """Rasters of one generated city, all on ``grid`` (rows north→south)."""

    grid: GridSpec
    dsm: np.ndarray  # float32, exact surface height
    ground: np.ndarray  # float32, bare terrain
    building_mask: np.ndarray  # uint8 0/1
    forest_mask: np.ndarray  # uint8 0/1, tree crowns on top
    water_mask: np.ndarray  # uint8 0/1
    albedo: np.ndarray  # float32 in [0, 1], for rendering
    seed: int
    config: CityConfig


def _uniform(rng: np.random.Generator, bounds: tuple[float, float], size=None) -> np.ndarray:
    return rng.uniform(bounds[0], bounds[1], size)


def _street_layout(rng: np.random.Generator, half_extent: float, cfg: CityConfig) -> tuple[np.ndarray, np.ndarray]:
    """Start and end of the blocks along one axis, streets in between, covering ±half_extent."""
    starts, ends = [], []
    pos = -half_extent - _uniform(rng, cfg.block_size)
    while pos < half_extent:
        pos += _uniform(rng, cfg.street_width)
        length = _uniform(rng, cfg.block_size)
        starts.append(pos)
        ends.append(pos + length)
        pos += length
    return np.asarray(starts), np.asarray(ends)


def _terrain(rng: np.random.Generator, lx: np.ndarray, ly: np.ndarray, cfg: CityConfig) -> np.ndarray:
    slope = rng.uniform(0, cfg.terrain_slope_max)
    angle = rng.uniform(0, 2 * math.pi)
    plane = slope * (math.cos(angle) * lx + math.sin(angle) * ly)
    noise = ndimage.gaussian_filter(rng.standard_normal(lx.shape), sigma=40.0 / cfg.resolution, mode="wrap")
    noise /= max(float(noise.std()), 1e-9)
    return (cfg.base_height + plane - plane.mean() + cfg.terrain_relief * noise).astype(np.float64)


def _lot_table(rng: np.random.Generator, n_lots: int, cfg: CityConfig) -> dict[str, np.ndarray]:
    """Random parameters of every lot (used or not), drawn in one go."""
    weights = np.array([cfg.roof_weights.get(t, 0.0) for t in ROOF_TYPES], dtype=float)
    if weights.sum() <= 0:
        raise ValueError("roof_weights must give a positive weight to at least one roof type")
    lo, hi = cfg.height_range
    height = np.clip(cfg.height_median * np.exp(cfg.height_spread * rng.standard_normal(n_lots)), lo, hi)
    return {
        "building": rng.random(n_lots) < cfg.building_probability,
        "kind": rng.choice(len(ROOF_TYPES), size=n_lots, p=weights / weights.sum()),
        "setback": _uniform(rng, cfg.setback, n_lots),
        "height": height,
        "pitch": np.tan(np.radians(_uniform(rng, cfg.pitch_deg, n_lots))),
        "parapet": rng.random(n_lots) < cfg.parapet_probability,
        "podium": rng.uniform(0.25, 0.6, n_lots),  # podium height / tower height (multi-level)
        "tower_frac_u": rng.uniform(0.3, 0.7, n_lots),
        "tower_frac_v": rng.uniform(0.3, 0.7, n_lots),
        "tower_pos_u": rng.uniform(-1, 1, n_lots),
        "tower_pos_v": rng.uniform(-1, 1, n_lots),
        "roof_albedo": rng.uniform(0.12, 0.6, n_lots),
    }


def generate_city(seed: int, config: CityConfig | None = None) -> SyntheticCity:
    """Generate one city; identical (seed, config) give identical rasters."""
    cfg = config or CityConfig()
    rng = np.random.default_rng(seed)
    n = int(round(cfg.size_m / cfg.resolution))
    x0, y0 = cfg.origin
    grid = GridSpec.from_bounds(x0, y0, x0 + n * cfg.resolution, y0 + n * cfg.resolution, cfg.resolution,
                                CRS.from_user_input(cfg.crs), snap=False)
    xs, ys = grid.xy_centers()
    lx, ly = np.meshgrid(xs - x0, ys - y0)  # local metres, rows north→south
    ground = _terrain(rng, lx, ly, cfg)

    # street grid in rotated coordinates (u, v) centred on the city
    theta = math.radians(cfg.rotation_deg if cfg.rotation_deg is not None else rng.uniform(0, 90))
    cx = cy = cfg.size_m / 2
    u = math.cos(theta) * (lx - cx) + math.sin(theta) * (ly - cy)
    v = -math.sin(theta) * (lx - cx) + math.cos(theta) * (ly - cy)
    half = cfg.size_m * 0.75
    su, eu = _street_layout(rng, half, cfg)
    sv, ev = _street_layout(rng, half, cfg)
    iu = np.clip(np.searchsorted(su, u, side="right") - 1, 0, len(su) - 1)
    iv = np.clip(np.searchsorted(sv, v, side="right") - 1, 0, len(sv) - 1)
    in_block = (u >= su[iu]) & (u < eu[iu]) & (v >= sv[iv]) & (v < ev[iv])

    # lots: each block is cut into nu × nv equal lots
    m = cfg.max_lots_per_side
    n_lu = rng.integers(1, m + 1, size=(len(su), len(sv)))
    n_lv = rng.integers(1, m + 1, size=(len(su), len(sv)))
    lot_w_u = (eu - su)[iu] / n_lu[iu, iv]
    lot_w_v = (ev - sv)[iv] / n_lv[iu, iv]
    ku = np.clip(np.floor((u - su[iu]) / lot_w_u), 0, n_lu[iu, iv] - 1)
    kv = np.clip(np.floor((v - sv[iv]) / lot_w_v), 0, n_lv[iu, iv] - 1)
    lot_id = (((iu * len(sv) + iv) * m + ku) * m + kv).astype(np.int64)
    lots = _lot_table(rng, len(su) * len(sv) * m * m, cfg)
    du = u - (su[iu] + (ku + 0.5) * lot_w_u)  # offset from the lot centre
    dv = v - (sv[iv] + (kv + 0.5) * lot_w_v)

    # building footprints and roof surfaces (height above the building's base)
    set_b = lots["setback"][lot_id]
    au = np.maximum(lot_w_u / 2 - set_b, 1.5)
    av = np.maximum(lot_w_v / 2 - set_b, 1.5)
    footprint = in_block & lots["building"][lot_id] & (np.abs(du) < au) & (np.abs(dv) < av)
    height = lots["height"][lot_id]
    kind = lots["kind"][lot_id]
    edge_dist_u, edge_dist_v = au - np.abs(du), av - np.abs(dv)
    across = np.where(au >= av, edge_dist_v, edge_dist_u)  # distance to the eave, ridge on the long axis
    eave = np.minimum(height, 25.0)  # pitched roofs sit on low and mid-rise buildings
    rise_cap = np.minimum(0.6 * eave, 12.0)
    pitch = lots["pitch"][lot_id]
    flat = height + np.where(lots["parapet"][lot_id] & (np.minimum(edge_dist_u, edge_dist_v) < 0.5), 0.8, 0.0)
    gable = eave + np.minimum(pitch * across, rise_cap)
    hip = eave + np.minimum(pitch * np.minimum(edge_dist_u, edge_dist_v), rise_cap)
    tu, tv = au * lots["tower_frac_u"][lot_id], av * lots["tower_frac_v"][lot_id]
    tower = (np.abs(du - (au - tu) * lots["tower_pos_u"][lot_id]) < tu) & \
            (np.abs(dv - (av - tv) * lots["tower_pos_v"][lot_id]) < tv)
    multi = np.where(tower, height, np.maximum(3.0, lots["podium"][lot_id] * height))
    roof = np.choose(kind, [flat, gable, hip, multi])
    roof = np.minimum(roof, cfg.height_range[1])

    # a building's floor is level with the highest terrain under its footprint (on a slope the
    # downhill facade is taller), so no roof is ever buried in the terrain
    base = np.full(lots["height"].shape, -np.inf)
    np.maximum.at(base, lot_id[footprint], ground[footprint])
    buildings = np.where(footprint, base[lot_id] + roof, -np.inf)

    park = in_block & ~lots["building"][lot_id]
    yard = in_block & lots["building"][lot_id] & ~footprint
    kerb = ~in_block & (ndimage.distance_transform_edt(~in_block) * cfg.resolution < 2.5)

    # pond: an ellipse inside one park lot
    water = np.zeros(ground.shape, dtype=bool)
    park_lots = np.unique(lot_id[park])
    if park_lots.size and rng.random() < cfg.pond_probability:
        pond_lot = rng.choice(park_lots)
        sel = park & (lot_id == pond_lot)
        ru, rv = lot_w_u * rng.uniform(0.2, 0.4), lot_w_v * rng.uniform(0.2, 0.4)
        water = sel & ((du / ru) ** 2 + (dv / rv) ** 2 < 1.0)
        if water.any():  # a level water surface a little below the lowest shore
            ground = np.where(water, ground[water].min() - 0.3, ground)

    # trees: candidate centres accepted by land use, crowns as ellipsoid caps
    area = cfg.size_m ** 2
    n_cand = rng.poisson(area * max(cfg.park_tree_density, cfg.yard_tree_density, cfg.street_tree_density))
    cand_rc = rng.integers(0, n, size=(n_cand, 2))
    accept_p = np.zeros(ground.shape)
    dmax = max(cfg.park_tree_density, cfg.yard_tree_density, cfg.street_tree_density, 1e-12)
    accept_p[park] = cfg.park_tree_density / dmax
    accept_p[yard] = cfg.yard_tree_density / dmax
    accept_p[kerb] = cfg.street_tree_density / dmax
    accept_p[water | footprint] = 0.0
    keep = rng.random(n_cand) < accept_p[cand_rc[:, 0], cand_rc[:, 1]]
    trees_rc = cand_rc[keep]
    crowns = np.full(ground.shape, -np.inf)
    if len(trees_rc):
        radius = _uniform(rng, cfg.crown_radius, len(trees_rc))
        t_height = _uniform(rng, cfg.tree_height, len(trees_rc))
        crown_depth = np.minimum(radius * rng.uniform(0.8, 1.4, len(trees_rc)), 0.8 * t_height)
        tree_base = ground[trees_rc[:, 0], trees_rc[:, 1]]
        centres = np.column_stack([xs[trees_rc[:, 1]], ys[trees_rc[:, 0]]])
        centres += rng.uniform(-0.5, 0.5, centres.shape) * cfg.resolution
        pix = np.column_stack([np.broadcast_to(xs, ground.shape).ravel(),
                               np.broadcast_to(ys[:, None], ground.shape).ravel()])
        k = min(6, len(trees_rc))
        dist, idx = cKDTree(centres).query(pix, k=k, distance_upper_bound=cfg.crown_radius[1])
        dist, idx = dist.reshape(len(pix), k), idx.reshape(len(pix), k)
        ok = idx < len(trees_rc)
        j = np.where(ok, idx, 0)
        rel = np.where(ok, dist / radius[j], 2.0)
        cap = tree_base[j] + t_height[j] - crown_depth[j] * (1 - np.sqrt(np.clip(1 - rel ** 2, 0, 1)))
        cap = np.where(rel < 1.0, cap, -np.inf)
        crowns = cap.max(axis=1).reshape(ground.shape)
        leaves = rng.normal(0, 0.15, ground.shape)
        crowns = np.where(np.isfinite(crowns), crowns + leaves, -np.inf)

    dsm = np.maximum(np.maximum(ground, buildings), crowns)
    building_mask = footprint & (buildings >= crowns)
    forest_mask = np.isfinite(crowns) & (crowns > np.maximum(ground, buildings))

    albedo = np.where(in_block, 0.22, 0.11)  # grass/yards vs asphalt
    albedo = np.where(yard, 0.28, albedo)
    albedo = np.where(footprint, lots["roof_albedo"][lot_id], albedo)
    albedo = np.where(forest_mask, 0.1, albedo)
    albedo = np.where(water, 0.05, albedo)
    albedo = np.clip(albedo * (1 + 0.08 * rng.standard_normal(albedo.shape)), 0.01, 1.0)

    return SyntheticCity(
        grid=grid, dsm=dsm.astype(np.float32), ground=ground.astype(np.float32),
        building_mask=building_mask.astype(np.uint8), forest_mask=forest_mask.astype(np.uint8),
        water_mask=(water & ~forest_mask).astype(np.uint8), albedo=albedo.astype(np.float32),
        seed=seed, config=cfg,
    )


def sample_surface_points(city: SyntheticCity, density: float = 10.0, seed: int = 0) -> PointCloud:
    """A dense, LiDAR-like cloud of the city's visible surface (``density`` points per m²).

    Positions are uniform over the extent; heights are the DSM of the cell each point falls in,
    so the cloud is exact (no noise): :mod:`.simulate` degrades it into photogrammetric input.
    Classes follow ASPRS (2 ground, 5 vegetation, 6 building, 9 water).
    """
    rng = np.random.default_rng(seed)
    xmin, ymin, xmax, ymax = city.grid.bounds
    n = rng.poisson(density * (xmax - xmin) * (ymax - ymin))
    x = rng.uniform(xmin, xmax, n)
    y = rng.uniform(ymin, ymax, n)
    rows, cols = city.grid.rowcol(x, y)
    rows = np.clip(rows, 0, city.grid.height - 1)
    cols = np.clip(cols, 0, city.grid.width - 1)
    cls = np.full(n, CLASS_GROUND, dtype=np.uint8)
    cls[city.forest_mask[rows, cols] > 0] = CLASS_VEGETATION
    cls[city.building_mask[rows, cols] > 0] = CLASS_BUILDING
    cls[city.water_mask[rows, cols] > 0] = CLASS_WATER
    xyz = np.column_stack([x, y, city.dsm[rows, cols].astype(np.float64)])
    return PointCloud(xyz=xyz, crs=city.grid.crs, classification=cls,
                      source=f"synthetic city seed {city.seed}")

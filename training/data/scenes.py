"""Sources of training data, each turned into one :class:`Scene` on a common raster grid.

A scene is what patches are cut from: the reference DSM and masks, the (simulated) input cloud and
0–2 grey ortho-images, all in one CRS. Three kinds of source (the ``type`` of a source in a prepare
config):

* ``synthetic`` — a procedural city (:mod:`.synthetic_city`): exact DSM and masks, rendered
  orthos, input simulated from dense samples of the surface;
* ``lidar`` — a LiDAR file: reference DSM = per-cell maximum of the non-noise returns (small gaps
  closed), masks from ASPRS classes when present (6 building, 3–5 vegetation, 9 water), input
  simulated from the same LiDAR, orthos from the point colours (``points``) or rendered from the
  reference DSM (``render``, a rendering with a fixed albedo — documented as such) or read from
  files;
* ``rasters`` — the user's own reference DSM (+ masks, orthos) and input cloud; the cloud is used
  as is, or simulated from when a ``simulation`` mapping is given.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.crs import CRS

from implicity.core.errors import InputError
from implicity.core.gridding import fill_nearest, grid_for_points
from implicity.core.ortho import rasterize_colors
from implicity.core.pointcloud import PointCloud, read_point_cloud
from implicity.core.raster import GridSpec, read_band, read_raster_on_grid
from implicity.core.reconstruct.imagery import to_grey  # the engine's rule: train and infer alike
from implicity.core.reference import class_mask, reference_surface, without_noise
from implicity.core.vocabulary import BUILDING_CLASS, VEGETATION_CLASSES, WATER_CLASS
from implicity.core.yamlconfig import dataclass_from_mapping

from .render import default_suns, render_ortho
from .simulate import StereoSimulationConfig, simulate_stereo_cloud, smooth_field
from .stereo_view import parallax_view
from .synthetic_city import CityConfig, generate_city, sample_surface_points


@dataclass
class Scene:
    """Everything needed to cut patches, on ``grid`` (rows north→south)."""

    name: str
    grid: GridSpec
    dsm: np.ndarray  # float32, NaN = no reference
    valid: np.ndarray  # uint8
    building: np.ndarray  # uint8
    forest: np.ndarray  # uint8
    water: np.ndarray  # uint8
    points: np.ndarray  # (N, 3) float64 input cloud
    images: list[np.ndarray]  # grey (H, W) float32, NaN = no data

    @property
    def crs(self) -> CRS | None:
        return self.grid.crs


def synthetic_scene(name: str, seed: int, n_images: int, city: CityConfig | None = None,
                    simulation: StereoSimulationConfig | None = None, dense_density: float = 10.0) -> Scene:
    """A procedural city with rendered orthos and a simulated stereo cloud."""
    c = generate_city(seed, city)
    suns = default_suns(n_images)
    images = [render_ortho(c.dsm, c.albedo, c.grid.resolution, sun, seed=seed * 10 + i) for i, sun in enumerate(suns)]
    dense = sample_surface_points(c, dense_density, seed=seed)
    sim = simulate_stereo_cloud(dense, simulation, seed=seed)
    return Scene(name=name, grid=c.grid, dsm=c.dsm, valid=np.ones(c.dsm.shape, np.uint8),
                 building=c.building_mask, forest=c.forest_mask, water=c.water_mask,
                 points=sim.cloud.xyz, images=images)


def lidar_reference(cloud: PointCloud, resolution: float, fill_max_distance: float = 1.0,
                    extent: Sequence[float] | None = None) -> tuple[GridSpec, np.ndarray, dict[str, np.ndarray]]:
    """Reference DSM (core's :func:`~implicity.core.reference.reference_surface`: max of the non-noise
    returns, gaps ≤ ``fill_max_distance`` closed) and masks from the ASPRS classes."""
    cloud = without_noise(cloud)
    grid = grid_for_points(cloud.xyz, cloud.crs, resolution, tuple(extent) if extent else None, source=cloud.source)
    dsm = reference_surface(cloud, grid, fill_max_distance)
    zeros = np.zeros(grid.shape, np.uint8)
    masks = {"valid": np.isfinite(dsm).astype(np.uint8), "building": zeros, "forest": zeros, "water": zeros}
    if cloud.classification is not None:
        xyz, cls = cloud.xyz, cloud.classification
        masks["building"] = class_mask(xyz, cls, grid, BUILDING_CLASS)
        masks["water"] = class_mask(xyz, cls, grid, WATER_CLASS) & (1 - masks["building"])
        masks["forest"] = class_mask(xyz, cls, grid, VEGETATION_CLASSES) & (1 - masks["building"])
    return grid, dsm, masks


def _rendered_ortho(dsm: np.ndarray, building: np.ndarray, grid: GridSpec, index: int, seed: int) -> np.ndarray:
    """A rendering of the reference DSM with a smooth random albedo (for clouds without colours)."""
    rng = np.random.default_rng(seed)
    albedo = 0.25 + 0.06 * smooth_field(rng, grid.shape, 10.0 / grid.resolution)
    albedo = np.where(building > 0, 0.4 + 0.1 * smooth_field(rng, grid.shape, 30.0 / grid.resolution), albedo)
    filled = fill_nearest(dsm)
    sun = default_suns(2)[index % 2]
    image = render_ortho(filled, np.clip(albedo, 0.02, 1.0).astype(np.float32), grid.resolution, sun, seed=seed)
    return np.where(np.isfinite(dsm), image, np.nan).astype(np.float32)


def _images_for(specs: Sequence[Any], n_images: int, cloud: PointCloud, grid: GridSpec, dsm: np.ndarray,
                building: np.ndarray, seed: int, where: str) -> list[np.ndarray]:
    if len(specs) != n_images:
        raise InputError(f"{where}: 'images' lists {len(specs)} image(s) but n_images is {n_images}.")
    out = []
    for i, spec in enumerate(specs):
        if spec == "parallax":  # a second view: image 1 leaning by the reference heights
            if not out:
                raise InputError(f"{where}: 'parallax' warps the first image, so it cannot be image 1.")
            out.append(parallax_view(out[0], dsm, grid.resolution))
        elif spec == "points":
            if cloud.rgb is None:
                raise InputError(f"{where}: image {i + 1} is 'points' but {cloud.source} has no RGB colours. "
                                 "Use 'render' or an ortho file instead.")
            out.append(to_grey(rasterize_colors(cloud, grid)))
        elif spec == "render":
            out.append(_rendered_ortho(dsm, building, grid, i, seed + i))
        else:
            out.append(to_grey(read_raster_on_grid(str(spec), grid, "bilinear", what=f"{where} image {i + 1}")))
    return out


def lidar_scene(name: str, points: str | os.PathLike[str], n_images: int, crs: str | None = None,
                images: Sequence[Any] | None = None, simulation: StereoSimulationConfig | None = None,
                resolution: float = 0.5, extent: Sequence[float] | None = None, seed: int = 0,
                fill_max_distance: float = 1.0) -> Scene:
    """Reference DSM and masks from LiDAR, simulated stereo input from the same LiDAR."""
    cloud = read_point_cloud(points, crs=crs)
    cloud.require_crs(hint=f"'crs' of source '{name}'")
    if extent is not None:
        xmin, ymin, xmax, ymax = extent
        cloud = cloud.subset((cloud.xyz[:, 0] >= xmin) & (cloud.xyz[:, 0] < xmax)
                             & (cloud.xyz[:, 1] >= ymin) & (cloud.xyz[:, 1] < ymax))
        if len(cloud) == 0:
            raise InputError(f"source '{name}': no point of {points} inside extent {list(extent)}.")
    grid, dsm, masks = lidar_reference(cloud, resolution, fill_max_distance, extent)
    if images is None:
        images = (["points"] if cloud.rgb is not None else ["render"]) + ["render"]
        images = images[:n_images]
    imgs = _images_for(list(images), n_images, cloud, grid, dsm, masks["building"], seed, f"source '{name}'")
    sim = simulate_stereo_cloud(cloud, simulation, seed=seed)
    return Scene(name=name, grid=grid, dsm=dsm.astype(np.float32), points=sim.cloud.xyz, images=imgs, **masks)


def raster_scene(name: str, reference_dsm: str | os.PathLike[str], points: str | os.PathLike[str],
                 n_images: int, crs: str | None = None, images: Sequence[str] = (),
                 masks: Mapping[str, str] | None = None, simulation: StereoSimulationConfig | None = None,
                 seed: int = 0) -> Scene:
    """The user's reference DSM (defines the grid), masks, orthos and input cloud."""
    dsm, grid = read_band(reference_dsm, what=f"source '{name}' reference_dsm")
    if grid.crs is None:
        raise InputError(f"{reference_dsm}: the reference DSM has no CRS. Assign one (e.g. gdal_edit.py -a_srs).")
    cloud = read_point_cloud(points, crs=crs or None)
    if cloud.crs is None:
        cloud = dataclasses.replace(cloud, crs=grid.crs)
    elif cloud.crs != grid.crs:
        raise InputError(f"source '{name}': {points} is in another CRS than {reference_dsm}. Reproject one of them.")
    if simulation is not None:
        cloud = simulate_stereo_cloud(cloud, simulation, seed=seed).cloud
    layers: dict[str, np.ndarray] = {}
    unknown = sorted(set(masks or {}) - {"valid", "building", "forest", "water"})
    if unknown:
        raise InputError(f"source '{name}': unknown mask(s) {unknown}; use valid, building, forest, water.")
    for key in ("valid", "building", "forest", "water"):
        path = (masks or {}).get(key)
        if path:
            band = read_raster_on_grid(path, grid, "nearest", what=f"source '{name}' {key} mask")[0]
            layers[key] = (np.nan_to_num(band) > 0.5).astype(np.uint8)
        else:
            layers[key] = np.full(grid.shape, 1 if key == "valid" else 0, np.uint8)
    if len(images) != n_images:
        raise InputError(f"source '{name}': {len(images)} image(s) given but n_images is {n_images}.")
    imgs = [to_grey(read_raster_on_grid(p, grid, "bilinear", what=f"source '{name}' image")) for p in images]
    return Scene(name=name, grid=grid, dsm=dsm, points=cloud.xyz, images=imgs, **layers)


def resolve_path(value: Any, base: Path) -> str:
    """A config path: absolute as is, relative to ``base`` (the config file's folder) otherwise."""
    p = Path(str(value)).expanduser()
    return str(p if p.is_absolute() else (base / p))


def scenes_from_source(source: Mapping[str, Any], n_images: int, resolution: float, base: Path,
                       where: str) -> list[Scene]:
    """Build the scene(s) of one ``sources`` entry of a prepare config (may be several cities)."""
    kind = source.get("type")
    name = str(source.get("name", kind))
    sim = source.get("simulation")
    sim_cfg = dataclass_from_mapping(StereoSimulationConfig, sim, f"{where}.simulation") if sim is not None else None
    if kind == "synthetic":
        city_opts = dict(source.get("city") or {})
        city_opts.setdefault("resolution", resolution)
        city_cfg = dataclass_from_mapping(CityConfig, city_opts, f"{where}.city")
        if sim_cfg is None:
            sim_cfg = StereoSimulationConfig(gsd=resolution)
        seeds = source.get("seeds", [0])
        if not isinstance(seeds, list) or not seeds:
            raise InputError(f"{where}.seeds: give a non-empty list of integers, e.g. [0, 1, 2].")
        return [synthetic_scene(f"{name}_seed{int(s)}", int(s), n_images, city_cfg, sim_cfg,
                                float(source.get("dense_density", 10.0))) for s in seeds]
    if kind == "lidar":
        if "points" not in source:
            raise InputError(f"{where}: a lidar source needs 'points: FILE.laz'.")
        images = source.get("images")
        if images is not None:
            images = [s if s in ("points", "render", "parallax") else resolve_path(s, base) for s in images]
        return [lidar_scene(name, resolve_path(source["points"], base), n_images, crs=source.get("crs"),
                            images=images, simulation=sim_cfg, resolution=resolution,
                            extent=source.get("extent"), seed=int(source.get("seed", 0)),
                            fill_max_distance=float(source.get("fill_max_distance", 1.0)))]
    if kind == "rasters":
        for key in ("reference_dsm", "points"):
            if key not in source:
                raise InputError(f"{where}: a rasters source needs '{key}'.")
        masks = {k: resolve_path(v, base) for k, v in (source.get("masks") or {}).items()}
        return [raster_scene(name, resolve_path(source["reference_dsm"], base), resolve_path(source["points"], base),
                             n_images, crs=source.get("crs"),
                             images=[resolve_path(p, base) for p in source.get("images", [])],
                             masks=masks, simulation=sim_cfg, seed=int(source.get("seed", 0)))]
    raise InputError(f"{where}.type: '{kind}' is not a source type; use synthetic, lidar or rasters.")

"""Writing a synthetic city to ordinary GIS files (GeoTIFF rasters, a LAZ cloud, a JSON sidecar).

This is what ``implicity synth-city`` produces, so users can try the tools (baseline, evaluation,
reconstruction, training) on a city whose true DSM is known exactly.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from implicity.core.outputs import atomic_path, write_text_atomic
from implicity.core.pointcloud import PointCloud
from implicity.core.raster import write_geotiff

from .render import default_suns, render_ortho
from .simulate import StereoSimulationConfig, simulate_stereo_cloud
from .synthetic_city import CityConfig, generate_city, sample_surface_points


def write_laz(path: str | os.PathLike[str], cloud: PointCloud) -> Path:
    """Write a cloud as LAZ — or LAS for a ``.las`` path — atomically: LAS 1.4, point format 3 with
    RGB else 1, 1 mm precision, classes when present, the CRS in the header. The project's one LAS
    writer (``implicity synth-city``, the tests' fixtures)."""
    import laspy

    header = laspy.LasHeader(point_format=3 if cloud.rgb is not None else 1, version="1.4")
    header.offsets = np.floor(cloud.xyz.min(axis=0))
    header.scales = np.array([0.001, 0.001, 0.001])
    if cloud.crs is not None:
        from pyproj import CRS as ProjCRS

        header.add_crs(ProjCRS.from_wkt(cloud.crs.to_wkt()))
    las = laspy.LasData(header)
    las.x, las.y, las.z = cloud.xyz[:, 0], cloud.xyz[:, 1], cloud.xyz[:, 2]
    if cloud.classification is not None:
        las.classification = cloud.classification
    if cloud.rgb is not None:
        las.red, las.green, las.blue = cloud.rgb[:, 0], cloud.rgb[:, 1], cloud.rgb[:, 2]
    target = Path(path)
    compress = target.suffix.lower() != ".las"
    with atomic_path(target, suffix=".laz" if compress else ".las") as tmp:
        with open(tmp, "wb") as fh:
            las.write(fh, do_compress=compress)
    return target


def colour_from_image(cloud: PointCloud, image: np.ndarray, grid) -> PointCloud:
    """Give each point the grey value of its ortho pixel as 16-bit RGB (as LiDAR HD clouds carry)."""
    rows, cols = grid.rowcol(cloud.xyz[:, 0], cloud.xyz[:, 1])
    rows = np.clip(rows, 0, grid.height - 1)
    cols = np.clip(cols, 0, grid.width - 1)
    grey = np.nan_to_num(image[rows, cols]).clip(0, 255).astype(np.uint16) * 257
    return dataclasses.replace(cloud, rgb=np.repeat(grey[:, None], 3, axis=1))


def write_synthetic_city(out_dir: str | os.PathLike[str], seed: int, config: CityConfig | None = None,
                         n_images: int = 2, simulation: StereoSimulationConfig | None = None,
                         dense_density: float = 10.0) -> dict[str, Path]:
    """Generate city ``seed`` and write its rasters, simulated cloud and a JSON description."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    city = generate_city(seed, config)
    stem = f"city{seed}"
    paths: dict[str, Path] = {}
    paths["dsm"] = write_geotiff(out / f"{stem}_reference_dsm.tif", city.dsm, city.grid)
    for name, mask in (("buildings", city.building_mask), ("forest", city.forest_mask), ("water", city.water_mask)):
        paths[name] = write_geotiff(out / f"{stem}_{name}.tif", mask, city.grid, nodata=None, dtype="uint8")
    suns = default_suns(n_images)
    images = []
    for i, sun in enumerate(suns, start=1):
        image = render_ortho(city.dsm, city.albedo, city.grid.resolution, sun, seed=seed * 10 + i - 1)
        images.append(image)
        paths[f"ortho{i}"] = write_geotiff(out / f"{stem}_ortho{i}.tif", image.clip(1, 255), city.grid, nodata=0,
                                           dtype="uint8")
    sim_cfg = simulation or StereoSimulationConfig(gsd=city.grid.resolution)
    sim = simulate_stereo_cloud(sample_surface_points(city, dense_density, seed=seed), sim_cfg, seed=seed)
    cloud = colour_from_image(sim.cloud, images[0], city.grid) if images else sim.cloud
    paths["cloud"] = write_laz(out / f"{stem}_simulated_cloud.laz", cloud)
    info = {
        "what": "Synthetic city (procedural). The CRS is a fake georeference: nothing here is a real place.",
        "seed": seed, "crs": city.config.crs, "origin_south_west": list(city.config.origin),
        "size_m": city.config.size_m, "resolution": city.grid.resolution,
        "buildings_fraction": float(city.building_mask.mean()), "forest_fraction": float(city.forest_mask.mean()),
        "water_fraction": float(city.water_mask.mean()), "height_min": float(city.dsm.min()),
        "height_max": float(city.dsm.max()), "n_points": len(cloud),
        "suns": [dataclasses.asdict(s) for s in suns],
        "city_config": dataclasses.asdict(city.config), "simulation": dataclasses.asdict(sim_cfg),
        "files": {k: p.name for k, p in paths.items()},
    }
    paths["info"] = write_text_atomic(out / f"{stem}_info.json", json.dumps(info, indent=1))
    return paths

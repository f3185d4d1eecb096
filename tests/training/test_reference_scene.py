"""One reference-DSM surface: the training data's LiDAR scenes equal `implicity reference`'s file."""
from __future__ import annotations

import numpy as np
import rasterio

from implicity.core.pointcloud import read_point_cloud
from implicity.core.reference import make_reference_dsm
from implicity.training.data.scenes import lidar_reference

from ..helpers.geodata import CRS_L93, block_scene, write_las


def test_lidar_scene_reference_equals_the_reference_command(tmp_path) -> None:
    xyz, cls, _ = block_scene(seed=4, density=4.0)
    rng = np.random.default_rng(0)
    keep = rng.uniform(size=len(xyz)) > 0.3                # holes for the fill to close
    xyz, cls = xyz[keep], cls[keep].copy()
    cls[:5] = 7                                             # noise returns, far above: must be dropped
    xyz[:5, 2] = 500.0
    cloud_path = write_las(tmp_path / "lidar.laz", xyz, cls, crs=CRS_L93)
    grid = make_reference_dsm(cloud_path, tmp_path / "ref.tif", 0.5, building_mask_out=tmp_path / "mask.tif",
                              fill_max_distance=1.0)
    with rasterio.open(tmp_path / "ref.tif") as ds:
        from_file = ds.read(1, masked=True).filled(np.nan)
    with rasterio.open(tmp_path / "mask.tif") as ds:
        mask_file = ds.read(1)
    scene_grid, dsm, masks = lidar_reference(read_point_cloud(cloud_path), 0.5, fill_max_distance=1.0)
    assert (scene_grid.width, scene_grid.height, scene_grid.transform) == (grid.width, grid.height, grid.transform)
    np.testing.assert_allclose(dsm, from_file, equal_nan=True, atol=1e-3)
    assert np.nanmax(dsm) < 100.0                           # the noise points left no trace
    np.testing.assert_array_equal(masks["building"], mask_file)
    assert masks["building"].any()

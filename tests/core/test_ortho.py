"""Ortho-images rasterised from coloured point clouds."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio

from implicity.core.errors import InputError
from implicity.core.ortho import rasterize_colors, write_ortho_from_points
from implicity.core.pointcloud import PointCloud
from implicity.core.raster import GridSpec

from ..helpers.geodata import CRS_L93


def test_colour_of_highest_point_wins(tmp_path):
    g = GridSpec.from_bounds(0, 0, 2, 1, 1.0, CRS_L93)
    xyz = np.array([[0.5, 0.5, 1.0], [0.5, 0.5, 9.0], [1.5, 0.5, 3.0]])
    rgb = np.array([[65535, 0, 0], [0, 65535, 0], [0, 0, 25600]], dtype=np.uint16)
    cloud = PointCloud(xyz=xyz, crs=CRS_L93, rgb=rgb)
    colours = rasterize_colors(cloud, g)
    assert colours[:, 0, 0].tolist() == pytest.approx([0, 255.996, 0], abs=0.01)
    assert colours[2, 0, 1] == pytest.approx(100.0)
    write_ortho_from_points(cloud, g, tmp_path / "o.tif")
    with rasterio.open(tmp_path / "o.tif") as src:
        assert src.count == 3 and src.dtypes[0] == "uint8" and src.crs == CRS_L93
        assert src.read()[:, 0, 0].tolist() == [1, 255, 1]


def test_cloud_without_colours_is_refused():
    with pytest.raises(InputError, match="no RGB"):
        rasterize_colors(PointCloud(xyz=np.zeros((1, 3)), crs=CRS_L93), GridSpec.from_bounds(0, 0, 1, 1, 1, CRS_L93))

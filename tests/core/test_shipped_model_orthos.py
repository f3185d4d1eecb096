"""The shipped mono model reads 8-bit and 16-bit orthos alike (per-image normalisation)."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from implicity.core.pointcloud import PointCloud
from implicity.core.reconstruct import ReconstructionInputs, ReconstructionOptions, reconstruct_dsm
from implicity.core.shipped_models import default_model

from ..helpers.geodata import block_scene


def _ortho(path, scale: float, dtype: str) -> None:
    rng = np.random.default_rng(0)
    image = rng.uniform(40, 200, (1, 90, 90))
    image[:, 20:40, 20:40] = 230.0  # the bright roof of the block building
    with rasterio.open(path, "w", driver="GTiff", width=90, height=90, count=1, dtype=dtype,
                       crs=CRS.from_epsg(2154), transform=from_origin(995.0, 2045.0, 0.5, 0.5)) as dst:
        dst.write((image * scale).astype(dtype))


@pytest.mark.skipif(default_model(1) is None, reason="no shipped mono model in models/")
def test_8_and_16_bit_orthos_give_the_same_dsm(tmp_path, one_torch_thread):
    xyz, _, _ = block_scene(seed=1, density=4.0)
    cloud = PointCloud(xyz=xyz, crs=CRS.from_epsg(2154), source="block")
    dsms = []
    for name, scale, dtype in (("o8.tif", 1.0, "uint8"), ("o16.tif", 257.0, "uint16")):
        _ortho(tmp_path / name, scale, dtype)
        out = tmp_path / f"dsm_{name}"
        reconstruct_dsm(ReconstructionInputs(points=cloud, model=default_model(1), orthos=(tmp_path / name,),
                                             out_path=out, resolution=0.5), ReconstructionOptions(device="cpu"))
        with rasterio.open(out) as src:
            dsms.append(src.read(1, masked=True).filled(np.nan))
    assert np.isfinite(dsms[0]).mean() > 0.9
    np.testing.assert_allclose(dsms[0], dsms[1], atol=0.02, equal_nan=True)

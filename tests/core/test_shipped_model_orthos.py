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


def _ortho(path, scale: float, dtype: str, same_content: bool) -> None:
    """A noisy ortho of the block scene; with ``same_content`` the 16-bit file holds exactly the
    8-bit values × 257, else the finer values a real 16-bit sensor records (up to 1 DN of 8 bit
    apart from the 8-bit file)."""
    rng = np.random.default_rng(0)
    image = rng.uniform(40, 200, (1, 90, 90))
    image[:, 20:40, 20:40] = 230.0  # the bright roof of the block building
    if same_content:
        image = np.floor(image)
    with rasterio.open(path, "w", driver="GTiff", width=90, height=90, count=1, dtype=dtype,
                       crs=CRS.from_epsg(2154), transform=from_origin(995.0, 2045.0, 0.5, 0.5)) as dst:
        dst.write((image * scale).astype(dtype))


def _dsms(tmp_path, same_content: bool) -> list[np.ndarray]:
    xyz, _, _ = block_scene(seed=1, density=4.0)
    cloud = PointCloud(xyz=xyz, crs=CRS.from_epsg(2154), source="block")
    dsms = []
    for name, scale, dtype in (("o8.tif", 1.0, "uint8"), ("o16.tif", 257.0, "uint16")):
        _ortho(tmp_path / name, scale, dtype, same_content)
        out = tmp_path / f"dsm_{name}"
        reconstruct_dsm(ReconstructionInputs(points=cloud, model=default_model(1), orthos=(tmp_path / name,),
                                             out_path=out, resolution=0.5), ReconstructionOptions(device="cpu"))
        with rasterio.open(out) as src:
            dsms.append(src.read(1, masked=True).filled(np.nan))
    assert np.isfinite(dsms[0]).mean() > 0.9
    return dsms


def _assert_same_off_the_walls(a: np.ndarray, b: np.ndarray) -> None:
    """≤ 0.02 m apart off the walls; on a wall pixel (a > 2 m step within its 3 × 3 neighbours) the
    height where occupancy flips is ill-conditioned and moves with float rounding: the column can
    cross twice, at the roof and at the ground, and inputs 1e-7 apart pick either (measured: the
    context mono moved 14 of 6,400 pixels by up to 0.36 m; the bilateral mono moves 1 wall pixel of
    6,400 from roof to ground, 7.45 m, and nothing else by more than 0.001 m). Allowed: < 1 % of the
    pixels beyond 0.02 m, and a roof/ground flip on at most 0.1 % of them, all on walls. The despeckle
    filter reads each pixel's 3 × 3 neighbours, so a flip on a wall can move a speckle beside it: the
    wall band is one pixel wider (measured: one such pixel of 6,207, by 0.033 m)."""
    from scipy import ndimage

    filled = np.nan_to_num(a)
    wall = ndimage.binary_dilation((ndimage.maximum_filter(filled, 3) - ndimage.minimum_filter(filled, 3)) > 2.0)
    diff = np.abs(a - b)
    np.testing.assert_allclose(a[~wall], b[~wall], atol=0.02, equal_nan=True)
    assert np.sum(diff[wall] > 0.5) <= 0.001 * diff.size
    assert np.mean(diff > 0.02) < 0.01


@pytest.mark.skipif(default_model(1) is None, reason="no shipped mono model in models/")
def test_8_and_16_bit_orthos_of_the_same_image_give_the_same_dsm(tmp_path, one_torch_thread):
    _assert_same_off_the_walls(*_dsms(tmp_path, same_content=True))


@pytest.mark.skipif(default_model(1) is None, reason="no shipped mono model in models/")
def test_a_finer_16_bit_ortho_gives_the_same_dsm(tmp_path, one_torch_thread):
    """The 16-bit ortho's extra precision (≤ 1 DN of 8 bit) changes nothing off the walls."""
    _assert_same_off_the_walls(*_dsms(tmp_path, same_content=False))

"""Ortho-image windows line up with the points (checkerboards), mono/stereo counts, grey conversion."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio

from implicity.core.errors import InputError
from implicity.core.reconstruct import EvidenceOptions, ReconstructionInputs, ReconstructionOptions, reconstruct_dsm
from implicity.core.reconstruct.imagery import OrthoWindows, to_grey

from ..helpers.reconstruct_support import (
    X0,
    Y0,
    NearestPointModel,
    checker,
    distance_to_checker_edge,
    pixel_scene,
    read_dsm,
    write_checker_ortho,
)

RES = 0.5
STEP = ReconstructionOptions().fast_search.final_step
# The analytic model moves the surface by up to 10 m with the ortho and is exact at the border: let
# it leave the points' evidence envelope and keep its heights along the border (see evidence.py).
FOLLOW_IMAGES = ReconstructionOptions(device="cpu", evidence=EvidenceOptions(margin=20.0, keep_margin=20.0, blend=False),
                                       despeckle=0.0)


def _centres(shape):
    h, w = shape
    xs = X0 + (np.arange(w) + 0.5) * RES
    ys = Y0 + h * RES - (np.arange(h) + 0.5) * RES
    return np.meshgrid(xs, ys)


def test_mono_checkerboard_lines_up(tmp_path):
    cloud, truth = pixel_scene(70.0, 60.0, RES)
    ortho = write_checker_ortho(tmp_path / "mono.tif", square=7.0, pixel=0.5)
    model = NearestPointModel(n_images=1, image_gains=(3.0,), image_size=128)  # 0.5 m image pixels
    inputs = ReconstructionInputs(points=cloud, model=model, orthos=(ortho,), out_path=tmp_path / "d.tif",
                                  resolution=RES)
    dsm = read_dsm(reconstruct_dsm(inputs, FOLLOW_IMAGES).dsm_path)
    xx, yy = _centres(truth.shape)
    expected = truth + 3.0 * checker(xx, yy, 7.0)
    away = distance_to_checker_edge(xx, yy, 7.0) > 0.6  # bilinear resampling blurs ±1 image pixel
    err = np.abs(dsm - expected)[away]
    assert err.max() <= STEP, f"checkerboard misaligned: max error {err.max():.3f} m"
    # A one-pixel shift or a north/south flip would break a large share of the squares.
    assert (np.abs(dsm - expected) < 0.5).mean() > 0.95


def test_stereo_checkerboards_at_other_pixel_sizes_line_up(tmp_path):
    cloud, truth = pixel_scene(70.0, 60.0, RES)
    a = write_checker_ortho(tmp_path / "a.tif", square=7.0, pixel=0.25, bands=3)  # RGB, finer
    b = write_checker_ortho(tmp_path / "b.tif", square=11.0, pixel=1.0)  # coarser
    model = NearestPointModel(n_images=2, image_gains=(3.0, 7.0), image_size=128)
    inputs = ReconstructionInputs(points=cloud, model=model, orthos=(a, b), out_path=tmp_path / "d.tif",
                                  resolution=RES)
    dsm = read_dsm(reconstruct_dsm(inputs, FOLLOW_IMAGES).dsm_path)
    xx, yy = _centres(truth.shape)
    expected = truth + 3.0 * checker(xx, yy, 7.0) + 7.0 * checker(xx, yy, 11.0)
    away = (distance_to_checker_edge(xx, yy, 7.0) > 0.6) & (distance_to_checker_edge(xx, yy, 11.0) > 1.6)
    err = np.abs(dsm - expected)[away]
    assert err.max() <= STEP, f"stereo checkerboards misaligned: max error {err.max():.3f} m"


def test_ortho_in_another_crs_is_reprojected(tmp_path):
    """A UTM (EPSG:32631) ortho is warped onto the Lambert-93 windows of the points."""
    from rasterio.warp import calculate_default_transform, reproject

    src_path = write_checker_ortho(tmp_path / "l93.tif", square=16.0, pixel=0.5)
    dst_path = tmp_path / "utm.tif"
    with rasterio.open(src_path) as src:
        transform, w, h = calculate_default_transform(src.crs, "EPSG:32631", src.width, src.height, *src.bounds)
        with rasterio.open(dst_path, "w", driver="GTiff", width=w, height=h, count=1, dtype="float32",
                           crs="EPSG:32631", transform=transform, nodata=-1) as dst:
            reproject(rasterio.band(src, 1), rasterio.band(dst, 1), dst_nodata=-1)
    with OrthoWindows([dst_path], rasterio.crs.CRS.from_epsg(2154), lambda x: x / 100.0, 64) as ow:
        img = ow.read(X0, Y0, 64.0)[0]
    xs = X0 + (np.arange(64) + 0.5)
    ys = Y0 + 64 - (np.arange(64) + 0.5)
    xx, yy = np.meshgrid(xs, ys)
    away = distance_to_checker_edge(xx, yy, 16.0) > 2.0
    assert np.abs(img - checker(xx, yy, 16.0))[away].max() < 0.05


@pytest.mark.parametrize("n_images,n_orthos", [(1, 0), (0, 1), (2, 1), (1, 2)])
def test_ortho_count_must_match_the_model(tmp_path, n_images, n_orthos):
    cloud, _ = pixel_scene(10.0, 10.0, 1.0)
    orthos = tuple(write_checker_ortho(tmp_path / f"o{i}.tif", 8.0, 1.0) for i in range(n_orthos))
    inputs = ReconstructionInputs(points=cloud, model=NearestPointModel(n_images=n_images), orthos=orthos,
                                  out_path=tmp_path / "d.tif", resolution=1.0)
    with pytest.raises(InputError, match=rf"{n_orthos} ortho-image\(s\) given.*needs exactly {n_images}"):
        reconstruct_dsm(inputs, ReconstructionOptions(device="cpu"))
    assert not (tmp_path / "d.tif").exists()


def test_grey_conversion():
    rgb = np.stack([np.full((2, 2), 100.0), np.full((2, 2), 50.0), np.full((2, 2), 10.0)]).astype(np.float32)
    assert np.allclose(to_grey(rgb), 0.299 * 100 + 0.587 * 50 + 0.114 * 10)
    rgba = np.concatenate([rgb, np.full((1, 2, 2), 255.0, np.float32)])
    assert np.allclose(to_grey(rgba), to_grey(rgb))
    assert np.allclose(to_grey(rgb[:1]), 100.0)


def test_ortho_without_georeferencing_is_refused(tmp_path):
    path = tmp_path / "plain.tif"
    with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8") as dst:
        dst.write(np.zeros((1, 4, 4), np.uint8))
    with pytest.raises(InputError, match="georeferencing|CRS"):
        with OrthoWindows([path], rasterio.crs.CRS.from_epsg(2154), lambda x: x, 8) as ow:
            ow.read(X0, Y0, 64.0)

"""core/normalization.py: the one patch frame and image normalisation of inference and training."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from implicity.core.normalization import (
    DEFAULT_Z_STD,
    PatchFrame,
    denormalize_z,
    height_shift,
    normalize_image,
    normalize_points,
)


def test_patch_frame_round_trip_with_projected_coordinates() -> None:
    """Swiss LV95-sized coordinates: the float64 shift keeps the normalised frame exact to float32
    rounding, and denormalize_z inverts normalize_z."""
    rng = np.random.default_rng(0)
    x0, y0 = 2_683_456.5, 1_247_988.25
    xyz = np.column_stack([rng.uniform(0, 64, 2000) + x0, rng.uniform(0, 64, 2000) + y0,
                           rng.uniform(400, 480, 2000)])
    frame = PatchFrame.of_points(xyz, x0, y0, 64.0)
    assert frame.z_shift == pytest.approx(np.median(xyz[:, 2]), abs=1e-9) and frame.z_std == DEFAULT_Z_STD
    n = frame.normalize_points(xyz)
    assert n.dtype == np.float32
    assert n[:, :2].min() >= 0.0 and n[:, :2].max() <= 1.0
    exact = (xyz - [x0, y0, frame.z_shift]) / [64.0, 64.0, frame.z_std]
    assert np.abs(n - exact).max() < 2e-7                 # only float32 rounding of the result
    naive = (xyz.astype(np.float32) - np.float32([x0, y0, frame.z_shift])) / np.float32([64, 64, frame.z_std])
    assert np.abs(naive - exact).max() > 100 * np.abs(n - exact).max()   # why the float64 shift matters
    assert np.array_equal(frame.normalize_xy(xyz[:, :2]), n[:, :2])
    assert np.array_equal(frame.normalize_z(xyz[:, 2]), n[:, 2])
    z = np.array([401.25, 455.5])
    back = frame.denormalize_z(frame.normalize_z(z))
    assert back.dtype == np.float64 and np.allclose(back, z, atol=1e-4)
    assert np.allclose(denormalize_z(exact[:, 2], frame.z_shift, frame.z_std), xyz[:, 2], atol=1e-9)
    local = frame.local(xyz)
    assert np.allclose(local, xyz - [x0, y0, frame.z_shift], atol=0)
    assert frame.to_dict() == {"x0": x0, "y0": y0, "z_shift": frame.z_shift, "z_std": DEFAULT_Z_STD,
                               "patch_size": 64.0}


def test_height_shift_is_the_median_and_undefined_without_points() -> None:
    assert height_shift(np.array([3.0, 1.0, 2.0, 10.0])) == 2.5
    with pytest.raises(ValueError, match="without points"):
        height_shift(np.zeros(0))


def test_a_local_frame_normalises_like_the_map_frame() -> None:
    """Training stores points relative to the patch corner; a frame at (0, 0) on those gives the
    same network input as the map frame on map coordinates."""
    rng = np.random.default_rng(1)
    x0, y0 = 700_000.0, 6_600_000.0
    xyz = np.column_stack([rng.uniform(0, 32, 500) + x0, rng.uniform(0, 32, 500) + y0, rng.uniform(50, 70, 500)])
    shift = height_shift(xyz[:, 2])
    in_map = normalize_points(xyz, x0, y0, 32.0, shift, DEFAULT_Z_STD)
    local = xyz - [x0, y0, 0.0]
    assert np.allclose(PatchFrame(0.0, 0.0, 32.0, shift).normalize_points(local), in_map, atol=1e-6)


def test_dataset_image_normalisation_fills_nodata_and_accepts_tensors() -> None:
    class Stats:
        image_normalization = "dataset"
        image_mean, image_std = 100.0, 50.0

    img = np.array([[[100.0, 150.0, np.nan]]], np.float32)
    out = normalize_image(img, Stats())
    assert out.dtype == np.float32 and out.tolist() == [[[0.0, 1.0, 0.0]]]
    t = normalize_image(torch.from_numpy(img), Stats())
    assert isinstance(t, torch.Tensor) and torch.equal(t, torch.from_numpy(out))

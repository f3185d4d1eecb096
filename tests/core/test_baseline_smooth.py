"""``implicity baseline --smooth K``: the median-filtered classical DSM users compare against."""
from __future__ import annotations

import numpy as np
import rasterio
from rasterio.crs import CRS

from implicity.cli import main
from implicity.core.gridding import median_smooth
from implicity.core.pointcloud import PointCloud, write_point_cloud_npz


def _cloud(tmp_path):
    xs, ys = np.meshgrid(np.arange(0.25, 20, 0.5), np.arange(0.25, 20, 0.5))
    z = np.full(xs.shape, 5.0)
    z[20, 20] = 30.0                     # one spike cell
    keep = ~((xs > 2) & (xs < 4) & (ys > 2) & (ys < 4)) # a small hole
    xyz = np.column_stack([xs[keep] + 1000, ys[keep] + 2000, z[keep]])
    path = tmp_path / "cloud.npz"
    write_point_cloud_npz(path, PointCloud(xyz=xyz, crs=CRS.from_epsg(2154), source="t"))
    return path


def test_smooth_removes_spikes_and_keeps_holes(tmp_path):
    cloud = _cloud(tmp_path)
    for k in (1, 3):
        assert main(["baseline", "--points", str(cloud), "--resolution", "0.5", "--fill", "none",
                     "--smooth", str(k), "--out", str(tmp_path / f"s{k}.tif"), "--quiet"]) == 0
    with rasterio.open(tmp_path / "s1.tif") as a, rasterio.open(tmp_path / "s3.tif") as b:
        raw, smooth = a.read(1, masked=True), b.read(1, masked=True)
    assert raw.max() == 30.0 and smooth.max() == 5.0
    np.testing.assert_array_equal(raw.mask, smooth.mask)
    assert raw.mask.sum() > 0


def test_smooth_must_be_odd(tmp_path, capsys):
    cloud = _cloud(tmp_path)
    out = tmp_path / "bad.tif"
    assert main(["baseline", "--points", str(cloud), "--resolution", "0.5", "--smooth", "2",
                 "--out", str(out), "--quiet"]) == 2
    assert "odd" in capsys.readouterr().err
    assert not out.exists()


def test_median_smooth_matches_a_plain_median_filter_away_from_holes():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    dsm = rng.normal(size=(30, 30)).astype(np.float32)
    np.testing.assert_allclose(median_smooth(dsm, 5), ndimage.median_filter(dsm, 5, mode="nearest"))

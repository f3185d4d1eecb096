"""Point-cloud reading: formats, attributes, CRS handling, bad input."""
from __future__ import annotations

import numpy as np
import pytest
from rasterio.crs import CRS

from implicity.core.errors import InputError
from implicity.core.pointcloud import PointCloud, read_point_cloud, reproject_point_cloud, write_point_cloud_npz

from ..helpers.geodata import CRS_L93, SHARED_DATA, block_scene, write_las


@pytest.fixture
def scene():
    return block_scene(density=2.0)


@pytest.mark.parametrize("suffix", [".las", ".laz"])
def test_las_laz_roundtrip_with_attributes(tmp_path, scene, suffix):
    xyz, cls, _ = scene
    rgb = np.tile(np.array([[100, 200, 300]], dtype=np.uint16), (len(xyz), 1))
    path = write_las(tmp_path / f"c{suffix}", xyz, cls, rgb, crs=CRS_L93)
    cloud = read_point_cloud(path)
    assert cloud.xyz.dtype == np.float64 and cloud.xyz.shape == xyz.shape
    np.testing.assert_allclose(cloud.xyz, xyz, atol=0.001)
    np.testing.assert_array_equal(cloud.classification, cls)
    np.testing.assert_array_equal(cloud.rgb[0], [100, 200, 300])
    assert cloud.crs.to_epsg() == 2154


def test_user_crs_supplies_missing_header_crs(tmp_path, scene):
    path = write_las(tmp_path / "nocrs.laz", scene[0])
    assert read_point_cloud(path).crs is None
    with pytest.raises(InputError, match="Give it with points_crs") as info:
        read_point_cloud(path).require_crs()
    assert info.value.parameter == "points_crs"  # the CLI says --points-crs, the plugin its label
    assert read_point_cloud(path, crs="EPSG:2154").crs.to_epsg() == 2154


def test_bad_crs_string_is_explained(tmp_path, scene):
    path = write_las(tmp_path / "c.las", scene[0])
    with pytest.raises(InputError, match="EPSG:XXXX"):
        read_point_cloud(path, crs="EPSG:notacode")


def test_ply_ascii_and_binary(tmp_path):
    pts = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.5]])
    ascii_path = tmp_path / "a.ply"
    ascii_path.write_text(
        "ply\nformat ascii 1.0\nelement vertex 2\nproperty double x\nproperty double y\n"
        "property double z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
        "1 2 3 10 20 30\n4 5 6.5 40 50 60\n"
    )
    cloud = read_point_cloud(ascii_path)
    np.testing.assert_allclose(cloud.xyz, pts)
    np.testing.assert_array_equal(cloud.rgb[1], [40, 50, 60])
    bin_path = tmp_path / "b.ply"
    header = (b"ply\nformat binary_little_endian 1.0\nelement vertex 2\nproperty float x\n"
              b"property float y\nproperty float z\nend_header\n")
    bin_path.write_bytes(header + pts.astype("<f4").tobytes())
    np.testing.assert_allclose(read_point_cloud(bin_path).xyz, pts)


def test_truncated_binary_ply_is_refused(tmp_path):
    path = tmp_path / "t.ply"
    header = (b"ply\nformat binary_little_endian 1.0\nelement vertex 10\nproperty float x\n"
              b"property float y\nproperty float z\nend_header\n")
    path.write_bytes(header + np.zeros(6, "<f4").tobytes())
    with pytest.raises(InputError, match="truncated"):
        read_point_cloud(path)


def test_npz_roundtrip_keeps_crs(tmp_path, scene):
    cloud = PointCloud(xyz=scene[0], crs=CRS_L93, classification=scene[1])
    write_point_cloud_npz(tmp_path / "c.npz", cloud)
    back = read_point_cloud(tmp_path / "c.npz")
    np.testing.assert_array_equal(back.xyz, scene[0])
    assert back.crs == CRS_L93
    np.testing.assert_array_equal(back.classification, scene[1])


@pytest.mark.parametrize("content,match", [
    (None, "not found"),
    (b"garbage that is not a LAS file" * 10, "cannot read"),
])
def test_missing_and_corrupt_files(tmp_path, content, match):
    path = tmp_path / "bad.laz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=match):
        read_point_cloud(path)


def test_empty_cloud_and_unknown_format(tmp_path):
    np.savez(tmp_path / "empty.npz", xyz=np.zeros((0, 3)))
    with pytest.raises(InputError, match="no .*points"):
        read_point_cloud(tmp_path / "empty.npz")
    (tmp_path / "c.xyz").write_text("1 2 3\n")
    with pytest.raises(InputError, match="unsupported point cloud format"):
        read_point_cloud(tmp_path / "c.xyz")


def test_reprojection_moves_points_and_needs_a_crs():
    cloud = PointCloud(xyz=np.array([[809500.0, 6305000.0, 50.0]]), crs=CRS_L93)
    wgs = reproject_point_cloud(cloud, CRS.from_epsg(4326))
    assert 4.3 < wgs.xyz[0, 0] < 4.4 and 43.8 < wgs.xyz[0, 1] < 43.9 and wgs.xyz[0, 2] == 50.0
    with pytest.raises(InputError, match="no coordinate reference system"):
        reproject_point_cloud(PointCloud(xyz=cloud.xyz, crs=None), CRS_L93)


@pytest.mark.skipif(not (SHARED_DATA / "nimes_lidarhd").exists(), reason="shared data not present")
def test_real_lidar_files():
    nimes = read_point_cloud(SHARED_DATA / "nimes_lidarhd" / "subsampled_nimes.laz", crs="EPSG:2154")
    assert len(nimes) == 404_500 and nimes.rgb is not None and nimes.crs.to_epsg() == 2154
    xmin, ymin, xmax, ymax = nimes.bounds
    assert 809276 < xmin < 809278 and 6305062 < ymax < 6305063
    delft = read_point_cloud(SHARED_DATA / "delft_ahn3" / "ahn3_cropped_2.laz")
    assert len(delft) == 208_432 and 6 in set(np.unique(delft.classification))

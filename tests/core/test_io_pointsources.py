"""EPT, COPC and chunked LAS/LAZ reading (core.pointsources) on real LiDAR (Nîmes, Delft)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

laspy = pytest.importorskip("laspy")
pytest.importorskip("rasterio")

from implicity.core import pointsources
from implicity.core.errors import CancelledError, InputError
from implicity.core.pointcloud import read_point_cloud
from implicity.core.pointsources import probe_point_cloud, read_points, source_format, write_ept

from ..helpers.copc_writer import write_copc

NIMES = Path(__file__).resolve().parents[2] / "data" / "nimes_lidarhd" / "subsampled_nimes.laz"
#: 100 × 100 m in the middle of the Nîmes cloud (Lambert-93).
BOX = (809400.0, 6304900.0, 809500.0, 6305000.0)


def _sorted(cloud) -> np.ndarray:
    xyz = np.round(cloud.xyz, 3)
    return xyz[np.lexsort(xyz.T[::-1])]


@pytest.fixture(scope="module")
def nimes_full():
    return read_point_cloud(NIMES, crs="EPSG:2154")


@pytest.fixture(scope="module")
def nimes_ept(tmp_path_factory) -> Path:
    """The Nîmes cloud as a multi-node EPT dataset (nodes of at most 50,000 points)."""
    return write_ept(NIMES, tmp_path_factory.mktemp("ept") / "nimes", crs="EPSG:2154", node_capacity=50_000)


@pytest.fixture(scope="module")
def nimes_copc(tmp_path_factory) -> Path:
    from rasterio.crs import CRS

    return write_copc(NIMES, tmp_path_factory.mktemp("copc") / "nimes.copc.laz", CRS.from_epsg(2154).to_wkt())


def test_ept_dataset_reads_back_every_point_with_attributes(nimes_ept, nimes_full):
    hierarchy = json.loads((nimes_ept.parent / "ept-hierarchy" / "0-0-0-0.json").read_text())
    assert len(hierarchy) > 4 and sum(hierarchy.values()) == len(nimes_full)  # an octree, not one node
    cloud = read_points(nimes_ept)
    assert cloud.crs.to_epsg() == 2154 and cloud.source == str(nimes_ept)
    assert np.array_equal(_sorted(cloud), _sorted(nimes_full))
    assert np.array_equal(np.sort(cloud.rgb, axis=0), np.sort(nimes_full.rgb, axis=0))  # RGB came along
    assert np.array_equal(np.bincount(cloud.classification), np.bincount(nimes_full.classification))
    # the same through the generic reader (file or folder), as the CLI and core jobs use it
    assert len(read_point_cloud(nimes_ept)) == len(read_point_cloud(nimes_ept.parent)) == len(nimes_full)


@pytest.mark.parametrize("kind", ["laz", "ept", "copc"])
def test_bounds_keep_exactly_the_points_inside(kind, nimes_ept, nimes_copc, nimes_full):
    path = {"laz": NIMES, "ept": nimes_ept, "copc": nimes_copc}[kind]
    messages = []
    cloud = read_points(path, crs="EPSG:2154", bounds=BOX, progress=lambda f, m: messages.append((f, m)))
    x, y = nimes_full.xyz[:, 0], nimes_full.xyz[:, 1]
    inside = nimes_full.subset((x >= BOX[0]) & (x <= BOX[2]) & (y >= BOX[1]) & (y <= BOX[3]))
    assert 10_000 < len(cloud) < len(nimes_full) / 5
    assert np.array_equal(_sorted(cloud), _sorted(inside))
    assert cloud.crs.to_epsg() == 2154
    if kind == "ept":  # only the nodes that touch the box were read
        read = int(messages[-1][1].split(" of ")[1].split()[0].replace(",", ""))
        assert len(cloud) < read < len(nimes_full)


def test_copc_is_detected_and_read_whole(nimes_copc, nimes_full):
    assert source_format(nimes_copc) == "copc" and source_format(NIMES) == "laz"
    info = probe_point_cloud(nimes_copc)
    assert info.count == len(nimes_full) and info.crs.to_epsg() == 2154
    assert np.array_equal(_sorted(read_points(nimes_copc)), _sorted(nimes_full))


def test_large_file_is_read_in_chunks_with_progress_and_cancel(monkeypatch, nimes_full):
    monkeypatch.setattr(pointsources, "CHUNK_POINTS", 50_000)
    fractions = []
    cloud = read_points(NIMES, crs="EPSG:2154", progress=lambda f, m: fractions.append(f))
    assert len(cloud) == len(nimes_full) and len(fractions) == 9  # 404,500 points in 9 chunks
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    with pytest.raises(CancelledError, match="stopped by the user"):
        read_points(NIMES, progress=lambda f, m: fractions.append(f), is_cancelled=lambda: len(fractions) > 11)


def test_probe_reads_the_header_only(nimes_ept):
    info = probe_point_cloud(NIMES)
    assert info.format == "laz" and info.count == 404_500 and info.crs is None
    assert info.bounds == pytest.approx((809276.96, 6304822.46, 809698.48, 6305062.45), abs=0.01)
    ept = probe_point_cloud(nimes_ept.parent)  # the dataset folder works like its ept.json
    assert ept.format == "ept" and ept.count == 404_500 and ept.crs.to_epsg() == 2154
    assert ept.bounds == pytest.approx(info.bounds, abs=0.01)


def test_binary_ept_nodes_are_read(tmp_path):
    """EPT's uncompressed ``binary`` data type: records laid out by the schema, X/Y/Z scaled."""
    root = tmp_path / "bin"
    (root / "ept-data").mkdir(parents=True)
    (root / "ept-hierarchy").mkdir()
    schema = [{"name": "X", "type": "signed", "size": 4, "scale": 0.01, "offset": 1000.0},
              {"name": "Y", "type": "signed", "size": 4, "scale": 0.01, "offset": 2000.0},
              {"name": "Z", "type": "signed", "size": 4, "scale": 0.01, "offset": 0.0},
              {"name": "Classification", "type": "unsigned", "size": 1}]
    dtype = np.dtype([("X", "<i4"), ("Y", "<i4"), ("Z", "<i4"), ("Classification", "u1")])
    rec = np.zeros(3, dtype)
    rec["X"], rec["Y"], rec["Z"], rec["Classification"] = [0, 150, 300], [0, 250, 500], [1000, 1100, 1200], [2, 6, 6]
    rec.tofile(root / "ept-data" / "0-0-0-0.bin")
    (root / "ept-hierarchy" / "0-0-0-0.json").write_text('{"0-0-0-0": 3}')
    (root / "ept.json").write_text(json.dumps({
        "bounds": [1000, 2000, 0, 1010, 2010, 10], "schema": schema, "dataType": "binary", "points": 3,
        "hierarchyType": "json", "span": 128, "srs": {"authority": "EPSG", "horizontal": "28992"}}))
    cloud = read_points(root / "ept.json")
    assert np.allclose(cloud.xyz, [[1000, 2000, 10], [1001.5, 2002.5, 11], [1003, 2005, 12]])
    assert cloud.classification.tolist() == [2, 6, 6] and cloud.crs.to_epsg() == 28992 and cloud.rgb is None


def test_cluster_streams_the_same_ept_points_as_the_reader(nimes_ept):
    """The city-scale pass (core/cluster) streams EPT nodes through the same dataset code."""
    from implicity.core.cluster.sources import open_chunks

    source = open_chunks(nimes_ept)
    streamed = np.concatenate(list(source.chunks))
    whole = read_points(nimes_ept)
    assert source.total == len(whole) == streamed.shape[0] and source.crs.to_epsg() == 2154
    assert np.array_equal(_sorted(type(whole)(xyz=streamed, crs=whole.crs, source="")), _sorted(whole))


@pytest.mark.parametrize("name, content, message", [
    (None, "", "remote point clouds are not read"),
    ("cloud.vpc", "{}", "virtual point clouds"),
    ("cloud.e57", "x", "unsupported point cloud format"),
    ("ept.json", '{"bounds": [0,0,0,1,1,1]}', "not an EPT dataset"),
    ("ept.json", "{broken", "cannot read this EPT metadata"),
])
def test_unusable_sources_are_explained(tmp_path, name, content, message):
    path = "https://example.org/ept/ept.json"
    if name:
        path = tmp_path / name
        path.write_text(content)
    with pytest.raises(InputError, match=message):
        read_points(path)


def test_incomplete_ept_dataset_names_what_is_missing(nimes_ept, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(nimes_ept.parent, copy)
    node = sorted((copy / "ept-data").iterdir())[-1]
    node.unlink()
    with pytest.raises(InputError, match=f"cannot read the EPT node {node.name}.*ept-data folder"):
        read_points(copy / "ept.json")
    shutil.rmtree(copy / "ept-hierarchy")
    with pytest.raises(InputError, match="EPT hierarchy file .* is missing or broken"):
        read_points(copy / "ept.json")


def test_extent_without_points_is_explained(nimes_ept):
    with pytest.raises(InputError, match="no points inside 0.0,0.0,10.0,10.0"):
        read_points(nimes_ept, bounds=(0.0, 0.0, 10.0, 10.0))


def test_write_ept_refuses_a_folder_in_use(tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not an empty folder"):
        write_ept(NIMES, tmp_path / "used")
    assert (tmp_path / "used" / "keep.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left

"""Prepared patches: storage round trip, `implicity prepare`, the PatchDataset contract, augmentation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

import implicity
from implicity.cli import main as cli_main
from implicity.core.errors import InputError
from implicity.core.normalization import DEFAULT_Z_STD
from implicity.core.reconstruct.decoding import WindowFrame, image_normalizer
from implicity.training.data.dataset import PatchDataset, augment_grid, augment_xy
from implicity.training.data.prepare import prepare_dataset
from implicity.training.data.store import FORMAT_NAME, FORMAT_VERSION, PatchData, load_patch, save_patch, write_manifest
from implicity.training.data.synthetic_city import CityConfig, generate_city

Z_STD = DEFAULT_Z_STD  # the reference implementation's height scale, prepare's default

TINY_CONFIG = """
output: {out}
patch_size: 32.0
resolution: 1.0
stride: 32.0
n_images: 1
min_points: 50
queries: {{surface_std: 0.4}}
sources:
  - name: city
    type: synthetic
    seeds: [11]
    city: {{size_m: 96.0}}
    split: {{strips: [train, val, test], axis: x}}
"""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    base = tmp_path_factory.mktemp("prep")
    cfg = base / "tiny.yaml"
    cfg.write_text(TINY_CONFIG.format(out=base / "data"))
    root = prepare_dataset(cfg, progress=False, log=lambda m: None)
    return cfg, root


def test_patch_file_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    patch = PatchData(points=rng.normal(size=(50, 3)).astype(np.float32),
                      images=rng.integers(0, 256, (2, 8, 8)).astype(np.float32),
                      dsm=rng.normal(100, 5, (8, 8)).astype(np.float32),
                      valid=np.ones((8, 8), np.uint8), building=(rng.random((8, 8)) > 0.5).astype(np.uint8),
                      forest=np.zeros((8, 8), np.uint8), water=np.eye(8, dtype=np.uint8),
                      x0=500123.5, y0=5000456.25, z_shift=251.123456789, resolution=0.5, patch_size=4.0)
    patch.dsm[0, 0] = np.nan
    save_patch(tmp_path / "p.npz", patch)
    back = load_patch(tmp_path / "p.npz")
    assert back.images.dtype == np.float16 and back.valid.dtype == np.uint8 and back.dsm.dtype == np.float32
    for name in ("points", "images", "dsm", "valid", "building", "forest", "water"):
        assert np.array_equal(getattr(back, name), getattr(patch, name), equal_nan=True), name
    assert (back.x0, back.y0, back.z_shift) == (patch.x0, patch.y0, patch.z_shift)
    assert [p.name for p in tmp_path.iterdir()] == ["p.npz"]  # no temporary left over


def test_prepare_writes_manifest_and_strip_splits(prepared):
    _, root = prepared
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["format"] == FORMAT_NAME and manifest["n_images"] == 1
    assert manifest["crs"] == {"city_seed11": "EPSG:32632"} and manifest["image_size"] == 32
    assert manifest["splits"] == {"train": 3, "val": 3, "test": 3}
    for entry in manifest["patches"]:  # strips of 32 m along x: train west, val middle, test east
        strip = int((entry["x0"] - 500000.0) // 32)
        assert entry["split"] == ("train", "val", "test")[strip]
        assert (root / entry["file"]).is_file()
    assert 0 < manifest["image_normalization"]["std"] and 0 < manifest["image_normalization"]["mean"] < 255
    leftovers = [p.name for p in root.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_prepared_patch_matches_the_city(prepared):
    _, root = prepared
    city = generate_city(11, CityConfig(size_m=96.0, resolution=1.0))
    ds = PatchDataset(root, split="val", n_query=500, augment=False, seed=0)
    for i in range(len(ds)):
        s = ds[i]
        n = s["normalizer"]
        row = int(round((city.grid.bounds[3] - (n["y0"] + 32.0)) / 1.0))
        col = int(round((n["x0"] - 500000.0) / 1.0))
        expected = city.dsm[row:row + 32, col:col + 32]
        assert np.allclose(s["dsm"] * n["z_std"] + n["z_shift"], expected, atol=1e-3)


def test_prepare_is_rerunnable_and_forced_rebuild(prepared):
    cfg, root = prepared
    stamp = (root / "manifest.json").stat().st_mtime_ns
    messages = []
    prepare_dataset(cfg, progress=False, log=messages.append)
    assert "nothing to do" in messages[0] and (root / "manifest.json").stat().st_mtime_ns == stamp
    before = np.load(root / "patches/000000.npz")["dsm"]
    prepare_dataset(cfg, progress=False, force=True, log=messages.append)
    assert np.array_equal(np.load(root / "patches/000000.npz")["dsm"], before)  # deterministic
    assert [p.name for p in root.parent.iterdir() if p.name.startswith(".")] == []


def test_sample_contract(prepared):
    _, root = prepared
    ds = PatchDataset(root, split="train", n_query=1000, augment=True, seed=3)
    s = ds[1]
    assert set(s) == {"points", "images", "query", "occupancy", "weight", "dsm", "source_keys", "normalizer"}
    for key in ("points", "images", "query", "occupancy", "weight", "dsm"):
        assert s[key].dtype == np.float32, key
    assert s["points"].ndim == 2 and s["points"].shape[1] == 3 and len(s["points"]) >= 50
    assert s["images"].shape == (1, 32, 32) and abs(float(s["images"].mean())) < 3
    assert s["query"].shape == (1000, 3) and s["occupancy"].shape == (1000,) and s["weight"].shape == (1000,)
    assert set(np.unique(s["occupancy"])) <= {0.0, 1.0} and s["dsm"].shape == (32, 32)
    assert ((s["points"][:, :2] >= 0) & (s["points"][:, :2] <= 1)).all()
    assert set(s["normalizer"]) == {"x0", "y0", "z_shift", "z_std", "patch_size"}
    assert s["normalizer"]["z_std"] == pytest.approx(Z_STD) and s["normalizer"]["patch_size"] == 32.0
    # deterministic in (seed, epoch, index); another epoch draws other queries
    again = PatchDataset(root, split="train", n_query=1000, augment=True, seed=3)[1]
    assert all(np.array_equal(s[k], again[k], equal_nan=True) for k in ("points", "query", "dsm", "images"))
    ds.set_epoch(1)
    assert not np.array_equal(ds[1]["query"], s["query"])
    with pytest.raises(InputError, match="no 'nope' patches"):
        PatchDataset(root, split="nope")


@pytest.mark.parametrize("image_normalization", ["dataset", "per_image"])
def test_training_and_inference_normalise_a_patch_identically(prepared, image_normalization):
    """The dataset's sample of a prepared patch and the inference engine's window frame on the same
    points in map coordinates give the network the same input: points, heights and orthos."""
    from types import SimpleNamespace

    _, root = prepared
    ds = PatchDataset(root, split="train", n_query=64, augment=False, image_normalization=image_normalization)
    entry = ds.entries[0]
    patch = load_patch(root / entry["file"])
    sample = ds[0]
    # the patch's input points and ortho as inference reads them: map coordinates, raw intensities
    map_xyz = patch.points.astype(np.float64) + [patch.x0, patch.y0, patch.z_shift]
    frame = WindowFrame(patch.x0, patch.y0, patch.patch_size, float(np.median(map_xyz[:, 2])), ds.z_std)
    assert frame.shift == pytest.approx(sample["normalizer"]["z_shift"], abs=1e-4)
    np.testing.assert_allclose(frame.normalize_points(map_xyz), sample["points"], atol=2e-6, rtol=0)
    # queries: the dataset's in patch xy and map heights; inference's from map xy and heights
    q = sample["query"]
    map_q = np.column_stack([q[:, :2] * patch.patch_size + [patch.x0, patch.y0],
                             q[:, 2].astype(np.float64) * ds.z_std + sample["normalizer"]["z_shift"]])
    np.testing.assert_allclose(frame.normalize_points(map_q), q, atol=2e-6, rtol=0)
    config = SimpleNamespace(image_normalization=image_normalization, image_mean=ds.image_mean,
                             image_std=ds.image_std)
    at_inference = image_normalizer(SimpleNamespace(config=config))(patch.images.astype(np.float32))
    np.testing.assert_array_equal(at_inference, sample["images"])
    assert np.abs(sample["images"]).max() > 0.1  # a real image, not all zeros


def _write_asymmetric(root):
    """An 8 m patch at 1 m: ground 0 m, a 10 m tower at row 1 col 5 and a 5 m one at row 6 col 2;
    one input point at every pixel centre with the pixel's height, image = height + 1."""
    dsm = np.zeros((8, 8), np.float32)
    dsm[1, 5], dsm[6, 2] = 10.0, 5.0
    rows, cols = np.mgrid[0:8, 0:8]
    pts = np.column_stack([cols.ravel() + 0.5, 7.5 - rows.ravel(), dsm.ravel()])
    patch = PatchData(points=pts.astype(np.float32), images=(dsm + 1)[None].astype(np.float32), dsm=dsm,
                      valid=np.ones((8, 8), np.uint8), building=(dsm > 0).astype(np.uint8),
                      forest=np.zeros((8, 8), np.uint8), water=np.zeros((8, 8), np.uint8),
                      x0=1000.0, y0=2000.0, z_shift=0.0, resolution=1.0, patch_size=8.0)
    (root / "patches").mkdir()
    save_patch(root / "patches/0.npz", patch)
    write_manifest(root, {"format": FORMAT_NAME, "version": FORMAT_VERSION, "n_images": 1, "z_std": Z_STD,
                          "image_normalization": {"mean": 0.0, "std": 1.0}, "queries": {},
                          "patches": [{"file": "patches/0.npz", "split": "train"}]})


def _cell(xy):
    return np.clip(np.floor((1 - xy[:, 1]) * 8).astype(int), 0, 7), np.clip(np.floor(xy[:, 0] * 8).astype(int), 0, 7)


def test_augmentation_is_consistent_on_an_asymmetric_patch(tmp_path):
    _write_asymmetric(tmp_path)
    ds = PatchDataset(tmp_path, n_query=400, augment=True, seed=0)
    seen = set()
    for epoch in range(40):
        ds.set_epoch(epoch)
        s = ds[0]
        seen.add(s["dsm"].tobytes())
        r, c = _cell(s["points"])
        assert np.allclose(s["dsm"][r, c], s["points"][:, 2])  # every point sits on its (moved) pixel
        assert np.allclose(s["images"][0][r, c] - 1, s["points"][:, 2] * Z_STD)
        qr, qc = _cell(s["query"])
        assert np.array_equal(s["occupancy"], (s["query"][:, 2] < s["dsm"][qr, qc]).astype(np.float32))
    assert len(seen) == 8  # all symmetries of the square occur, each one consistent


def test_augment_functions_agree_for_all_symmetries():
    square = np.arange(16.0).reshape(4, 4)
    rows, cols = np.mgrid[0:4, 0:4]
    xy = np.column_stack([(cols.ravel() + 0.5) / 4, 1 - (rows.ravel() + 0.5) / 4])
    for flip in (False, True):
        for k in range(4):
            moved = augment_grid(square, flip, k)
            new = augment_xy(xy, flip, k)
            r = np.floor((1 - new[:, 1]) * 4).astype(int)
            c = np.floor(new[:, 0] * 4).astype(int)
            assert np.array_equal(moved[r, c], square.ravel())
    stack = np.stack([square, square + 100])  # leading (image) axis is carried along untouched
    assert np.array_equal(augment_grid(stack, True, 3)[1], augment_grid(square, True, 3) + 100)


def test_cli_synth_city_and_prepare(tmp_path, capsys):
    out = tmp_path / "city"
    assert cli_main(["synth-city", "--seed", "2", "--out", str(out), "--size", "48", "--images", "1"]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["city2_buildings.tif", "city2_forest.tif", "city2_info.json", "city2_ortho1.tif",
                     "city2_reference_dsm.tif", "city2_simulated_cloud.laz", "city2_water.tif"]
    with rasterio.open(out / "city2_reference_dsm.tif") as src:
        assert src.crs.to_epsg() == 32632 and src.shape == (96, 96)
    from implicity.core.pointcloud import read_point_cloud

    cloud = read_point_cloud(out / "city2_simulated_cloud.laz")
    assert cloud.crs.to_epsg() == 32632 and cloud.rgb is not None and len(cloud) > 1000
    assert cli_main(["prepare", str(tmp_path / "missing.yaml")]) == 2
    assert "Prepare config not found" in capsys.readouterr().err


def test_strips_along_y_start_in_the_south():
    from implicity.training.data.prepare import patch_windows

    wins = patch_windows((96, 64), patch_px=32, stride_px=32, labels=["train", "test"], axis="y")
    assert sorted(wins) == [(0, 0, "test"), (0, 32, "test"), (48, 0, "train"), (48, 32, "train")]


def test_training_config_can_lay_query_sampling_over_the_manifests(prepared):
    """``data.queries`` changes the training split's sampling (here: twice the edge share) and
    keeps the manifest's other settings; validation keeps the manifest's; bad values are refused
    with the config's name."""
    from implicity.training.trainer.config import train_config_from_dict
    from implicity.training.trainer.session import open_datasets

    _, root = prepared
    model = str(Path(implicity.__file__).parent / "core" / "model" / "configs" / "implicity_0_lite.yaml")

    def config(source: str, **data):
        return train_config_from_dict({"name": "t", "model": model, "data": {"root": str(root), **data}}, source=source)

    shares = {"uniform_fraction": 0.2, "surface_fraction": 0.4, "edge_fraction": 0.4}
    train, val = open_datasets(config("edges.yaml", queries=shares))
    assert (train.query_config.uniform_fraction, train.query_config.edge_fraction) == (0.2, 0.4)
    assert train.query_config.surface_std == 0.4  # the manifest's, not overridden
    assert val.query_config.edge_fraction == 0.2  # the prepared default
    plain, _ = open_datasets(config("plain.yaml"))
    assert plain.query_config == val.query_config
    for bad in ({"edge_fraction": 0.9}, {"edge_share": 0.4}):
        with pytest.raises(InputError, match=r"bad.yaml \[data.queries\]"):
            open_datasets(config("bad.yaml", queries=bad))


def test_training_config_can_withhold_or_mismatch_orthos(prepared):
    """``data.photometric`` takes true (the defaults) or a mapping of options; a withheld ortho
    reaches the network as no-data (0 after normalisation) and validation is never augmented; bad
    options are refused with the config's name."""
    from implicity.training.trainer.config import train_config_from_dict
    from implicity.training.trainer.session import open_datasets

    _, root = prepared
    model = str(Path(implicity.__file__).parent / "core" / "model" / "configs" / "implicity_mono_lite.yaml")

    def config(source: str, photometric):
        raw = {"name": "t", "model": model, "data": {"root": str(root), "photometric": photometric}}
        return train_config_from_dict(raw, source=source)

    assert open_datasets(config("off.yaml", False))[0].photometric is None
    defaults, _ = open_datasets(config("on.yaml", True))
    assert defaults.photometric.withhold_probability == 0.0 and defaults.photometric.gain == (0.5, 2.0)
    train, val = open_datasets(config("withhold.yaml", {"withhold_probability": 1.0, "gain": [0.8, 1.2]}))
    assert train.photometric.gain == (0.8, 1.2) and val.photometric is None
    assert np.all(train[0]["images"] == 0.0)
    assert np.any(val[0]["images"] != 0.0)
    for bad, why in (({"withhold_probability": 0.7, "mismatch_probability": 0.5}, "add up"),
                     ({"dropout": 0.2}, "unknown")):
        with pytest.raises(InputError, match=rf"bad.yaml \[data.photometric\].*{why}"):
            open_datasets(config("bad.yaml", bad))


def test_training_config_can_repeat_the_patches_of_a_source(prepared):
    """``data.patch_repeats`` (by the prepare config's source name or by type) repeats the training
    split's patches of that source per epoch; validation is never repeated; a name the prepared
    data do not have is refused, in ``loss.height_sources`` too."""
    from implicity.training.trainer.config import train_config_from_dict
    from implicity.training.trainer.session import open_datasets

    _, root = prepared
    model = str(Path(implicity.__file__).parent / "core" / "model" / "configs" / "implicity_mono_lite.yaml")

    def config(repeats):
        raw = {"name": "t", "model": model, "data": {"root": str(root), "patch_repeats": repeats}}
        return train_config_from_dict(raw, source="repeats.yaml")

    once, val_once = open_datasets(config(None))
    for repeats in ({"city": 3}, {"synthetic": 3}, {"city_seed11": 3}):
        train, val = open_datasets(config(repeats))
        assert len(train) == 3 * len(once) and len(val) == len(val_once)
    with pytest.raises(InputError, match="'lidar' is neither a source nor a source type .*known: city, city_seed11, "
                                         "synthetic"):
        open_datasets(config({"lidar": 4}))
    assert train[0]["source_keys"] == ("city_seed11", "city", "synthetic")   # what loss.height_sources matches

    def height_config(sources):
        raw = {"name": "t", "model": model, "data": {"root": str(root)},
               "loss": {"height_weight": 0.1, "height_sources": sources}}
        return train_config_from_dict(raw, source="height.yaml")

    open_datasets(height_config(["synthetic"]))
    with pytest.raises(InputError, match="loss.height_sources: 'lidar' is neither a source nor a source type"):
        open_datasets(height_config(["lidar"]))

"""The held-out evaluation protocol behind the model card (``make model-card``).

What is held out, from training *and* from checkpoint selection:

* **scenes** — Louhans (IGN LiDAR HD, France) and Autzen (PDAL's test LiDAR with a real 1 ft
  ortho, Oregon, USA: the only country that no training scene comes from), plus a 128 m
  synthetic test city (seed 200; training used seeds 0–3, validation 100);
* **degradations** — every scene is evaluated under three input clouds:
  ``family`` (the training family's variants at typical satellite-stereo strength, fixed seed:
  an unseen scene under seen kinds of error),
  ``held-out variant`` (only the variant the training configs exclude, max-then-mean edge
  fattening) and ``legacy simulator`` (``simulate.py``, a separate simulator outside the family).
  The legacy sets are unseen only by a network whose lineage never trained on that simulator's
  clouds: the first lite models were trained on them, and the shipped mono and stereo, like every
  ImpliCity-0 shipped before 2026-11-27 13:02 UTC, were fine-tuned from those
  (``training/init/README.md``); the ImpliCity-0 shipped since was trained from random weights on
  the family alone. The card lists what each model's
  lineage saw, as far as its checkpoints record it (:mod:`implicity.training.provenance`).

Per set (scene × degradation) and region (overall / building / terrain) it reports MedAE, MAE,
RMSE and NMAD of the default baseline (median gridding, 3 m outlier filter, IDW fill), the same
baseline median-filtered over 3 × 3 pixels, and each model; then checks the targets: ImpliCity-0
MedAE ≤ 0.8 × and MAE ≤ 0.7 × the better baseline's, mono ≤ ImpliCity-0 on real-ortho scenes.
Every number comes from :func:`implicity.core.evaluation.evaluate_dsm` (``implicity evaluate``).

A second, diagnostic set of numbers co-registers every DSM to the reference first (``implicity
evaluate --coregister``): a test cloud displaced as a whole (the family draws a vertical bias and a
planimetric shift per set) costs every method the displacement, which no method can see in the
cloud. The targets are checked on the plain numbers; the co-registered ones show how much of a
miss is that displacement.

Where the set's displacement is known (the family draws it), the protocol also scores the reference
itself moved by that displacement: a perfect reconstruction of the cloud's surface. A method sees
nothing of the displacement, so it can score below that only by errors that happen to offset it; a
target that even the perfect DSM misses is marked so. The card also lists everything each set drew
(noise kind, strength and correlation length, fattening, holes, density, blunders, displacement).
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from implicity.core.errors import InputError
from implicity.core.vocabulary import DEFAULT_STEP_HEIGHT

#: The training configs' held-out degradation variant (see training/configs/*_robust_lite.yaml).
HELD_OUT_VARIANTS = ("fattening:max_mean",)
#: The test sets draw from the training family's variants but within the ranges of typical
#: satellite stereo at 0.5 m (one draw per set, so an extreme or trivial draw cannot decide a set).
TEST_RANGES = {"noise_std": (0.3, 0.8), "density": (2.0, 8.0), "blunder_fraction": (0.005, 0.02),
               "hole_fraction": (0.1, 0.3), "fattening_m": (1.0, 2.0)}
DEGRADATIONS = ("family", "held-out variant", "legacy simulator")
BASELINE = {"statistic": "median", "outlier_threshold": 3.0, "fill": "idw"}
RESOLUTION = 0.5
SYNTHETIC_SIZE_M = 128.0   # a 128 m test city keeps the protocol's run time down on a 2-core CPU
TARGET_MEDAE, TARGET_MAE = 0.8, 0.7
REGIONS = ("overall", "building", "terrain")
METRICS = ("medae", "mae", "rmse", "nmad")
COREGISTRATION_MAX_SHIFT = 2.0  # m: well beyond the family's planimetric shift (std 0.3 m, training/data/README.md)


@dataclass(frozen=True)
class HeldOutScene:
    """A held-out scene: LiDAR (reference + dense cloud) or a synthetic city, and its ortho."""

    name: str
    country: str
    points: str | None = None          # LiDAR file, relative to the shared data folder
    crs: str | None = None             # when the header has none
    ortho: str | None = None           # "points" (point colours), a raster relative to the data folder
    metric_crs: str | None = None      # reproject x, y to this CRS (clouds in feet)
    vertical_factor: float = 1.0       # z × this (feet → metres)
    seed: int = 0                      # synthetic city seed (points is None) and degradation seed
    crop: tuple[float, float, float, float] | None = None  # xmin, ymin, xmax, ymax in the file's CRS

    @property
    def real_ortho(self) -> bool:
        return self.points is not None and self.ortho is not None


SCENES = (
    HeldOutScene("Louhans", "France", "louhans_lidarhd/870000_6618000.subset.50mx100m.las", "EPSG:2154",
                 ortho="points", seed=11),
    HeldOutScene("Autzen", "USA", "autzen/autzen_trim.laz", ortho="autzen/autzen.jpg", metric_crs="EPSG:32610",
                 vertical_factor=0.3048, seed=12, crop=(636300.0, 848935.0, 636900.0, 849500.0)),
    HeldOutScene("synthetic city 200", "synthetic", seed=200),
)


@dataclass
class PreparedScene:
    """Rasters and clouds of one scene on disk (the inputs every method reads)."""

    reference: Path
    building: Path | None
    orthos: list[Path]              # 2 views (the second parallax-warped); mono uses the first
    dense: Any                      # PointCloud the legacy simulator degrades
    dsm: np.ndarray
    valid: np.ndarray
    grid: Any


def _lidar_scene(scene: HeldOutScene, data: Path, folder: Path) -> PreparedScene:
    from implicity.core.ortho import rasterize_colors
    from implicity.core.pointcloud import read_point_cloud, reproject_point_cloud
    from implicity.core.raster import read_raster_on_grid, write_geotiff
    from implicity.core.reconstruct.imagery import to_grey

    from .data.scenes import lidar_reference
    from .data.stereo_view import parallax_view

    path = data / str(scene.points)
    if not path.is_file():
        raise InputError(f"held-out scene {scene.name}: {path} is missing (the shared data folder).")
    cloud = read_point_cloud(path, crs=scene.crs)
    if scene.crop is not None:
        x0, y0, x1, y1 = scene.crop
        x, y = cloud.xyz[:, 0], cloud.xyz[:, 1]
        cloud = cloud.subset((x >= x0) & (x < x1) & (y >= y0) & (y < y1))
    if scene.metric_crs is not None:
        from rasterio.crs import CRS

        cloud = reproject_point_cloud(cloud, CRS.from_user_input(scene.metric_crs))
    if scene.vertical_factor != 1.0:
        cloud = dataclasses.replace(cloud, xyz=cloud.xyz * np.array([1.0, 1.0, scene.vertical_factor]))
    grid, dsm, masks = lidar_reference(cloud, RESOLUTION)
    reference = write_geotiff(folder / "reference.tif", dsm, grid)
    building = None
    if masks["building"].any():
        building = write_geotiff(folder / "building.tif", masks["building"], grid, nodata=None, dtype="uint8")
    if scene.ortho == "points":
        grey = to_grey(rasterize_colors(cloud, grid))
    else:
        grey = to_grey(read_raster_on_grid(data / str(scene.ortho), grid, "bilinear", what=f"{scene.name} ortho"))
    orthos = [write_geotiff(folder / "ortho1.tif", grey, grid),
              write_geotiff(folder / "ortho2.tif", parallax_view(grey, dsm, RESOLUTION), grid)]
    return PreparedScene(reference, building, orthos, cloud, dsm, masks["valid"], grid)


def _synthetic_scene(scene: HeldOutScene, folder: Path) -> PreparedScene:
    from implicity.core.raster import write_geotiff

    from .data.render import default_suns, render_ortho
    from .data.synthetic_city import CityConfig, generate_city, sample_surface_points

    city = generate_city(scene.seed, CityConfig(size_m=SYNTHETIC_SIZE_M))
    reference = write_geotiff(folder / "reference.tif", city.dsm, city.grid)
    building = write_geotiff(folder / "building.tif", city.building_mask, city.grid, nodata=None, dtype="uint8")
    images = [render_ortho(city.dsm, city.albedo, city.grid.resolution, sun, seed=scene.seed * 10 + i)
              for i, sun in enumerate(default_suns(2))]
    orthos = [write_geotiff(folder / f"ortho{i + 1}.tif", im, city.grid) for i, im in enumerate(images)]
    dense = sample_surface_points(city, 10.0, seed=scene.seed)
    return PreparedScene(reference, building, orthos, dense, city.dsm, np.ones(city.dsm.shape, np.uint8), city.grid)


def degraded_cloud(prepared: PreparedScene, degradation: str, seed: int, out: Path) -> tuple[Path, dict | None]:
    """Write the input cloud of one set (NPZ with CRS); return its path and everything the family
    drew for it (:func:`drawn_summary`), None for the legacy simulator, which draws from its own
    fixed configuration."""
    from implicity.core.pointcloud import PointCloud, write_point_cloud_npz

    from .data.degrade import DegradationFamily, degrade_surface, held_out_family
    from .data.simulate import simulate_stereo_cloud

    rng = np.random.default_rng([seed, DEGRADATIONS.index(degradation)])
    drawn = None
    if degradation == "legacy simulator":
        xyz = simulate_stereo_cloud(prepared.dense, seed=seed).cloud.xyz
    else:
        family = DegradationFamily(exclude=HELD_OUT_VARIANTS, **TEST_RANGES)
        if degradation == "held-out variant":
            family = held_out_family(family)
        degraded = degrade_surface(rng, prepared.dsm, prepared.valid, RESOLUTION, family)
        xmin, ymin, _, _ = prepared.grid.bounds
        xyz = degraded.xyz + np.array([xmin, ymin, 0.0])
        drawn = drawn_summary(degraded.drawn)
    write_point_cloud_npz(out, PointCloud(xyz=xyz, crs=prepared.grid.crs, source=str(out)))
    return out, drawn


def displacement_of(drawn: dict[str, Any]) -> dict[str, float]:
    """The displacement of the whole cloud in a draw: {"dx" east, "dy" north, "dz" up} in metres."""
    east, north = drawn["planimetric_shift_m"]
    return {"dx": east, "dy": north, "dz": drawn["vertical_bias_m"]}


def drawn_summary(drawn: dict[str, Any]) -> dict[str, Any]:
    """What one draw of the family was, as plain JSON values (``degrade_surface``'s ``drawn``).

    Why: every held-out set is one draw, and a draw decides how much any method can win. Noise
    correlated over metres looks like relief to every method; fattening of 2 m is a wider band to
    undo than of 1 m. The model card lists them so a reader can see what a missed target met."""
    out: dict[str, Any] = {}
    for key, value in drawn.items():
        if isinstance(value, (list, tuple)):
            out[key] = [v if isinstance(v, str) else float(v) for v in value]
        elif isinstance(value, (bool, np.bool_)):
            out[key] = bool(value)
        elif isinstance(value, str):
            out[key] = value
        else:
            out[key] = float(value)
    return out


def displacement_floor(prepared: PreparedScene, displacement: dict, out: Path) -> dict:
    """The evaluation of a perfect reconstruction of a cloud displaced by ``displacement``: the
    reference moved by it (what is left is the displacement alone, which no method can see)."""
    from implicity.core.coregistration import Coregistration, shift_dsm
    from implicity.core.evaluation import evaluate_dsm
    from implicity.core.raster import write_geotiff

    moved = shift_dsm(prepared.dsm, Coregistration(displacement["dx"], displacement["dy"], displacement["dz"], 0),
                      RESOLUTION)
    write_geotiff(out, moved, prepared.grid)
    report = evaluate_dsm(out, prepared.reference, building_mask=prepared.building).to_dict()
    return {**report, "displacement": displacement}


def run_methods(cloud: Path, prepared: PreparedScene, models: dict[str, Path], folder: Path,
                device: str, log: Callable[[str], None], symmetries: dict[str, int] | None = None) -> dict[str, dict]:
    """{method: evaluation dict} for the baselines and every model on one set; ``symmetries``
    gives a method's count of averaged copies (``implicity reconstruct --symmetries``, default 1)."""
    from implicity.core.baseline import make_baseline_dsm
    from implicity.core.evaluation import evaluate_dsm
    from implicity.core.reconstruct import ReconstructionInputs, ReconstructionOptions, reconstruct_dsm

    extent = prepared.grid.bounds
    dsms = {"baseline": folder / "baseline.tif", "baseline 3×3 median": folder / "baseline_smooth3.tif"}
    make_baseline_dsm(cloud, dsms["baseline"], RESOLUTION, extent=extent, **BASELINE)
    make_baseline_dsm(cloud, dsms["baseline 3×3 median"], RESOLUTION, extent=extent, smooth=3, **BASELINE)
    for method, model in models.items():
        from implicity.core.model import load_model

        n_images = int(load_model(model, device="cpu")[1].n_images)
        dsms[method] = folder / f"{method}.tif"
        t0 = time.perf_counter()
        reconstruct_dsm(ReconstructionInputs(points=cloud, model=model, out_path=dsms[method], resolution=RESOLUTION,
                                             orthos=tuple(prepared.orthos[:n_images]), extent=extent),
                        ReconstructionOptions(device=device, symmetries=(symmetries or {}).get(method, 1)))
        log(f"    {method}: {time.perf_counter() - t0:.1f} s")
    return {m: {"plain": evaluate_dsm(p, prepared.reference, building_mask=prepared.building,
                                      with_step_regions=True).to_dict(),
                "coregistered": evaluate_dsm(p, prepared.reference, building_mask=prepared.building,
                                             coregister=True, max_shift=COREGISTRATION_MAX_SHIFT).to_dict()}
            for m, p in dsms.items()}


def run_protocol(models: dict[str, Path], data: Path, out: Path, device: str = "auto",
                 scenes: tuple[HeldOutScene, ...] = SCENES, log: Callable[[str], None] = print,
                 symmetries: dict[str, int] | None = None) -> dict[str, Any]:
    """Evaluate ``models`` ({label: checkpoint}, ``symmetries`` {label: copies averaged} where
    not 1) on every held-out set; returns the JSON-able results."""
    results: dict[str, Any] = {"sets": {}, "scenes": {}}
    for scene in scenes:
        folder = out / scene.name.replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        prepared = _synthetic_scene(scene, folder) if scene.points is None else _lidar_scene(scene, data, folder)
        results["scenes"][scene.name] = {"country": scene.country, "real_ortho": scene.real_ortho,
                                         "has_buildings": prepared.building is not None}
        for degradation in DEGRADATIONS:
            log(f"{scene.name} / {degradation}")
            sub = folder / degradation.replace(" ", "_")
            sub.mkdir(exist_ok=True)
            cloud, drawn = degraded_cloud(prepared, degradation, scene.seed, sub / "input.npz")
            reports = run_methods(cloud, prepared, models, sub, device, log, symmetries)
            results["sets"][f"{scene.name} / {degradation}"] = {
                "scene": scene.name, "degradation": degradation,
                "methods": {m: r["plain"] for m, r in reports.items()},
                "coregistered": {m: r["coregistered"] for m, r in reports.items()}, "drawn": drawn,
                "floor": None if drawn is None else displacement_floor(
                    prepared, displacement_of(drawn), sub / "displaced_reference.tif")}
    results["targets"] = check_targets(results)
    results["coregistered_targets"] = check_targets(results, key="coregistered")
    return results


def _metric(report: dict, region: str, metric: str) -> float:
    value = report["regions"].get(region, {}).get(metric)
    return float("nan") if value is None else float(value)


def check_targets(results: dict[str, Any], zero: str = "ImpliCity-0", mono: str = "ImpliCity-mono",
                  key: str = "methods") -> list[dict]:
    """One line per set and target: the ratio, and whether it is met (``key``: "methods" for the
    plain numbers, "coregistered" for those after co-registration). On the plain numbers of a set
    with a known displacement, ``floor`` is the ratio a perfect reconstruction would reach."""
    lines = []
    for name, entry in results["sets"].items():
        methods = entry[key]
        floor = entry.get("floor") if key == "methods" else None
        if zero in methods:
            for metric, target in (("medae", TARGET_MEDAE), ("mae", TARGET_MAE)):
                best = min(_metric(methods[b], "overall", metric) for b in ("baseline", "baseline 3×3 median"))
                ratio = _metric(methods[zero], "overall", metric) / best
                line = {"set": name, "target": f"{zero} {metric} ≤ {target} × better baseline",
                        "ratio": ratio, "met": bool(ratio <= target)}
                if floor:
                    line["floor"] = _metric(floor, "overall", metric) / best
                    line["missed_by_perfect_dsm"] = bool(line["floor"] > target)
                lines.append(line)
        if mono in methods and zero in methods and results["scenes"][entry["scene"]]["real_ortho"]:
            a, b = _metric(methods[mono], "overall", "medae"), _metric(methods[zero], "overall", "medae")
            lines.append({"set": name, "target": f"{mono} MedAE ≤ {zero} MedAE (real ortho)",
                          "ratio": a / b, "met": bool(a <= b)})
    return lines


def held_out_exposure(record: dict[str, Any]) -> Any:
    """What the lineage of a checkpoint's training ``record`` saw of this protocol's held-out scenes
    and variant (:func:`implicity.training.provenance.exposure`)."""
    from .provenance import exposure

    scene_files = {s.name: Path(s.points).name for s in SCENES if s.points}
    scene_seeds = {s.name: s.seed for s in SCENES if s.points is None}
    return exposure(record, scene_files, scene_seeds, HELD_OUT_VARIANTS)


def lineage_exposures(models: dict[str, Path]) -> dict[str, str]:
    """Per model, one line on what its lineage trained or selected on (:func:`held_out_exposure`)."""
    from implicity.core.model.checkpoint import describe_checkpoint

    return {label: held_out_exposure(describe_checkpoint(path)[1]).describe() for label, path in models.items()}


def _lineage_lines(lineage: dict[str, str]) -> list[str]:
    lines = ["### What each model's lineage saw", "",
             "From the model's training record and those of the checkpoints its runs started from "
             "(`training/provenance.py`): held-out scenes in a training or validation split, the held-out "
             "variant in a run's degradation family, and the legacy simulator's clouds, which a run without a "
             "degradation family trains on. A lineage recorded only in part has a run that started from a "
             "checkpoint written before runs recorded their ancestors (2026-11-27); `training/init/README.md` "
             "lists those chains by hand.", ""]
    return lines + [f"- **{label}**: {line}" for label, line in lineage.items()]


def markdown(results: dict[str, Any]) -> str:
    """The model card's tables: MedAE / MAE / RMSE / NMAD per set, region and method; the targets."""
    methods = list(next(iter(results["sets"].values()))["methods"])
    head = "| held-out set | region | " + " | ".join(methods) + " |"
    lines = ["Each cell: MedAE / MAE / RMSE / NMAD in metres (0.5 m pixels).", "", head,
             "|---|---|" + "---|" * len(methods)]
    for name, entry in results["sets"].items():
        for region in REGIONS:
            reports = entry["methods"]
            if not any(region in r["regions"] for r in reports.values()):
                continue
            cells = [" / ".join(f"{_metric(r, region, m):.2f}" for m in METRICS) for r in reports.values()]
            lines.append(f"| {name} | {region} | " + " | ".join(cells) + " |")
    lines += ["", *_target_table(results["targets"], floor=True), "",
              "Last column: the same ratio for the reference itself moved by the displacement the set drew "
              "for the whole cloud (the family's vertical bias and planimetric shift), i.e. a perfect "
              "reconstruction of the cloud's surface. No method sees that displacement: it can only do better by "
              "errors that happen to offset it, so where even the perfect DSM misses a target, no method "
              "can be expected to meet it on that set. "
              "The legacy simulator draws no displacement (—)."]
    if any(entry.get("drawn") for entry in results["sets"].values()):
        lines += ["", *_drawn_table(results)]
    if results.get("lineage"):
        lines += ["", *_lineage_lines(results["lineage"])]
    lines += _step_table(results)
    if "coregistered_targets" in results:
        lines += ["", "## After co-registration (diagnostic)", "",
                  "Every DSM moved first by the shift that best matches the reference (`implicity evaluate "
                  f"--coregister`, horizontal within {COREGISTRATION_MAX_SHIFT:g} m): what is left once a "
                  "displacement of the whole cloud, which no method can see, is taken out. Overall MedAE / MAE "
                  "in metres, and the shift found for ImpliCity-0 (dx, dy, dz). The targets above are checked "
                  "on the plain numbers; these show how much of each miss is that displacement.", "",
                  "| held-out set | " + " | ".join(methods) + " | ImpliCity-0 shift (m) |",
                  "|---|" + "---|" * (len(methods) + 1)]
        for name, entry in results["sets"].items():
            reports = entry["coregistered"]
            cells = [" / ".join(f"{_metric(r, 'overall', m):.2f}" for m in ("medae", "mae")) for r in reports.values()]
            shift = reports.get("ImpliCity-0", {}).get("coregistration")
            where = "" if not shift else f"{shift['dx']:+.2f}, {shift['dy']:+.2f}, {shift['dz']:+.2f}"
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {where} |")
        lines += ["", *_target_table(results["coregistered_targets"], floor=False)]
    return "\n".join(lines)


def _step_table(results: dict[str, Any]) -> list[str]:
    """MAE on the reference's height steps (top, foot) and off them, per set and method: where the
    overall MAE is won and lost (``evaluate --step-regions``); empty for results without them."""
    from implicity.core.evaluation import STEP_REGIONS as regions

    sets = {n: e for n, e in results["sets"].items()
            if all(r in e["methods"][next(iter(e["methods"]))]["regions"] for r in regions)}
    if not sets:
        return []
    methods = list(next(iter(sets.values()))["methods"])
    lines = ["", "## Height steps (diagnostic)", "",
             "MAE in metres at the top of the reference's height steps / at their foot / off steps "
             "(`implicity evaluate --step-regions`: pixels within 2 px of a jump of more than "
             f"{DEFAULT_STEP_HEIGHT:g} m between neighbours), and the share of pixels in each. Gridding errs at "
             "the foot (fattened edges); a model that undoes fattening can err at the top (roofs and crowns "
             "cut down). The MAE target is decided by both.", "",
             "| held-out set | share top / foot / off | " + " | ".join(methods) + " |",
             "|---|---|" + "---|" * len(methods)]
    for name, entry in sets.items():
        reports = entry["methods"]
        first = next(iter(reports.values()))["regions"]
        total = sum(first[r]["count"] for r in regions) or 1
        share = " / ".join(f"{first[r]['count'] / total:.2f}" for r in regions)
        cells = [" / ".join(f"{_metric(r, region, 'mae'):.2f}" for region in regions) for r in reports.values()]
        lines.append(f"| {name} | {share} | " + " | ".join(cells) + " |")
    return lines


def _drawn_cells(d: dict[str, Any]) -> list[str]:
    """One set's draw as table cells: noise, fattening, holes, points, blunders, displacement."""
    share = d.get("noise_correlated_share", 0.0)
    noise = f"{d['noise']} {d['noise_std']:.2f} m"
    if share > 0:
        noise += f", {100 * share:.0f} % correlated over {d['noise_scale_m']:.1f} m"
    if d.get("slope_noise"):
        noise += ", grows with slope"
    fattening = d["fattening"] if d["fattening"] == "none" else f"{d['fattening']} {d['fattening_m']:.1f} m"
    if "fattened_edge_share" in d:
        fattening += f" on {100 * d['fattened_edge_share']:.0f} % of edges"
    holes = f"{100 * d['hole_share']:.0f} %" + (f" ({', '.join(d['holes'])})" if d["holes"] else "")
    points = f"{d['points_per_m2']:.1f} /m² ({d['sampling'].replace('_', ' ')})"
    shift = ", ".join(f"{v:+.2f}" for v in displacement_of(d).values())
    return [noise, fattening, holes, points, f"{100 * d['blunder_share']:.1f} %", shift]


def _drawn_table(results: dict[str, Any]) -> list[str]:
    """What every held-out set drew from the family (the legacy simulator: its fixed settings)."""
    lines = ["### What each held-out set drew", "",
             "Each set is one draw of the family at typical satellite-stereo strength (`TEST_RANGES` in "
             "training/protocol.py; the variants in training/data/README.md). Noise correlated over metres "
             "is relief to every method, the baselines included; fattening, holes and blunders are what a "
             "model can undo. Displacement: east, north, up in metres.", "",
             "| held-out set | noise (total std) | edge fattening | holes | points | blunders | displacement (m) |",
             "|---|---|---|---|---|---|---|"]
    for name, entry in results["sets"].items():
        d = entry.get("drawn")
        if d and "noise" in d:
            cells = _drawn_cells(d)
        elif d:  # the family drew nothing: the set's surface had no known cell
            cells = ["nothing (no known surface)", "", "", "", "", "—"]
        else:
            cells = ["the legacy simulator's own settings (`simulate.py`)", "", "", "", "", "—"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _target_table(targets: list[dict], floor: bool) -> list[str]:
    """The targets as a table; with ``floor``, a last column with the ratio of a perfect DSM."""
    head, rule = "| held-out set | target | ratio | met |", "|---|---|---|---|"
    if floor:
        head, rule = head + " perfect DSM of the displaced cloud |", rule + "---|"
    lines = [head, rule]
    for t in targets:
        line = f"| {t['set']} | {t['target']} | {t['ratio']:.2f} | {'yes' if t['met'] else '**no**'} |"
        if floor:
            best = t.get("floor")
            line += " — |" if best is None else (
                f" {best:.3f}" + (" (a perfect DSM misses it too)" if t["missed_by_perfect_dsm"] else "") + " |")
        lines.append(line)
    return lines


def write_results(results: dict[str, Any], path: Path) -> None:
    """Write the protocol's results as JSON, atomically."""
    from implicity.core.outputs import write_text_atomic

    write_text_atomic(path, json.dumps(results, indent=1, allow_nan=True))

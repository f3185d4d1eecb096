"""Point clouds as QGIS hands them over: LAS/LAZ and COPC files, EPT datasets, read whole or by extent.

Why this exists: Debian's QGIS 3.22 (no PDAL) opens only EPT datasets as point-cloud layers, while
QGIS ≥ 3.26 with PDAL opens LAS/LAZ/COPC. The plugin receives a layer's source — the path of a
``.las``/``.laz``/``.copc.laz`` file or of an ``ept.json`` — and must read it without PDAL. Reading
is bounded: LAS/LAZ are streamed in chunks, COPC and EPT by octree node, and only the points inside
the requested bounds are kept, so a small extent of a large file costs little memory and time.
Cancelling is checked between chunks/nodes.

:func:`write_ept` turns a LAS/LAZ file into a small EPT dataset (LAZ nodes, JSON hierarchy) so that
QGIS without PDAL can display it as a point-cloud layer.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.crs import CRS

from .crs import parse_crs
from .errors import CancelledError, InputError
from .pointcloud import SUPPORTED_SUFFIXES, PointCloud, read_point_cloud
from .progress import CancelFn, ProgressFn, check_cancelled

#: (xmin, ymin, xmax, ymax) in the cloud's CRS; ``None`` = everything.
Bounds2D = tuple[float, float, float, float]
#: An octree cube: (xmin, ymin, zmin, xmax, ymax, zmax).
Cube = Sequence[float]

CHUNK_POINTS = 1_000_000  # LAS/LAZ points decoded per chunk (~30-60 MB of records)
EPT_DATA_SUFFIX = {"laszip": ".laz", "binary": ".bin", "zstandard": ".zst"}
FORMATS = ("las", "laz", "copc", "ept", "ply", "npz")


@dataclass(frozen=True)
class PointSourceInfo:
    """What the header of a point source says, without reading its points."""

    path: str
    format: str  # one of FORMATS
    crs: CRS | None
    bounds: tuple[float, float, float, float] | None  # xmin, ymin, xmax, ymax
    count: int | None


# -- format detection --------------------------------------------------------------------------------

def _is_remote(path: str) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def ept_json_path(path: str | os.PathLike[str]) -> Path | None:
    """The ``ept.json`` of an EPT dataset given as its file or its folder; None if not EPT."""
    p = Path(path)
    if p.is_dir() and (p / "ept.json").is_file():
        return p / "ept.json"
    if p.name.lower().endswith(".json") and p.is_file():
        return p
    return None


def _has_copc_vlr(path: Path) -> bool:
    """COPC files are LAZ 1.4 whose first VLR is ``copc``/1 (at byte 375 + 2)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(375 + 20)
    except OSError:
        return False
    return len(head) >= 395 and head[:4] == b"LASF" and head[377:381] == b"copc"


def source_format(path: str | os.PathLike[str]) -> str:
    """Which reader a path needs (``las``, ``laz``, ``copc``, ``ept``, ``ply``, ``npz``)."""
    text = str(path)
    if _is_remote(text):
        raise InputError(
            f"{text}: remote point clouds are not read by ImpliCity. Download the dataset (for EPT: "
            "ept.json with its ept-data and ept-hierarchy folders) and choose the local copy.")
    if text.startswith("file://"):
        text = text[len("file://"):]
    p = Path(text).expanduser()
    if not p.exists():
        raise InputError(f"Point cloud file not found: {p}. Check the path.")
    if ept_json_path(p) is not None:
        return "ept"
    suffix = p.suffix.lower()
    if suffix == ".vpc":
        raise InputError(
            f"{p}: virtual point clouds (.vpc) are not supported; choose one of the files it lists, or merge "
            "them into one LAZ/COPC file (e.g. pdal merge).")
    if suffix not in SUPPORTED_SUFFIXES:
        raise InputError(
            f"{p}: unsupported point cloud format '{p.suffix or p.name}'. Use LAS, LAZ, COPC (.copc.laz), "
            "an EPT dataset (ept.json), PLY or NPZ.")
    if suffix == ".laz" and _has_copc_vlr(p):
        return "copc"
    return suffix[1:]


# -- header probing ----------------------------------------------------------------------------------

def _las_crs(header: Any) -> CRS | None:
    try:
        crs_obj = header.parse_crs()
        return CRS.from_wkt(crs_obj.to_wkt()) if crs_obj is not None else None
    except Exception:  # noqa: BLE001 - an unreadable CRS record counts as "no CRS"
        return None


def _ept_crs(meta: dict, where: Path) -> CRS | None:
    srs = meta.get("srs") or {}
    if srs.get("wkt"):
        return parse_crs(srs["wkt"], what=f"{where} 'srs'")
    if srs.get("authority") and srs.get("horizontal"):
        return parse_crs(f"{srs['authority']}:{srs['horizontal']}", what=f"{where} 'srs'")
    return None


def _read_ept_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read this EPT metadata file ({exc}). Is it a complete ept.json?") from None
    missing = [k for k in ("bounds", "schema", "dataType", "points") if k not in meta]
    if missing:
        raise InputError(f"{path}: not an EPT dataset (no {', '.join(missing)} in it). Choose the ept.json of "
                         "an Entwine Point Tile dataset.")
    if meta["dataType"] not in EPT_DATA_SUFFIX:
        raise InputError(f"{path}: EPT data type '{meta['dataType']}' is unknown; expected laszip or binary.")
    return meta


def probe_point_cloud(path: str | os.PathLike[str]) -> PointSourceInfo:
    """Format, CRS, xy bounds and point count from the header (PLY/NPZ are read, they have none)."""
    fmt = source_format(path)
    p = Path(str(path)[len("file://"):] if str(path).startswith("file://") else path).expanduser()
    if fmt == "ept":
        meta_path = ept_json_path(p)
        assert meta_path is not None  # source_format said "ept"
        meta = _read_ept_json(meta_path)
        b = meta.get("boundsConforming") or meta["bounds"]
        return PointSourceInfo(str(meta_path), fmt, _ept_crs(meta, meta_path), (b[0], b[1], b[3], b[4]),
                               int(meta["points"]))
    if fmt in ("las", "laz", "copc"):
        import laspy

        try:
            with laspy.open(str(p)) as reader:
                h = reader.header
                return PointSourceInfo(str(p), fmt, _las_crs(h), (float(h.mins[0]), float(h.mins[1]),
                                       float(h.maxs[0]), float(h.maxs[1])), int(h.point_count))
        except Exception as exc:  # noqa: BLE001 - any parser failure means a corrupt/unsupported file
            raise InputError(f"{p}: cannot read this {fmt.upper()} file ({type(exc).__name__}: {exc}). "
                             "Is it complete and a valid point cloud?") from None
    cloud = read_point_cloud(p)
    return PointSourceInfo(str(p), fmt, cloud.crs, cloud.bounds, len(cloud))


# -- reading -----------------------------------------------------------------------------------------

def _check(is_cancelled: CancelFn | None, what: Path) -> None:
    check_cancelled(is_cancelled, f"reading {what.name}")


def _inside(x: np.ndarray, y: np.ndarray, bounds: Bounds2D) -> np.ndarray:
    xmin, ymin, xmax, ymax = bounds
    return (x >= xmin) & (x <= xmax) & (y >= ymin) & (y <= ymax)


class _Collector:
    """Accumulates xyz, classification and RGB of point records (laspy) that pass a bounds filter."""

    def __init__(self, bounds: Bounds2D | None) -> None:
        self.bounds = bounds
        self.parts: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = []
        self.has_cls: bool | None = None
        self.has_rgb: bool | None = None

    def add(self, record: Any, x: np.ndarray | None = None, y: np.ndarray | None = None,
            z: np.ndarray | None = None) -> None:
        """``record``: a laspy point record; x/y/z override its scaled coordinates (EPT binary)."""
        x = np.asarray(record.x if x is None else x, dtype=np.float64)
        y = np.asarray(record.y if y is None else y, dtype=np.float64)
        z = np.asarray(record.z if z is None else z, dtype=np.float64)
        names = set(getattr(getattr(record, "point_format", None), "dimension_names", ()) or record.dtype.names)
        keep = _inside(x, y, self.bounds) if self.bounds is not None else slice(None)
        cls = np.asarray(record["classification"], dtype=np.uint8)[keep] if "classification" in names else None
        rgb = None
        if {"red", "green", "blue"} <= names:
            rgb = np.column_stack([np.asarray(record["red"])[keep], np.asarray(record["green"])[keep],
                                   np.asarray(record["blue"])[keep]]).astype(np.uint16)
        self.has_cls = (cls is not None) if self.has_cls is None else (self.has_cls and cls is not None)
        self.has_rgb = (rgb is not None) if self.has_rgb is None else (self.has_rgb and rgb is not None)
        self.parts.append((np.column_stack([x[keep], y[keep], z[keep]]), cls, rgb))

    def cloud(self, crs: CRS | None, source: str) -> PointCloud:
        if not self.parts:
            return PointCloud(np.empty((0, 3)), crs, source=source)
        xyz = np.concatenate([p[0] for p in self.parts])
        cls = np.concatenate([p[1] for p in self.parts]) if self.has_cls else None
        rgb = np.concatenate([p[2] for p in self.parts]) if self.has_rgb else None
        return PointCloud(xyz=xyz, crs=crs, classification=cls, rgb=rgb, source=source)


def _las_chunks(path: Path, bounds: Bounds2D | None, progress: ProgressFn, is_cancelled: CancelFn | None) -> PointCloud:
    """LAS/LAZ (and COPC read as plain LAZ) in chunks of CHUNK_POINTS, keeping points in ``bounds``."""
    import laspy

    with laspy.open(str(path)) as reader:
        header = reader.header
        total = max(1, int(header.point_count))
        hmin, hmax = header.mins, header.maxs
        if bounds is not None and (bounds[0] <= hmin[0] and bounds[1] <= hmin[1]
                                   and bounds[2] >= hmax[0] and bounds[3] >= hmax[1]):
            bounds = None  # the whole file is inside: no filtering needed
        collector = _Collector(bounds)
        done = 0
        for chunk in reader.chunk_iterator(CHUNK_POINTS):
            _check(is_cancelled, path)
            collector.add(chunk)
            done += len(chunk)
            progress(done / total, f"reading {path.name}: {done:,} of {total:,} points")
        return collector.cloud(_las_crs(header), str(path))


def _copc(path: Path, bounds: Bounds2D | None, progress: ProgressFn, is_cancelled: CancelFn | None) -> PointCloud:
    """COPC: only the octree nodes that intersect ``bounds`` are fetched and decompressed."""
    if bounds is None:
        return _las_chunks(path, None, progress, is_cancelled)
    from laspy import CopcReader
    from laspy.copc import Bounds

    _check(is_cancelled, path)
    with CopcReader.open(str(path)) as reader:
        progress(0.0, f"reading {path.name} (COPC nodes inside the extent)")
        record = reader.query(bounds=Bounds(mins=np.array(bounds[:2], float), maxs=np.array(bounds[2:], float)))
        collector = _Collector(bounds)
        collector.add(record)
        crs = _las_crs(reader.header)
    progress(1.0, f"read {path.name}")
    return collector.cloud(crs, str(path))


def _ept_hierarchy(root: Path, meta_path: Path) -> dict[str, int]:
    """All ``D-X-Y-Z`` → point count of an EPT dataset (following sub-hierarchy files)."""
    counts: dict[str, int] = {}
    pending = ["0-0-0-0"]
    while pending:
        key = pending.pop()
        page = root / "ept-hierarchy" / f"{key}.json"
        try:
            entries = json.loads(page.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{meta_path}: the EPT hierarchy file {page} is missing or broken ({exc}). "
                             "Copy the complete dataset (ept-hierarchy folder included).") from None
        for node, count in entries.items():
            if int(count) == -1:
                pending.append(node)
            elif int(count) > 0:
                counts[node] = int(count)
    return counts


def _node_bounds(cube: Cube, key: str) -> tuple[float, float, float, float]:
    d, x, y, _ = (int(v) for v in key.split("-"))
    size = (cube[3] - cube[0]) / (1 << d)
    return cube[0] + x * size, cube[1] + y * size, cube[0] + (x + 1) * size, cube[1] + (y + 1) * size


_EPT_TYPES = {("signed", 1): "i1", ("signed", 2): "i2", ("signed", 4): "i4", ("signed", 8): "i8",
              ("unsigned", 1): "u1", ("unsigned", 2): "u2", ("unsigned", 4): "u4", ("unsigned", 8): "u8",
              ("float", 4): "f4", ("float", 8): "f8"}


class _BinaryRecord:
    """An EPT ``binary`` node as a record with x/y/z scaled and lower-case attribute names."""

    def __init__(self, data: np.ndarray, schema: list[dict]) -> None:
        self.data = data
        self.dtype = np.dtype([(d["name"].lower(), data.dtype[d["name"]]) for d in schema])
        self.scaled = {}
        for d in schema:
            if d["name"] in ("X", "Y", "Z"):
                self.scaled[d["name"].lower()] = data[d["name"]] * d.get("scale", 1.0) + d.get("offset", 0.0)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.data[{n.lower(): n for n in self.data.dtype.names}[name]]


@dataclass
class EptDataset:
    """An EPT dataset's metadata and the nodes whose cube meets the bounds (all when none)."""

    meta_path: Path
    meta: dict
    counts: dict[str, int]
    nodes: list[str]

    @property
    def data_type(self) -> str:
        return str(self.meta["dataType"])

    @property
    def crs(self) -> CRS | None:
        return _ept_crs(self.meta, self.meta_path)

    def read_node(self, key: str) -> Any:
        """A node's points: laspy points (laszip data) or a :class:`_BinaryRecord` (binary data)."""
        import laspy

        node_file = self.meta_path.parent / "ept-data" / f"{key}{EPT_DATA_SUFFIX[self.data_type]}"
        try:
            if self.data_type == "laszip":
                return laspy.read(str(node_file)).points
            schema = self.meta["schema"]
            dtype = np.dtype([(d["name"], "<" + _EPT_TYPES[(d["type"], int(d["size"]))]) for d in schema])
            return _BinaryRecord(np.fromfile(node_file, dtype=dtype), schema)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - a missing/corrupt node makes the dataset unusable
            raise InputError(f"{self.meta_path}: cannot read the EPT node {node_file.name} ({type(exc).__name__}: "
                             f"{exc}). Copy the complete dataset (ept-data folder included).") from None


def open_ept(meta_path: Path, bounds: Bounds2D | None) -> EptDataset:
    """Read an EPT dataset's metadata and hierarchy; refuse data types we cannot decode."""
    meta = _read_ept_json(meta_path)
    cube = meta["bounds"]
    counts = _ept_hierarchy(meta_path.parent, meta_path)

    def hits(key: str) -> bool:
        b = _node_bounds(cube, key)
        return bounds is None or not (b[0] > bounds[2] or b[2] < bounds[0] or b[1] > bounds[3] or b[3] < bounds[1])

    if meta["dataType"] == "zstandard":
        raise InputError(f"{meta_path}: EPT data type 'zstandard' is not supported; rebuild the dataset with "
                         "laszip data (entwine build --dataType laszip) or convert it to LAZ/COPC.")
    return EptDataset(meta_path, meta, counts, [k for k in sorted(counts) if hits(k)])


def _ept(meta_path: Path, bounds: Bounds2D | None, progress: ProgressFn, is_cancelled: CancelFn | None) -> PointCloud:
    """EPT: the nodes whose cube intersects ``bounds`` (all nodes when None), LAZ or binary."""
    ds = open_ept(meta_path, bounds)
    collector = _Collector(bounds)
    total = max(1, sum(ds.counts[k] for k in ds.nodes))
    done = 0
    for key in ds.nodes:
        _check(is_cancelled, meta_path)
        node = ds.read_node(key)
        if isinstance(node, _BinaryRecord):
            collector.add(node, node.scaled["x"], node.scaled["y"], node.scaled["z"])
        else:
            collector.add(node)
        done += ds.counts[key]
        progress(done / total, f"reading {meta_path.parent.name}: {done:,} of {total:,} points")
    return collector.cloud(ds.crs, str(meta_path))


def read_points(path: str | os.PathLike[str], crs: str | CRS | None = None,
                bounds: tuple[float, float, float, float] | None = None,
                progress: ProgressFn | None = None, is_cancelled: CancelFn | None = None) -> PointCloud:
    """Read any supported point source; ``bounds`` (xmin, ymin, xmax, ymax, in the source's CRS)
    keeps only the points inside, reading no more of the file than needed; ``crs`` overrides the
    file's CRS."""
    fmt = source_format(path)
    text = str(path)[len("file://"):] if str(path).startswith("file://") else str(path)
    p = Path(text).expanduser()
    report = progress or (lambda f, m: None)
    user_crs = parse_crs(crs)
    try:
        if fmt == "ept":
            meta_path = ept_json_path(p)
            assert meta_path is not None  # source_format said "ept"
            cloud = _ept(meta_path, bounds, report, is_cancelled)
        elif fmt == "copc":
            cloud = _copc(p, bounds, report, is_cancelled)
        elif fmt in ("las", "laz"):
            cloud = _las_chunks(p, bounds, report, is_cancelled)
        else:
            cloud = read_point_cloud(p)
            if bounds is not None:
                cloud = cloud.subset(_inside(cloud.xyz[:, 0], cloud.xyz[:, 1], bounds))
    except (InputError, CancelledError):
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure means a corrupt/unsupported file
        raise InputError(f"{p}: cannot read this {fmt.upper()} point cloud ({type(exc).__name__}: {exc}). "
                         "Is it complete and a valid point cloud?") from None
    finite = np.isfinite(cloud.xyz).all(axis=1)
    if not finite.all():
        cloud = cloud.subset(finite)
    if len(cloud) == 0:
        if bounds is not None:
            raise InputError(
                f"{p}: no points inside {bounds[0]:.1f},{bounds[1]:.1f},{bounds[2]:.1f},{bounds[3]:.1f} "
                "(the extent, in the point cloud's CRS). Choose an extent that covers the points.")
        raise InputError(f"{p}: the point cloud contains no (finite) points.")
    if user_crs is not None:
        cloud = replace(cloud, crs=user_crs)
    return cloud


def expand_bounds(bounds: Bounds2D | None, margin: float) -> Bounds2D | None:
    """``bounds`` grown by ``margin`` on every side (None stays None)."""
    if bounds is None:
        return None
    return bounds[0] - margin, bounds[1] - margin, bounds[2] + margin, bounds[3] + margin


def map_units_per_metre(crs: CRS | None) -> float:
    """How many map units make one metre (1 for metric or unknown CRSs)."""
    if crs is None or crs.is_geographic:
        return 1.0
    try:
        _, factor = crs.linear_units_factor
    except Exception:  # noqa: BLE001 - unknown units: assume metres
        return 1.0
    return 1.0 / float(factor) if factor else 1.0


# -- writing EPT -------------------------------------------------------------------------------------

def _octree(xyz: np.ndarray, cube: Cube, capacity: int, max_depth: int, seed: int) -> Iterator[tuple[str, np.ndarray]]:
    """(node key, point indices): each node keeps a random ``capacity`` of its points, the rest go
    to its eight children (what Entwine does, coarsely), down to ``max_depth``."""
    rng = np.random.default_rng(seed)
    stack = [((0, 0, 0, 0), rng.permutation(xyz.shape[0]))]
    while stack:
        (d, x, y, z), idx = stack.pop()
        if idx.size <= capacity or d == max_depth:
            yield f"{d}-{x}-{y}-{z}", np.sort(idx)
            continue
        yield f"{d}-{x}-{y}-{z}", np.sort(idx[:capacity])
        rest = idx[capacity:]
        size = (cube[3] - cube[0]) / (1 << d)
        mid = np.array([cube[0] + (x + 0.5) * size, cube[1] + (y + 0.5) * size, cube[2] + (z + 0.5) * size])
        octant = ((xyz[rest] >= mid) * np.array([1, 2, 4])).sum(axis=1)
        for o in range(8):
            sel = rest[octant == o]
            if sel.size:
                stack.append(((d + 1, 2 * x + (o & 1), 2 * y + ((o >> 1) & 1), 2 * z + ((o >> 2) & 1)), sel))


def write_ept(src: str | os.PathLike[str], out_dir: str | os.PathLike[str], crs: str | CRS | None = None,
              node_capacity: int = 100_000, max_depth: int = 6, seed: int = 0) -> Path:
    """Write the LAS/LAZ ``src`` as an EPT dataset (LAZ nodes, point format 3 or 1) in ``out_dir``.

    QGIS without PDAL (Debian's 3.22) can open the result as a point-cloud layer. ``crs`` sets the
    dataset's CRS when the file has none. The folder appears complete or not at all. Returns the
    path of the ``ept.json``.
    """
    import laspy

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out}: exists and is not an empty folder; choose a new folder for the EPT dataset.")
    if not out.parent.is_dir():
        raise InputError(f"{out}: the folder {out.parent} does not exist. Create it first.")
    las = laspy.read(str(src))
    dims = set(las.point_format.dimension_names)
    point_format = 3 if {"red", "green", "blue"} <= dims else 1
    las = laspy.convert(las, point_format_id=point_format, file_version="1.2")
    the_crs = parse_crs(crs) or _las_crs(las.header)
    xyz = np.column_stack([np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)])
    mins, maxs = xyz.min(axis=0), xyz.max(axis=0)
    half = float((maxs - mins).max()) / 2 + 1.0
    centre = (mins + maxs) / 2
    cube = [*(centre - half), *(centre + half)]
    scales, offsets = las.header.scales, las.header.offsets
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    try:
        (tmp / "ept-data").mkdir()
        (tmp / "ept-hierarchy").mkdir()
        hierarchy = {}
        for key, idx in _octree(xyz, cube, node_capacity, max_depth, seed):
            node = laspy.LasData(laspy.LasHeader(point_format=point_format, version="1.2"))
            node.header.scales, node.header.offsets = scales, offsets
            node.points = las.points[idx].copy()
            node.write(str(tmp / "ept-data" / f"{key}.laz"))
            hierarchy[key] = int(idx.size)
        (tmp / "ept-hierarchy" / "0-0-0-0.json").write_text(json.dumps(hierarchy, indent=1), encoding="utf-8")
        schema: list[dict[str, Any]] = [
            {"name": axis, "type": "signed", "size": 4, "scale": float(scales[i]), "offset": float(offsets[i])}
            for i, axis in enumerate("XYZ")
        ] + [
            {"name": "Intensity", "type": "unsigned", "size": 2},
            {"name": "ReturnNumber", "type": "unsigned", "size": 1},
            {"name": "NumberOfReturns", "type": "unsigned", "size": 1},
            {"name": "ScanDirectionFlag", "type": "unsigned", "size": 1},
            {"name": "EdgeOfFlightLine", "type": "unsigned", "size": 1},
            {"name": "Classification", "type": "unsigned", "size": 1},
            {"name": "ScanAngleRank", "type": "float", "size": 4},
            {"name": "UserData", "type": "unsigned", "size": 1},
            {"name": "PointSourceId", "type": "unsigned", "size": 2},
            {"name": "GpsTime", "type": "float", "size": 8},
        ] + ([{"name": c, "type": "unsigned", "size": 2} for c in ("Red", "Green", "Blue")] if point_format == 3 else [])
        # Per-dimension statistics, as Entwine writes them: QGIS reads them to choose its renderer
        # (8- or 16-bit colour stretch); without them 16-bit RGB renders as plain white.
        las_names = {"X": "x", "Y": "y", "Z": "z", "ReturnNumber": "return_number",
                     "NumberOfReturns": "number_of_returns", "ScanDirectionFlag": "scan_direction_flag",
                     "EdgeOfFlightLine": "edge_of_flight_line", "ScanAngleRank": "scan_angle_rank",
                     "UserData": "user_data", "PointSourceId": "point_source_id", "GpsTime": "gps_time"}
        for dim in schema:
            values = np.asarray(las[las_names.get(dim["name"], dim["name"].lower())], dtype=np.float64)
            dim.update(count=int(values.size), minimum=float(values.min()), maximum=float(values.max()),
                       mean=float(values.mean()), stddev=float(values.std()), variance=float(values.var()))
        srs = {}
        if the_crs is not None:
            srs["wkt"] = the_crs.to_wkt()
            if the_crs.to_epsg():
                srs.update(authority="EPSG", horizontal=str(the_crs.to_epsg()))
        meta = {
            "bounds": cube, "boundsConforming": [*mins.tolist(), *maxs.tolist()], "dataType": "laszip",
            "hierarchyType": "json", "points": int(xyz.shape[0]), "schema": schema, "span": 128,
            "srs": srs, "version": "1.0.0",
        }
        (tmp / "ept.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out / "ept.json"

"""Point-cloud reading (LAS/LAZ, PLY, NPZ) into one in-memory form.

Everything downstream works on :class:`PointCloud`: an N×3 float64 array in a known CRS, with the
optional attributes the tools use (LiDAR classification for reference DSMs, RGB for orthos built
from coloured clouds). The CRS comes from the file or from the user; a cloud whose CRS is unknown
is refused where mixing CRSs could silently shift data.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.crs import CRS

from .crs import describe_crs, parse_crs
from .errors import InputError, param

log = logging.getLogger(__name__)
SUPPORTED_SUFFIXES = (".las", ".laz", ".ply", ".npz")


@dataclass(frozen=True)
class PointCloud:
    """Points with their CRS and optional per-point attributes."""

    xyz: np.ndarray  # (N, 3) float64
    crs: CRS | None
    classification: np.ndarray | None = None  # (N,) uint8
    rgb: np.ndarray | None = None  # (N, 3) uint16
    source: str = "<memory>"

    def __post_init__(self) -> None:
        if self.xyz.ndim != 2 or self.xyz.shape[1] != 3:
            raise ValueError(f"xyz must be (N, 3), got {self.xyz.shape}")

    def __len__(self) -> int:
        return int(self.xyz.shape[0])

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the points."""
        mn = self.xyz[:, :2].min(axis=0)
        mx = self.xyz[:, :2].max(axis=0)
        return float(mn[0]), float(mn[1]), float(mx[0]), float(mx[1])

    def subset(self, mask: np.ndarray) -> PointCloud:
        """The points selected by a boolean mask or index array, attributes kept."""
        return replace(
            self,
            xyz=self.xyz[mask],
            classification=None if self.classification is None else self.classification[mask],
            rgb=None if self.rgb is None else self.rgb[mask],
        )

    def require_crs(self, hint: str | None = None) -> CRS:
        """The CRS, or a clear error telling the user how to supply it (``hint``: where to give it;
        default: the ``points_crs`` parameter)."""
        hint = hint or param("points_crs")
        if self.crs is None:
            raise InputError(
                f"{self.source}: the point cloud has no coordinate reference system in its header. "
                f"Give it with {hint} (for example EPSG:2154 for Lambert-93, EPSG:28992 for RD New)."
            )
        return self.crs


def drop_non_finite(cloud: PointCloud) -> PointCloud:
    """The cloud without points whose x, y or z is NaN or infinite, saying how many were dropped."""
    finite = np.isfinite(cloud.xyz).all(axis=1)
    if finite.all():
        return cloud
    log.warning("%s: ignored %s of %s points with NaN or infinite coordinates.", cloud.source,
                f"{int((~finite).sum()):,}", f"{finite.size:,}")
    return cloud.subset(finite)


def read_point_cloud(path: str | os.PathLike[str], crs: str | CRS | None = None) -> PointCloud:
    """Read LAS/LAZ/PLY/NPZ (and EPT, see :mod:`.pointsources`); ``crs`` supplies (or overrides) the CRS."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"Point cloud file not found: {p}. Check the path.")
    if p.is_dir() or p.suffix.lower() == ".json":  # an EPT dataset (ept.json or its folder)
        from .pointsources import read_points

        return read_points(p, crs=crs)
    if not p.is_file():
        raise InputError(f"Point cloud path is not a file: {p}.")
    suffix = p.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise InputError(
            f"{p}: unsupported point cloud format '{p.suffix}'. Use LAS, LAZ, PLY or NPZ."
        )
    user_crs = parse_crs(crs)
    reader = {".las": _read_las, ".laz": _read_las, ".ply": _read_ply, ".npz": _read_npz}[suffix]
    try:
        cloud = reader(p)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure means a corrupt/unsupported file
        raise InputError(
            f"{p}: cannot read this {suffix[1:].upper()} file ({type(exc).__name__}: {exc}). "
            "Is it complete and a valid point cloud?"
        ) from None
    cloud = drop_non_finite(cloud)
    if len(cloud) == 0:
        raise InputError(f"{p}: the point cloud contains no (finite) points.")
    if user_crs is not None:
        cloud = replace(cloud, crs=user_crs)
    return cloud


def _read_las(path: Path) -> PointCloud:
    import laspy

    las = laspy.read(str(path))
    xyz = np.column_stack(
        [np.asarray(las.x, dtype=np.float64), np.asarray(las.y, dtype=np.float64),
         np.asarray(las.z, dtype=np.float64)]
    )
    try:
        crs_obj = las.header.parse_crs()
        crs = CRS.from_wkt(crs_obj.to_wkt()) if crs_obj is not None else None
    except Exception:  # noqa: BLE001 - an unreadable CRS record counts as "no CRS"
        crs = None
    dims = set(las.point_format.dimension_names)
    classification = np.asarray(las.classification, dtype=np.uint8) if "classification" in dims else None
    rgb = None
    if {"red", "green", "blue"} <= dims:
        rgb = np.column_stack([np.asarray(las.red), np.asarray(las.green), np.asarray(las.blue)]).astype(np.uint16)
    return PointCloud(xyz=xyz, crs=crs, classification=classification, rgb=rgb, source=str(path))


_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


def _read_ply(path: Path) -> PointCloud:
    """Vertex x, y, z (+ red/green/blue, classification) from ASCII or binary PLY."""
    with open(path, "rb") as fh:
        if fh.readline().strip() != b"ply":
            raise InputError(f"{path}: not a PLY file (missing 'ply' magic line).")
        fmt: str | None = None
        elements: list[dict[str, Any]] = []
        current: dict[str, Any] = {}
        while True:
            line = fh.readline()
            if not line:
                raise InputError(f"{path}: PLY header has no 'end_header'.")
            words = line.decode("ascii", "replace").split()
            if not words or words[0] in ("comment", "obj_info"):
                continue
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                current = {"name": words[1], "count": int(words[2]), "props": []}
                elements.append(current)
            elif words[0] == "property":
                if words[1] == "list":
                    if current["name"] == "vertex":
                        raise InputError(f"{path}: list properties on vertices are not supported.")
                    current["props"].append(("__list__", "u1"))
                else:
                    current["props"].append((words[2], _PLY_TYPES[words[1]]))
            elif words[0] == "end_header":
                break
        if not elements or elements[0]["name"] != "vertex":
            raise InputError(f"{path}: the first PLY element must be 'vertex'.")
        vertex = elements[0]
        names = [n for n, _ in vertex["props"]]
        if not {"x", "y", "z"} <= set(names):
            raise InputError(f"{path}: PLY vertices lack x, y or z properties.")
        if fmt == "ascii":
            table = np.loadtxt(fh, max_rows=vertex["count"], ndmin=2)
            if table.shape[0] != vertex["count"] or table.shape[1] < len(names):
                raise InputError(f"{path}: file is truncated ({table.shape[0]} of {vertex['count']} vertices).")
            cols = {n: table[:, i] for i, n in enumerate(names)}
        elif fmt in ("binary_little_endian", "binary_big_endian"):
            order = "<" if fmt == "binary_little_endian" else ">"
            dtype = np.dtype([(n, order + t) for n, t in vertex["props"]])
            data = np.fromfile(fh, dtype=dtype, count=vertex["count"])
            if data.shape[0] != vertex["count"]:
                raise InputError(f"{path}: file is truncated ({data.shape[0]} of {vertex['count']} vertices).")
            cols = {n: data[n] for n in names}
        else:
            raise InputError(f"{path}: unknown PLY format '{fmt}'.")
    xyz = np.column_stack([cols["x"], cols["y"], cols["z"]]).astype(np.float64)
    rgb = None
    if {"red", "green", "blue"} <= set(names):
        rgb = np.column_stack([cols["red"], cols["green"], cols["blue"]]).astype(np.uint16)
    cls = np.asarray(cols["classification"], dtype=np.uint8) if "classification" in cols else None
    return PointCloud(xyz=xyz, crs=None, classification=cls, rgb=rgb, source=str(path))


def _read_npz(path: Path) -> PointCloud:
    """NPZ with ``xyz`` or ``points`` (N×3) or separate ``x``, ``y``, ``z``; optional ``crs``."""
    with np.load(path, allow_pickle=False) as data:
        keys = set(data.files)
        if "xyz" in keys or "points" in keys:
            xyz = np.asarray(data["xyz" if "xyz" in keys else "points"], dtype=np.float64)
        elif {"x", "y", "z"} <= keys:
            xyz = np.column_stack([data["x"], data["y"], data["z"]]).astype(np.float64)
        else:
            raise InputError(
                f"{path}: NPZ has no 'xyz'/'points' array or 'x','y','z' arrays (found: {sorted(keys)})."
            )
        if xyz.ndim != 2 or xyz.shape[1] < 3:
            raise InputError(f"{path}: point array must be N×3, got shape {xyz.shape}.")
        xyz = xyz[:, :3]
        crs = parse_crs(str(data["crs"]), what=f"{path} 'crs' entry") if "crs" in keys else None
        cls = np.asarray(data["classification"], dtype=np.uint8) if "classification" in keys else None
        rgb = np.asarray(data["rgb"], dtype=np.uint16) if "rgb" in keys else None
    return PointCloud(xyz=xyz, crs=crs, classification=cls, rgb=rgb, source=str(path))


def reproject_point_cloud(cloud: PointCloud, dst_crs: CRS) -> PointCloud:
    """Reproject the points (x, y; z kept) to ``dst_crs`` — never mix CRSs silently."""
    src = cloud.require_crs()
    if src == dst_crs:
        return cloud
    from rasterio.warp import transform

    xs, ys = transform(src, dst_crs, cloud.xyz[:, 0], cloud.xyz[:, 1])
    xyz = np.column_stack([np.asarray(xs), np.asarray(ys), cloud.xyz[:, 2]])
    if not np.isfinite(xyz).all():
        raise InputError(
            f"{cloud.source}: reprojection from {describe_crs(src)} to {describe_crs(dst_crs)} "
            "failed for some points; check that the CRSs are right."
        )
    return replace(cloud, xyz=xyz, crs=dst_crs)


def write_point_cloud_npz(path: str | os.PathLike[str], cloud: PointCloud) -> None:
    """Store a cloud as NPZ (used by tests and simulations); written atomically."""
    from .outputs import atomic_path

    arrays: dict[str, np.ndarray] = {"xyz": cloud.xyz}
    if cloud.crs is not None:
        arrays["crs"] = np.array(cloud.crs.to_wkt())
    if cloud.classification is not None:
        arrays["classification"] = cloud.classification
    if cloud.rgb is not None:
        arrays["rgb"] = cloud.rgb
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)

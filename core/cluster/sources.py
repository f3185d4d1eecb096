"""Point sources as a stream of (n, 3) float64 chunks, in the order one process reads them.

LAS, LAZ and COPC go through laspy's chunk iterator (``CHUNK_POINTS`` at a time: memory is one
chunk); EPT datasets node by node, in the order of ``core.pointsources`` (with ``bounds``, only the
nodes that intersect them are read); PLY and NPZ files and in-memory clouds have no streaming
reader and are read whole, then cut into chunks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from rasterio.crs import CRS

from ..crs import parse_crs
from ..errors import InputError
from ..pointcloud import PointCloud, read_point_cloud
from ..pointsources import CHUNK_POINTS, ept_json_path, source_format


@dataclass
class ChunkSource:
    """Chunks of xyz, their expected total (None when unknown), the CRS and a label for messages."""

    chunks: Iterator[np.ndarray]
    total: int | None
    crs: CRS | None
    source: str


def _xyz(record) -> np.ndarray:
    return np.column_stack([np.asarray(record.x, np.float64), np.asarray(record.y, np.float64),
                            np.asarray(record.z, np.float64)])


def _las(path: Path) -> ChunkSource:
    import laspy

    from ..pointsources import _las_crs

    try:
        reader = laspy.open(str(path))
    except Exception as exc:  # noqa: BLE001 - a corrupt header
        raise InputError(f"{path}: cannot read this point cloud ({type(exc).__name__}: {exc}). "
                         "Is it complete and a valid LAS/LAZ file?") from None
    header = reader.header

    def chunks() -> Iterator[np.ndarray]:
        with reader:
            try:
                for chunk in reader.chunk_iterator(CHUNK_POINTS):
                    yield _xyz(chunk)
            except InputError:
                raise
            except Exception as exc:  # noqa: BLE001 - a truncated or corrupt body
                raise InputError(f"{path}: cannot read this point cloud ({type(exc).__name__}: {exc}). "
                                 "Is it complete and a valid LAS/LAZ file?") from None

    return ChunkSource(chunks(), int(header.point_count), _las_crs(header), str(path))


def _ept(meta_path: Path, bounds) -> ChunkSource:
    from ..pointsources import _BinaryRecord, open_ept

    ds = open_ept(meta_path, bounds)

    def chunks() -> Iterator[np.ndarray]:
        for key in ds.nodes:
            node = ds.read_node(key)
            if isinstance(node, _BinaryRecord):
                yield np.column_stack([np.asarray(node.scaled[a], np.float64) for a in ("x", "y", "z")])
            else:
                yield _xyz(node)

    return ChunkSource(chunks(), sum(ds.counts[k] for k in ds.nodes), ds.crs, str(meta_path))


def _whole(cloud: PointCloud) -> ChunkSource:
    xyz = cloud.xyz

    def chunks() -> Iterator[np.ndarray]:
        for a in range(0, xyz.shape[0], CHUNK_POINTS):
            yield np.asarray(xyz[a:a + CHUNK_POINTS], np.float64)

    return ChunkSource(chunks(), int(xyz.shape[0]), cloud.crs, cloud.source)


def open_chunks(points: Any, points_crs: "str | CRS | None" = None, bounds=None) -> ChunkSource:
    """A :class:`ChunkSource` for a path (LAS, LAZ, COPC, EPT, PLY, NPZ) or a PointCloud.

    ``points_crs`` overrides the file's CRS; ``bounds`` lets EPT skip the nodes outside them.
    """
    user_crs = parse_crs(points_crs) if points_crs is not None else None
    if isinstance(points, PointCloud):
        src = _whole(points)
    else:
        fmt = source_format(points)
        p = Path(str(points)[len("file://"):] if str(points).startswith("file://") else os.fspath(points)).expanduser()
        if fmt in ("las", "laz", "copc"):
            src = _las(p)
        elif fmt == "ept":
            src = _ept(ept_json_path(p), bounds)
        else:
            src = _whole(read_point_cloud(p))
    if user_crs is not None:
        src = replace(src, crs=user_crs)
    return src

"""A minimal COPC writer for tests (laspy reads COPC but cannot write it; PDAL is not installed).

The file follows the COPC 1.0 specification: LAZ 1.4, point format 7, the ``copc`` info VLR first,
one variable-size LAZ chunk per octree node, the hierarchy as an EVLR. Nodes are the root (a random
subset) and its depth-1 children, so a spatial query has nodes to skip.
"""
from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np


def _vlr(user_id: bytes, record_id: int, data: bytes, description: bytes = b"") -> bytes:
    return struct.pack("<H16sHH32s", 0, user_id, record_id, len(data), description) + data


def write_copc(src: Path, dst: Path, crs_wkt: str | None = None, root_points: int = 20_000, seed: int = 0) -> Path:
    """Write the points of LAS/LAZ ``src`` as a COPC file ``dst``; returns ``dst``."""
    import laspy
    import lazrs

    las = laspy.convert(laspy.read(str(src)), point_format_id=7, file_version="1.4")
    xyz = np.column_stack([np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)])
    mins, maxs = xyz.min(axis=0), xyz.max(axis=0)
    half = float((maxs - mins).max()) / 2 + 1.0
    centre = (mins + maxs) / 2
    order = np.random.default_rng(seed).permutation(len(xyz))
    nodes = {(0, 0, 0, 0): np.sort(order[:root_points])}
    rest = order[root_points:]
    octant = ((xyz[rest] >= centre) * np.array([1, 2, 4])).sum(axis=1)
    for o in range(8):
        sel = np.sort(rest[octant == o])
        if sel.size:
            nodes[(1, o & 1, (o >> 1) & 1, (o >> 2) & 1)] = sel

    # Header and VLRs written by laspy (uncompressed), with a placeholder COPC info VLR first.
    vlrs = [laspy.VLR(user_id="copc", record_id=1, description="copc info", record_data=bytes(160))]
    if crs_wkt:
        vlrs.append(laspy.VLR(user_id="LASF_Projection", record_id=2112, description="OGC WKT",
                              record_data=crs_wkt.encode() + b"\0"))
    header = laspy.LasHeader(point_format=7, version="1.4")
    header.scales, header.offsets = las.header.scales, las.header.offsets
    header.vlrs = vlrs
    plain = laspy.LasData(header)
    plain.points = las.points[np.concatenate(list(nodes.values()))].copy()
    buffer = io.BytesIO()
    plain.write(buffer)
    raw = bytearray(buffer.getvalue())
    offset_to_points = struct.unpack_from("<I", raw, 96)[0]
    head = raw[:offset_to_points]
    # Add the laszip VLR (variable-size chunks) and mark the point format as compressed.
    laz_vlr = lazrs.LazVlr.new_for_compression(7, 0, True)
    head += _vlr(b"laszip encoded", 22204, bytes(laz_vlr.record_data()))
    struct.pack_into("<I", head, 96, len(head))
    struct.pack_into("<I", head, 100, struct.unpack_from("<I", head, 100)[0] + 1)
    head[104] = 7 | 0x80
    # One LAZ chunk per node.
    record_len = plain.header.point_format.size
    body = io.BytesIO()
    compressor = lazrs.LasZipCompressor(body, laz_vlr)
    compressor.reserve_offset_to_chunk_table()
    entries, start = [], len(head) + 8
    data = np.frombuffer(plain.points.array.tobytes(), np.uint8).reshape(-1, record_len)
    first = 0
    for key, idx in nodes.items():
        compressor.compress_many(data[first:first + idx.size].tobytes())
        compressor.finish_current_chunk()
        end = len(head) + body.tell()
        entries.append((key, start, end - start, idx.size))
        start, first = end, first + idx.size
    compressor.done()
    body = bytearray(body.getvalue())
    # The chunk-table offset was written relative to the body; the file has the header before it.
    struct.pack_into("<q", body, 0, struct.unpack_from("<q", body, 0)[0] + len(head))
    points_end = len(head) + len(body)
    hierarchy = b"".join(struct.pack("<iiiiQii", *key, off, size, count) for key, off, size, count in entries)
    evlr = struct.pack("<H16sHQ32s", 0, b"copc", 1000, len(hierarchy), b"EPT hierarchy") + hierarchy
    info = struct.pack("<3dddQQdd", *centre, half, 2 * half / 128, points_end + 60, len(hierarchy), 0.0, 0.0) + bytes(88)
    copc_vlr_at = 375 + 54  # right after the 1.4 header and the first VLR's header
    head[copc_vlr_at:copc_vlr_at + 160] = info
    struct.pack_into("<QI", head, 235, points_end, 1)  # start of first EVLR, number of EVLRs
    dst.write_bytes(bytes(head) + bytes(body) + evlr)
    return dst

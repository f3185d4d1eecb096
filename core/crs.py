"""CRS parsing with messages a GIS user can act on."""
from __future__ import annotations

from typing import TYPE_CHECKING

from rasterio.crs import CRS
from rasterio.errors import CRSError

from .errors import InputError, param

if TYPE_CHECKING:
    import numpy as np


def parse_crs(value: str | CRS | None, what: str | None = None) -> CRS | None:
    """Parse 'EPSG:2154', a WKT or PROJ string; ``None`` stays ``None``.

    ``what`` names the value in errors; default: the ``points_crs`` parameter.
    """
    what = what or param("points_crs")
    if value is None or value == "":
        return None
    if isinstance(value, CRS):
        return value
    try:
        return CRS.from_user_input(value)
    except (CRSError, ValueError, TypeError) as exc:
        raise InputError(
            f"{what}: '{value}' is not a coordinate reference system I know ({exc}). "
            "Give it as EPSG:XXXX (e.g. EPSG:2154), a WKT or a PROJ string."
        ) from None


def describe_crs(crs: CRS | None) -> str:
    """Short human label: 'EPSG:2154' when possible, else the CRS name."""
    if crs is None:
        return "no CRS"
    epsg = crs.to_epsg()
    if epsg:
        return f"EPSG:{epsg}"
    try:
        return crs.to_dict().get("proj", "") or crs.to_wkt()[:60]
    except Exception:  # noqa: BLE001 - purely cosmetic
        return crs.to_string()[:60]


def check_coordinates_fit_crs(xyz: np.ndarray, crs: CRS | None, source: str, parameter: str = "points_crs") -> None:
    """Refuse a geographic CRS (degrees) on coordinates that cannot be degrees.

    Why: ``points_crs="EPSG:4326"`` on metric coordinates used to give a DSM with metre-sized
    "degrees" and a silently wrong georeference.
    """
    if crs is None or not crs.is_geographic or len(xyz) == 0:
        return
    import numpy as np

    mn, mx = np.min(xyz[:, :2], axis=0), np.max(xyz[:, :2], axis=0)
    if mn[0] >= -360.0 and mx[0] <= 360.0 and mn[1] >= -90.0 and mx[1] <= 90.0:
        return
    raise InputError(
        f"{source}: the coordinates (x {mn[0]:.2f}..{mx[0]:.2f}, y {mn[1]:.2f}..{mx[1]:.2f}) cannot be "
        f"longitudes/latitudes, but the CRS {describe_crs(crs)} is in degrees. Give the CRS the coordinates "
        f"are really in with {param(parameter)} (a projected CRS such as EPSG:2154 or a UTM zone)."
    )

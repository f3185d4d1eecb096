"""CRS parsing with messages a GIS user can act on."""
from __future__ import annotations

from rasterio.crs import CRS
from rasterio.errors import CRSError

from .errors import InputError


def parse_crs(value: "str | CRS | None", what: str = "--points-crs") -> CRS | None:
    """Parse 'EPSG:2154', a WKT or PROJ string; ``None`` stays ``None``."""
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

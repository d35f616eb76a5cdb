"""Fence geometry the registry validates on import: a GeoJSON polygon in local metres.

Each fence gets its own local equirectangular frame (origin at the polygon's centroid),
in which areas and margins are in metres at that latitude; over a community-sized area
the error is well under a metre. The detectors compile the same frames (detect/geo.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import shapely
from shapely.geometry import shape

M_PER_DEG_LAT = 110_574.0
M_PER_DEG_LON_EQUATOR = 111_320.0
MIN_AREA_M2 = 100.0
MAX_AREA_M2 = 100e6


def metres_per_degree(lat: float) -> tuple[float, float]:
    return M_PER_DEG_LON_EQUATOR * math.cos(math.radians(lat)), M_PER_DEG_LAT


def polygon_problem(geojson: dict[str, Any]) -> str | None:
    """Why a GeoJSON polygon is unusable as a fence, or None when it is fine."""
    if geojson.get("type") != "Polygon":
        return f"geojson type must be Polygon, got {geojson.get('type')!r}"
    rings = geojson.get("coordinates")
    if not isinstance(rings, list) or not rings:
        return "geojson Polygon needs coordinates: a list of rings"
    for n, ring in enumerate(rings):
        if not isinstance(ring, list) or len(ring) < 4:
            return f"ring {n} needs at least 4 positions (closed: first equals last)"
        # shapely is given the rings as they are: each position must be 2 or 3 plain numbers
        if not all(
            isinstance(p, list | tuple)
            and len(p) in (2, 3)
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in p)
            for p in ring
        ):
            return f"ring {n} has a position that is not [lon, lat]"
        points = [(float(p[0]), float(p[1])) for p in ring]
        if points[0] != points[-1]:
            return f"ring {n} is not closed (first position must equal the last)"
        for lon, lat in points:
            if not (-180 <= lon <= 180 and -90 <= lat <= 90) or math.isnan(lon + lat):
                return f"ring {n} has a position outside lon/lat range: [{lon}, {lat}]"
    polygon = local_polygon(geojson)
    if not polygon.is_valid:
        reason = shapely.is_valid_reason(polygon)
        return f"polygon is not valid (self-intersection or bad hole): {reason}"
    area = polygon.area
    if not MIN_AREA_M2 <= area <= MAX_AREA_M2:
        return f"area {area:,.0f} m2 is not a sensible fence (100 m2 to 100 km2)"
    return None


def local_polygon(geojson: dict[str, Any], origin: tuple[float, float] | None = None) -> Any:
    """The polygon in metres of a local equirectangular frame (origin: its centroid unless given)."""
    lon_lat = shape(geojson)
    if origin is None:
        c = lon_lat.centroid
        origin = (c.x, c.y)
    kx, ky = metres_per_degree(origin[1])
    return shapely.transform(lon_lat, lambda xy: (xy - np.array(origin)) * np.array([kx, ky]))

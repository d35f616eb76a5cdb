"""GeoJSON fences from the console <-> the registry's ``FenceSpec``, with the checks a map editor needs.

The console speaks GeoJSON Features (a Polygon, or a Point with ``properties.radius_m``
for a circle); the ``geofences`` table keeps the registry's own ``FenceSpec`` JSON, so
the detectors load an edited fence exactly as one imported from a registry file. Every
fence is checked with shapely 2 before it is stored: closed rings, valid coordinates,
no self-intersection, and a size a GPS band can tell apart (20 m to 20 km across).
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from gateway.api.schemas import Fence, FenceInput, FenceProperties, PointGeometry
from gateway.domain.geometry import metres_per_degree, polygon_problem
from gateway.domain.registry import FenceSpec, RegistryError, parse_window

MIN_ACROSS_M = 20.0
MAX_ACROSS_M = 20_000.0


class FenceProblem(ValueError):
    """Why a drawn fence cannot be stored; the message is shown to the operator."""


def spec_from_feature(fence_id: str, feature: FenceInput) -> dict[str, Any]:
    """The ``FenceSpec`` JSON for a drawn fence, or ``FenceProblem``."""
    props = feature.properties
    if props.active_hours is not None:
        try:
            parse_window(props.active_hours)
        except RegistryError as error:
            raise FenceProblem(f"active_hours: {error}") from None
    spec: dict[str, Any] = {"id": fence_id, "name": props.name or ""}
    geometry = feature.geometry
    if isinstance(geometry, PointGeometry):
        spec["circle"] = _circle(geometry.coordinates, props.radius_m)
    else:
        if props.radius_m is not None:
            raise FenceProblem("radius_m belongs to a circle (a Point), not a Polygon")
        spec["geojson"] = {"type": "Polygon", "coordinates": _polygon(geometry.coordinates)}
    if props.active_hours is not None:
        spec["active"] = props.active_hours
    if props.margin_m is not None:
        spec["margin_m"] = props.margin_m
    if props.severity is not None:
        spec["severity"] = props.severity
    try:
        msgspec.convert(spec, FenceSpec)
    except msgspec.ValidationError as error:  # the registry's own type must accept it, or detectors would not
        raise FenceProblem(str(error)) from None
    return spec


def _circle(position: list[float], radius_m: float | None) -> dict[str, float]:
    lon, lat = _lon_lat(position, "the centre")
    if radius_m is None:
        raise FenceProblem("a circle (a Point) needs properties.radius_m")
    if not math.isfinite(radius_m) or radius_m * 2 < MIN_ACROSS_M or radius_m * 2 > MAX_ACROSS_M:
        raise FenceProblem(
            f"a circle of radius {radius_m:g} m is not {MIN_ACROSS_M:g} m to {MAX_ACROSS_M / 1000:g} km across"
        )
    return {"lat": lat, "lon": lon, "radius_m": radius_m}


def _lon_lat(position: list[float], where: str) -> tuple[float, float]:
    lon, lat = position[0], position[1]
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        raise FenceProblem(f"{where} [{lon}, {lat}] is not a longitude/latitude pair")
    return lon, lat


def _polygon(rings: list[list[list[float]]]) -> list[list[list[float]]]:
    import shapely  # here: the gateway's start does not wait for it (issue 19)
    from shapely.geometry import Polygon

    clean: list[list[list[float]]] = []
    for n, ring in enumerate(rings):
        where = "the outer ring" if n == 0 else f"hole {n}"
        if len(ring) < 4:
            raise FenceProblem(f"{where} needs at least 4 positions, the last repeating the first")
        points = [list(_lon_lat(p, f"{where}, position {i}")) for i, p in enumerate(ring)]
        if points[0] != points[-1]:
            raise FenceProblem(f"{where} is not closed: its last position must repeat the first")
        clean.append(points)
    outer = clean[0]
    ref_lat = sum(p[1] for p in outer) / len(outer)
    kx, ky = metres_per_degree(ref_lat)
    local = Polygon([(p[0] * kx, p[1] * ky) for p in outer], [[(p[0] * kx, p[1] * ky) for p in h] for h in clean[1:]])
    if not local.is_valid:
        raise FenceProblem(f"the polygon is not valid: {shapely.is_valid_reason(local)}")
    box = shapely.minimum_rotated_rectangle(local)
    corners = list(box.exterior.coords) if box.geom_type == "Polygon" else []
    sides = [math.dist(corners[i], corners[i + 1]) for i in range(2)] if len(corners) >= 3 else [0.0, 0.0]
    narrow, wide = min(sides), max(sides)
    if narrow < MIN_ACROSS_M:
        raise FenceProblem(
            f"the fence is only {narrow:.0f} m across; at least {MIN_ACROSS_M:g} m is needed "
            "for GPS to tell inside from outside"
        )
    if wide > MAX_ACROSS_M:
        raise FenceProblem(f"the fence is {wide / 1000:.1f} km across; at most {MAX_ACROSS_M / 1000:g} km")
    problem = polygon_problem({"type": "Polygon", "coordinates": clean})  # the detectors' own checks
    if problem is not None:
        raise FenceProblem(problem)
    return clean


def feature_from_spec(elder_id: str, spec: dict[str, Any]) -> Fence:
    """A stored fence as the console draws it."""
    circle = spec.get("circle")
    if circle:
        geometry: dict[str, Any] = {"type": "Point", "coordinates": [circle["lon"], circle["lat"]]}
        kind, radius = "circle", float(circle["radius_m"])
    else:
        geometry, kind, radius = dict(spec.get("geojson") or {}), "polygon", None
    return Fence(
        type="Feature",
        id=str(spec["id"]),
        geometry=geometry,
        properties=FenceProperties(
            name=str(spec.get("name") or spec["id"]),
            kind=kind,  # type: ignore[arg-type]
            elder_id=elder_id,
            active_hours=spec.get("active"),
            margin_m=spec.get("margin_m"),
            severity=spec.get("severity"),
            radius_m=radius,
        ),
    )


def bounds_of(spec: dict[str, Any]) -> tuple[float, float, float, float] | None:
    """min_lon, min_lat, max_lon, max_lat of a stored fence."""
    circle = spec.get("circle")
    if circle:
        kx, ky = metres_per_degree(circle["lat"])
        dx, dy = circle["radius_m"] / kx, circle["radius_m"] / ky
        return circle["lon"] - dx, circle["lat"] - dy, circle["lon"] + dx, circle["lat"] + dy
    rings = (spec.get("geojson") or {}).get("coordinates") or []
    if not rings:
        return None
    xs = [p[0] for p in rings[0]]
    ys = [p[1] for p in rings[0]]
    return min(xs), min(ys), max(xs), max(ys)

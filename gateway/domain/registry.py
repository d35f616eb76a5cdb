"""The registry detectors read: elders, their care profiles, fences and devices.

Loaded from a YAML registry file (``elders: [...]``) or from the database; both go
through the same strict types, so a bad threshold name or a fence without a shape is
an error naming the elder, not a silent default.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml
from msgspec import Meta

from devices.contracts import DEVICE_ID_PATTERN, DEVICE_TYPES
from gateway.domain.clinical import RULE_NAMES
from gateway.domain.people import Contact, Responder, RosterOverride
from gateway.domain.yaml_load import load_yaml

Condition = Literal["dementia", "diabetes", "hypertension", "heart_disease", "copd", "fall_risk"]
log = logging.getLogger(__name__)
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


class RegistryError(ValueError):
    """The registry is invalid; the message names the elder or fence and the problem."""


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Registry input is typed and strict: a misspelt key is an error."""


class Point(_Strict, frozen=True, kw_only=True):
    lat: Annotated[float, Meta(ge=-90, le=90)]
    lon: Annotated[float, Meta(ge=-180, le=180)]


class Circle(_Strict, frozen=True, kw_only=True):
    lat: Annotated[float, Meta(ge=-90, le=90)]
    lon: Annotated[float, Meta(ge=-180, le=180)]
    radius_m: Annotated[float, Meta(gt=0, le=50_000)]


class FenceSpec(_Strict, frozen=True, kw_only=True):
    """A polygon (GeoJSON Polygon, lon/lat) or a circle with a radius in metres."""

    id: str
    name: str = ""  # what the console shows; the id when empty
    geojson: dict[str, Any] | None = None
    circle: Circle | None = None
    active: str | None = None  # "HH:MM-HH:MM" local time; None = always
    margin_m: Annotated[float, Meta(ge=0, le=1000)] | None = None
    severity: Literal["warning", "critical"] | None = None


class DeviceSpec(_Strict, frozen=True, kw_only=True):
    id: Annotated[str, Meta(pattern=DEVICE_ID_PATTERN)]
    type: str
    reporting_interval_s: Annotated[int, Meta(gt=0, le=86_400)] = 60


class ElderSpec(_Strict, frozen=True, kw_only=True):
    id: str
    name: str
    community: str = ""
    grid: str = ""
    address: str = ""
    lives_alone: bool = False
    conditions: list[Condition] = []
    home: Point | None = None
    thresholds: dict[str, float] = {}
    fences: list[FenceSpec] = []
    devices: list[DeviceSpec] = []
    contacts: list[Contact] = []
    language: Literal["zh", "en"] = "zh"


class RegistryFile(_Strict, frozen=True, kw_only=True):
    elders: list[ElderSpec] = []
    responders: list[Responder] = []
    roster_overrides: list[RosterOverride] = []


def parse_window(text: str) -> tuple[int, int]:
    """Start and end minute of day of an ``HH:MM-HH:MM`` window (may wrap midnight)."""
    match = _WINDOW.match(text.strip())
    if not match:
        raise RegistryError(f"time window {text!r} is not HH:MM-HH:MM")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    return h1 * 60 + m1, h2 * 60 + m2


def _grid_workers_with_community(
    registry: RegistryFile, communities: Collection[str], strict_grids: bool = True
) -> RegistryFile:
    """A grid is (community, grid): every grid worker names its community.

    Grid names repeat across communities (each has its 网格1), so a worker known by
    the grid's name alone would see and be paged for another community's elders. A
    registry from before communities were required is read as it meant: with one
    community (here, or already stored: ``communities``) its workers are that
    community's; with more, which one is ambiguous and the registry is refused. What
    is already stored (``strict_grids=False``) is loaded even so, with an error in the
    log: those workers are then paged for nobody's elders and the escalation goes on
    to the next tier, which is better than a gateway that does not start.
    """
    legacy = [r for r in registry.responders if r.role == "grid_worker" and not r.community]
    if not legacy:
        return registry
    known = sorted({e.community for e in registry.elders if e.community} | {c for c in communities if c})
    if len(known) > 1:
        names = ", ".join(r.id for r in legacy[:10])
        problem = (
            f"responder(s) {names}: a grid worker needs a community (there are {len(known)}: "
            f"{', '.join(known[:5])}{', ...' if len(known) > 5 else ''}; grid names repeat across communities)"
        )
        if strict_grids:
            raise RegistryError(problem)
        log.error("%s; they are paged for no elder until the registry gives them one", problem)
        return registry
    if not known:
        return registry
    responders = [
        msgspec.structs.replace(r, community=known[0]) if r.role == "grid_worker" and not r.community else r
        for r in registry.responders
    ]
    return msgspec.structs.replace(registry, responders=responders)


def validate(registry: RegistryFile, communities: Collection[str] = (), *, strict_grids: bool = True) -> RegistryFile:
    """Check the registry; ``communities``: those of stored elders not in it (an import of some elders)."""
    seen_elders: set[str] = set()
    seen_devices: dict[str, str] = {}
    for elder in registry.elders:
        where = f"elder {elder.id}"
        if elder.id in seen_elders:
            raise RegistryError(f"{where}: listed twice")
        seen_elders.add(elder.id)
        unknown = set(elder.thresholds) - RULE_NAMES
        if unknown:
            raise RegistryError(f"{where}: unknown threshold(s) {sorted(unknown)}; known: {sorted(RULE_NAMES)}")
        fence_ids: set[str] = set()
        for fence in elder.fences:
            fwhere = f"{where}, fence {fence.id}"
            if fence.id in fence_ids:
                raise RegistryError(f"{fwhere}: fence id used twice")
            fence_ids.add(fence.id)
            if (fence.geojson is None) == (fence.circle is None):
                raise RegistryError(f"{fwhere}: give exactly one of geojson or circle")
            if fence.active is not None:
                try:
                    parse_window(fence.active)
                except RegistryError as error:
                    raise RegistryError(f"{fwhere}: {error}") from None
            if fence.geojson is not None:
                from gateway.domain.geometry import polygon_problem

                problem = polygon_problem(fence.geojson)
                if problem:
                    raise RegistryError(f"{fwhere}: {problem}")
        for device in elder.devices:
            if device.type not in DEVICE_TYPES:
                raise RegistryError(f"{where}: device {device.id} has unknown type {device.type!r}")
            if device.id in seen_devices:
                raise RegistryError(f"{where}: device {device.id} is already bound to elder {seen_devices[device.id]}")
            seen_devices[device.id] = elder.id
    responder_ids: set[str] = set()
    for responder in registry.responders:
        where = f"responder {responder.id}"
        if responder.id in responder_ids:
            raise RegistryError(f"{where}: listed twice")
        responder_ids.add(responder.id)
        if responder.role == "grid_worker" and not responder.grid:
            raise RegistryError(f"{where}: a grid worker needs a grid")
        if responder.role in ("post_station", "volunteer") and not responder.community:
            raise RegistryError(f"{where}: a {responder.role} needs a community")
    for override in registry.roster_overrides:
        if override.responder not in responder_ids:
            raise RegistryError(f"roster override names unknown responder {override.responder!r}")
        for text in (override.start, override.end):
            try:
                moment = msgspec.convert(text, Annotated[datetime, Meta(tz=True)])
            except msgspec.ValidationError:
                raise RegistryError(
                    f"roster override for {override.responder}: {text!r} is not an RFC 3339 time with an offset"
                ) from None
            del moment
    return _grid_workers_with_community(registry, communities, strict_grids)


def device_types(registry: RegistryFile) -> dict[str, str]:
    """Device id -> its registered type."""
    return {d.id: d.type for elder in registry.elders for d in elder.devices}


def _convert(raw: Any, source: str, communities: Collection[str] = (), strict_grids: bool = True) -> RegistryFile:
    try:
        registry = msgspec.convert(raw, RegistryFile, strict=False)
    except msgspec.ValidationError as error:
        raise RegistryError(f"{source}: {error}") from None
    return validate(registry, communities, strict_grids=strict_grids)


def load_registry(path: str | Path) -> RegistryFile:
    try:
        raw = load_yaml(Path(path).read_text(encoding="utf-8")) or {}  # PyYAML's reading, faster
    except (OSError, yaml.YAMLError) as error:
        raise RegistryError(f"{path}: cannot read: {error}") from None
    except UnicodeDecodeError as error:  # e.g. saved as GBK
        raise RegistryError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except RecursionError:  # PyYAML composes recursively
        raise RegistryError(f"{path}: cannot read: nested too deeply") from None
    return _convert(raw, str(path))


def registry_from_dicts(
    elders: list[dict[str, Any]],
    responders: list[dict[str, Any]] | None = None,
    roster_overrides: list[dict[str, Any]] | None = None,
    communities: Collection[str] = (),
    *,
    strict_grids: bool = True,
) -> RegistryFile:
    return _convert(
        {"elders": elders, "responders": responders or [], "roster_overrides": roster_overrides or []},
        "registry",
        communities,
        strict_grids,
    )

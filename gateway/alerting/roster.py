"""Who fills a role for one elder at one moment: family by priority, responders by shift.

Shifts are local wall-clock times in the escalation time zone. A shift that wraps
midnight belongs to the day it starts on: "fri 20:00-08:00" covers Saturday 03:00.
Shift boundaries are half-open, so at 08:00 the new shift is on duty and the old one
is not. Roster overrides (RFC 3339 ranges) force someone on or off duty and win over
shifts. The hotline never resolves to nobody: with no one on shift, every hotline line
is paged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta, tzinfo
from typing import Annotated, cast
from zoneinfo import ZoneInfo

import msgspec
from msgspec import Meta

from gateway.domain.people import ROLES, Channel, GeoPoint, Responder, Role, RosterOverride
from gateway.domain.registry import ElderSpec, Point, RegistryError, RegistryFile, parse_window

SHANGHAI = ZoneInfo("Asia/Shanghai")
DAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
VOLUNTEER_RADIUS_M = 3000.0
VOLUNTEER_MAX = 3
_EARTH_RADIUS_M = 6_371_008.8
_SHIFT = re.compile(r"^(\S+) ([01]\d|2[0-3]):([0-5]\d)-(?:([01]\d|2[0-3]):([0-5]\d)|(24):(00))$")
_AwareDatetime = Annotated[datetime, Meta(tz=True)]
_NOBODY = ElderSpec(id="", name="")


class RosterError(ValueError):
    """A shift, override or time window cannot be read; the message names it."""


@dataclass(frozen=True, slots=True)
class Shift:
    """Days the shift starts on (0 = Monday) and its start and end, in seconds of the day.

    ``end_s <= start_s`` means it ends the next day.
    """

    days: frozenset[int]
    start_s: int
    end_s: int

    def covers(self, local: datetime) -> bool:
        """Whether this shift is on at ``local`` (a wall-clock time in the shift's zone)."""
        second = local.hour * 3600 + local.minute * 60 + local.second
        day = local.weekday()
        if self.end_s > self.start_s:
            return day in self.days and self.start_s <= second < self.end_s
        return (day in self.days and second >= self.start_s) or ((day - 1) % 7 in self.days and second < self.end_s)


def _days(text: str, shift: str) -> frozenset[int]:
    if text == "daily":
        return frozenset(range(7))
    days: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        try:
            start = DAYS.index(first)
            end = DAYS.index(last) if last else start
        except ValueError:
            raise RosterError(f"shift {shift!r}: unknown day in {part!r} (use {', '.join(DAYS)} or daily)") from None
        days.update((start + offset) % 7 for offset in range((end - start) % 7 + 1))  # fri-mon wraps
    return frozenset(days)


def parse_shift(text: str) -> Shift:
    """Read "mon-fri 08:00-18:00", "sat,sun 00:00-24:00" or "daily 20:00-08:00"."""
    match = _SHIFT.match(text.strip())
    if not match:
        raise RosterError(f"shift {text!r} is not '<days> HH:MM-HH:MM' (e.g. 'mon-fri 08:00-18:00')")
    days, h1, m1, h2, m2, h24, _ = match.groups()
    start = int(h1) * 3600 + int(m1) * 60
    end = 86_400 if h24 else int(h2) * 3600 + int(m2) * 60
    if start == end:
        raise RosterError(f"shift {text!r} starts and ends at the same time (use 00:00-24:00 for all day)")
    return Shift(_days(days, text), start, end)


def _moment(text: str, responder: str) -> datetime:
    try:
        return msgspec.convert(text, _AwareDatetime)
    except msgspec.ValidationError:
        raise RosterError(f"roster override for {responder}: {text!r} is not an RFC 3339 time with an offset") from None


def _require_aware(at: datetime) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{at!r} has no time zone; roster times must be timezone-aware")


def on_duty(responder: Responder, overrides: Sequence[RosterOverride], at: datetime, *, tz: tzinfo = SHANGHAI) -> bool:
    """Whether ``responder`` is on duty at ``at``; the last override covering ``at`` wins over shifts."""
    _require_aware(at)
    verdict: bool | None = None
    for override in overrides:
        if override.responder == responder.id and _moment(override.start, responder.id) <= at < _moment(
            override.end, responder.id
        ):
            verdict = override.on_duty
    if verdict is not None:
        return verdict
    if not responder.shifts:
        return True
    local = at.astimezone(tz)
    return any(parse_shift(text).covers(local) for text in responder.shifts)


def check_roster(registry: RegistryFile, *, require_hotline: bool = True) -> None:
    """Fail at load time, not mid-emergency: every shift and override must be readable."""
    for responder in registry.responders:
        for text in responder.shifts:
            try:
                parse_shift(text)
            except RosterError as error:
                raise RosterError(f"responder {responder.id}: {error}") from None
    for override in registry.roster_overrides:
        if _moment(override.start, override.responder) >= _moment(override.end, override.responder):
            raise RosterError(f"roster override for {override.responder}: start is not before end")
    if require_hotline and registry.elders and not any(r.role == "hotline" for r in registry.responders):
        raise RosterError("no hotline responder: the last tier of an emergency would page nobody")


@dataclass(frozen=True, slots=True)
class Recipient:
    """One person to page, with a key that stays the same across rounds (for dedup and audit)."""

    key: str
    name: str
    phone: str
    language: str
    channels: tuple[Channel, ...]
    provider: str | None
    role: Role


def _from_responder(responder: Responder) -> Recipient:
    return Recipient(
        key=f"responder:{responder.id}",
        name=responder.name,
        phone=responder.phone,
        language=responder.language,
        channels=tuple(responder.channels),
        provider=responder.provider,
        role=responder.role,
    )


def distance_m(a: Point | GeoPoint, b: Point | GeoPoint) -> float:
    """Great-circle (haversine) distance in metres."""
    lat1, lat2 = math.radians(a.lat), math.radians(b.lat)
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin(math.radians(b.lon - a.lon) / 2) ** 2
    )
    return 2 * _EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def _nearest_volunteers(volunteers: list[Responder], home: Point | None) -> list[Responder]:
    placed: list[tuple[float, int, Responder]] = []
    unplaced: list[Responder] = []
    for order, volunteer in enumerate(volunteers):
        if volunteer.position is None or home is None:
            unplaced.append(volunteer)
            continue
        metres = distance_m(home, volunteer.position)
        if metres <= VOLUNTEER_RADIUS_M:
            placed.append((metres, order, volunteer))
    placed.sort(key=lambda item: (item[0], item[1]))
    return ([volunteer for _, _, volunteer in placed] + unplaced)[:VOLUNTEER_MAX]


def resolve_role(
    role: str, elder: ElderSpec | None, registry: RegistryFile, at: datetime, *, tz: tzinfo = SHANGHAI
) -> list[Recipient]:
    """The people who fill ``role`` for ``elder`` at ``at``, in the order to page them.

    Only ``hotline`` is guaranteed non-empty (given a hotline responder exists); other
    roles may resolve to nobody, and the escalation then moves on at once. Without an
    elder (an alert from an unbound device) only the hotline resolves.
    """
    if role not in ROLES:
        raise RosterError(f"unknown role {role!r} (known: {', '.join(ROLES)})")
    if elder is None:
        return resolve_role(role, _NOBODY, registry, at, tz=tz) if role == "hotline" else []
    if role == "family":
        # sorted() is stable: contacts with the same priority keep their listed order
        contacts = sorted(elder.contacts, key=lambda contact: contact.priority)
        return [
            Recipient(
                key=f"contact:{elder.id}:{c.phone}",
                name=c.name,
                phone=c.phone,
                language=c.language,
                channels=tuple(c.channels),
                provider=c.provider,
                role="family",
            )
            for c in contacts
        ]
    typed_role = cast(Role, role)
    staff = [r for r in registry.responders if r.role == typed_role]
    if role == "grid_worker":  # a grid is (community, grid): every community has its 网格1
        staff = [r for r in staff if elder.grid and r.grid == elder.grid and (r.community or "") == elder.community]
    elif role in ("post_station", "volunteer"):
        staff = [r for r in staff if elder.community and r.community == elder.community]
    present = [r for r in staff if on_duty(r, registry.roster_overrides, at, tz=tz)]
    if typed_role == "volunteer":
        present = _nearest_volunteers(present, elder.home)
    elif role == "hotline" and not present:
        present = staff  # nobody on shift: ring every line rather than no one
    return [_from_responder(r) for r in present]


def _window(window: str) -> tuple[int, int]:
    try:
        return parse_window(window)
    except RegistryError as error:
        raise RosterError(str(error)) from None


def in_window(window: str, at: datetime, *, tz: tzinfo = SHANGHAI) -> bool:
    """Whether ``at`` falls in the local ``HH:MM-HH:MM`` window (start inclusive, may wrap midnight)."""
    _require_aware(at)
    start, end = _window(window)
    local = at.astimezone(tz)
    minute = local.hour * 60 + local.minute
    if start <= end:
        return start <= minute < end
    return minute >= start or minute < end


def next_window_end(window: str, at: datetime, *, tz: tzinfo = SHANGHAI) -> datetime:
    """The first end of the window strictly after ``at`` (the end of the current window if inside it)."""
    _require_aware(at)
    _, end = _window(window)
    local = at.astimezone(tz)
    candidate = datetime.combine(local.date(), time(end // 60, end % 60), tzinfo=tz)
    if candidate <= local:
        candidate = datetime.combine(local.date() + timedelta(days=1), time(end // 60, end % 60), tzinfo=tz)
    return candidate

"""Who can be reached: family contacts, responders with on-call schedules, the hotline.

These are registry input (the ``responders`` section and each elder's ``contacts``),
typed and strict like the rest of the registry. Escalation policies name roles; the
roster resolves a role to people for one elder at one moment.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

Role = Literal["family", "grid_worker", "post_station", "volunteer", "hotline"]
ROLES: tuple[str, ...] = ("family", "grid_worker", "post_station", "volunteer", "hotline")
Channel = Literal["sms", "voice"]
Language = Literal["zh", "en"]
Phone = Annotated[str, Meta(pattern=r"^\+[1-9]\d{6,14}$", description="E.164, e.g. +8613800138000")]
# "mon-fri 08:00-18:00", "sat,sun 00:00-24:00", "daily 20:00-08:00" (may wrap midnight)
ShiftText = Annotated[
    str,
    Meta(
        pattern=r"^(daily|[a-z]{3}(-[a-z]{3})?(,[a-z]{3}(-[a-z]{3})?)*) "
        r"([01]\d|2[0-3]):[0-5]\d-(([01]\d|2[0-3]):[0-5]\d|24:00)$"
    ),
]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Registry input: a misspelt key is an error."""


class Contact(_Strict, frozen=True, kw_only=True):
    """A family member (or neighbour) of one elder, reached in ``priority`` order (1 first)."""

    name: str
    phone: Phone
    relation: str = ""
    language: Language = "zh"
    priority: Annotated[int, Meta(ge=1, le=99)] = 1
    channels: list[Channel] = msgspec.field(default_factory=lambda: ["sms", "voice"])
    provider: str | None = None  # preferred SMS/voice provider; others are fallbacks


class GeoPoint(_Strict, frozen=True, kw_only=True):
    lat: Annotated[float, Meta(ge=-90, le=90)]
    lon: Annotated[float, Meta(ge=-180, le=180)]


class Responder(_Strict, frozen=True, kw_only=True):
    """A grid worker, post-station phone, volunteer or hotline line.

    ``grid`` with ``community`` (grid workers: grid names repeat across communities)
    and ``community`` (post stations, volunteers) say whose elders they cover; the
    hotline covers everyone. ``shifts`` say when they are on
    duty (empty: always).
    """

    id: str
    name: str
    role: Literal["grid_worker", "post_station", "volunteer", "hotline"]
    phone: Phone
    language: Language = "zh"
    grid: str | None = None
    community: str | None = None
    position: GeoPoint | None = None  # volunteers: where they usually are
    shifts: list[ShiftText] = []
    channels: list[Channel] = msgspec.field(default_factory=lambda: ["sms", "voice"])
    provider: str | None = None


class RosterOverride(_Strict, frozen=True, kw_only=True):
    """A one-off change: someone covering a shift, or away (``on_duty: false``)."""

    responder: str
    start: str  # RFC 3339 with offset
    end: str
    on_duty: bool = True

"""Escalation policies: which tiers of people are paged for which alert, and how fast.

The ``escalation`` section of ``config.yaml`` is an :class:`EscalationConfig`. It is
checked once at start-up by :func:`validate`, so that at run time every alert finds a
policy and every policy ends in a tier that is always staffed (hotline or post station)
and repeats until someone takes the alert: an emergency never silently stops.

Tiers are numbered from 0 in data (``TierFiring.tier``, ``Fire.tiers``) and from 1 in
messages meant for people ("policy sos, tier 2" is the second tier in the list).
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from gateway.domain.detection import (
    CALL,
    CANCEL,
    CANCEL_LATE,
    CMD_RECEIVED,
    DEVICE_SILENT,
    FALL,
    FALL_NO_RECOVERY,
    GEOFENCE_EXIT,
    HR_HIGH,
    HR_LOW,
    HYPERGLYCAEMIA,
    HYPERTENSIVE_CRISIS,
    HYPOGLYCAEMIA,
    HYPOTENSION,
    INACTIVITY,
    LEVEL_SEVERITY,
    LOW_BATTERY,
    NOT_WORN,
    SOS,
    SPO2_LOW,
    Severity,
)
from gateway.domain.people import ROLES, Channel
from gateway.domain.registry import RegistryError, parse_window

ANY_KIND = "*"
KNOWN_KINDS: frozenset[str] = frozenset(
    {
        SOS,
        CALL,
        FALL,
        FALL_NO_RECOVERY,
        GEOFENCE_EXIT,
        HR_HIGH,
        HR_LOW,
        SPO2_LOW,
        HYPOGLYCAEMIA,
        HYPERGLYCAEMIA,
        HYPERTENSIVE_CRISIS,
        HYPOTENSION,
        LOW_BATTERY,
        NOT_WORN,
        DEVICE_SILENT,
        INACTIVITY,
        CANCEL_LATE,
    }
)
# Detector kinds that are not alerts (a cancel closes alerts), so no policy may name them.
NOT_ALERT_KINDS: frozenset[str] = frozenset({CANCEL, CMD_RECEIVED})
# Roles that have someone on duty around the clock; the last tier must name one of them.
ALWAYS_STAFFED: tuple[str, ...] = ("hotline", "post_station")
_UNNAMED_KIND = "\x00a kind no policy names"  # stands for kinds added to detectors later


class PolicyError(ValueError):
    """The escalation config is invalid; the message names the policy, tier or key."""


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Config input: a misspelt key is an error, not a silently ignored setting."""


class TierSpec(_Strict, frozen=True, kw_only=True):
    """One tier: whom to page and how, and how long to wait for someone to take the alert.

    ``roles`` maps a role to the channels to use, in order of preference. ``repeat`` is
    how many times the tier is run (each followed by ``wait_s``) before the next tier;
    the last tier of a policy repeats regardless until someone acknowledges.
    Values are checked by :func:`validate` so that errors name the policy and tier.
    """

    roles: dict[str, list[Channel]]
    wait_s: int
    repeat: int = 1


class PolicySpec(_Strict, frozen=True, kw_only=True):
    """Tiers for the alerts whose kind is in ``kinds`` (or ``"*"``) and severity in ``severities``.

    ``severities`` empty means any. ``confirm_window_s`` is the time the elder gets to
    answer "are you OK?" before tier 1 is paged. ``start_tiers`` tiers are paged at once.
    ``respect_quiet_hours: false`` pages non-critical alerts even in quiet hours
    (critical alerts never wait for quiet hours to end).
    """

    name: str
    kinds: list[str]
    severities: list[Severity] = []
    confirm_window_s: int = 0
    start_tiers: int = 1
    respect_quiet_hours: bool = True
    tiers: list[TierSpec]


class EscalationConfig(_Strict, frozen=True, kw_only=True):
    """The ``escalation`` section of ``config.yaml``. Policies are tried in order."""

    timezone: str = "Asia/Shanghai"
    quiet_hours: str | None = None  # "HH:MM-HH:MM" local time, may wrap midnight
    on_scene_margin_s: int = 600
    default_eta_s: int = 1200
    policies: list[PolicySpec] = msgspec.field(default_factory=lambda: list(_DEFAULT_POLICIES))

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def _matches(policy: PolicySpec, kind: str, severity: str) -> bool:
    return (kind in policy.kinds or ANY_KIND in policy.kinds) and (
        not policy.severities or severity in policy.severities
    )


def select_policy(config: EscalationConfig, kind: str, severity: Severity) -> PolicySpec:
    """The first policy, in config order, that matches the alert's kind and severity."""
    for policy in config.policies:
        if _matches(policy, kind, severity):
            return policy
    # validate() guarantees a catch-all, so this means the config was never validated.
    raise PolicyError(f"no escalation policy matches kind {kind!r} at severity {severity!r}")


def _check_tier(where: str, tier: TierSpec) -> None:
    if not tier.roles:
        raise PolicyError(f"{where}: no roles; a tier must page someone")
    for role, channels in tier.roles.items():
        if role not in ROLES:
            raise PolicyError(f"{where}: unknown role {role!r} (known: {', '.join(ROLES)})")
        if not channels:
            raise PolicyError(f"{where}: role {role} has no channel (give e.g. [sms, voice])")
    if tier.wait_s <= 0:
        raise PolicyError(f"{where}: wait_s must be > 0 seconds, got {tier.wait_s}")
    if tier.repeat < 1:
        raise PolicyError(f"{where}: repeat must be >= 1, got {tier.repeat}")


def _check_policy(policy: PolicySpec) -> None:
    where = f"policy {policy.name}"
    if not policy.kinds:
        raise PolicyError(f'{where}: no kinds (use ["*"] for a catch-all)')
    for kind in policy.kinds:
        if kind != ANY_KIND and kind not in KNOWN_KINDS:
            raise PolicyError(f"{where}: unknown kind {kind!r} (known: {', '.join(sorted(KNOWN_KINDS))}, *)")
    for severity in policy.severities:
        if severity not in LEVEL_SEVERITY:
            raise PolicyError(f"{where}: unknown severity {severity!r} (known: {', '.join(LEVEL_SEVERITY)})")
    if policy.confirm_window_s < 0:
        raise PolicyError(f"{where}: confirm_window_s must be >= 0, got {policy.confirm_window_s}")
    if not policy.tiers:
        raise PolicyError(f"{where}: no tiers; the last tier must page {' or '.join(ALWAYS_STAFFED)}")
    for number, tier in enumerate(policy.tiers, start=1):
        _check_tier(f"{where}, tier {number}", tier)
    last = policy.tiers[-1]
    if not any(role in ALWAYS_STAFFED for role in last.roles):
        raise PolicyError(
            f"{where}, tier {len(policy.tiers)}: the last tier repeats until someone takes the alert, "
            f"so it must page an always-staffed role ({' or '.join(ALWAYS_STAFFED)}); "
            f"it pages {', '.join(last.roles)}"
        )
    if not 1 <= policy.start_tiers <= len(policy.tiers):
        raise PolicyError(
            f"{where}: start_tiers is {policy.start_tiers} but must be between 1 and the number "
            f"of tiers ({len(policy.tiers)})"
        )


def _cases(policy: PolicySpec) -> set[tuple[str, str]]:
    kinds = KNOWN_KINDS | {_UNNAMED_KIND} if ANY_KIND in policy.kinds else set(policy.kinds)
    severities = policy.severities or list(LEVEL_SEVERITY)
    return {(kind, severity) for kind in kinds for severity in severities}


def _check_coverage(config: EscalationConfig) -> None:
    """Every alert finds a policy, and no policy hides behind an earlier one."""
    covered: set[tuple[str, str]] = set()
    for policy in config.policies:
        cases = _cases(policy)
        if cases <= covered:
            raise PolicyError(
                f"policy {policy.name}: never selected, earlier policies match all of its kinds and "
                "severities (put specific policies before catch-alls)"
            )
        covered |= cases
    for kind in sorted(KNOWN_KINDS):
        for severity in LEVEL_SEVERITY:
            if (kind, severity) not in covered:
                raise PolicyError(
                    f"no policy matches kind {kind!r} at severity {severity!r}; "
                    'end the list with a catch-all policy (kinds: ["*"])'
                )
    for severity in LEVEL_SEVERITY:
        if (_UNNAMED_KIND, severity) not in covered:
            raise PolicyError(
                f'no catch-all policy (kinds: ["*"]) matches severity {severity!r}; '
                "an alert of a new kind would page nobody"
            )


def validate(config: EscalationConfig) -> EscalationConfig:
    """Check what the types cannot; raise :class:`PolicyError` naming policy and tier."""
    try:
        ZoneInfo(config.timezone)
    except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        raise PolicyError(f"timezone: unknown time zone {config.timezone!r}") from None
    if config.quiet_hours is not None:
        try:
            start, end = parse_window(config.quiet_hours)
        except RegistryError:
            raise PolicyError(f"quiet_hours: {config.quiet_hours!r} is not HH:MM-HH:MM") from None
        if start == end:
            raise PolicyError(f"quiet_hours: {config.quiet_hours!r} starts and ends at the same time")
    if config.on_scene_margin_s < 0:
        raise PolicyError(f"on_scene_margin_s must be >= 0, got {config.on_scene_margin_s}")
    if config.default_eta_s <= 0:
        raise PolicyError(f"default_eta_s must be > 0, got {config.default_eta_s}")
    names: set[str] = set()
    for policy in config.policies:
        if policy.name in names:
            raise PolicyError(f"policy {policy.name}: name used twice")
        names.add(policy.name)
        _check_policy(policy)
    _check_coverage(config)
    return config


def load_escalation(raw: dict[str, Any]) -> EscalationConfig:
    """Decode and validate the ``escalation`` section; errors name the key."""
    try:
        config = msgspec.convert(raw, EscalationConfig, strict=False)
    except msgspec.ValidationError as error:
        text = str(error)
        if " - at `$." in text:
            what, where = text.rsplit(" - at `$.", 1)
            raise PolicyError(f"escalation.{where.rstrip('`')}: {what}") from None
        raise PolicyError(f"escalation: {text}") from None
    return validate(config)


def _tier(wait_s: int, repeat: int = 1, **roles: list[Channel]) -> TierSpec:
    return TierSpec(roles=dict(roles), wait_s=wait_s, repeat=repeat)


def _emergency_tiers(wait_s: int) -> list[TierSpec]:
    return [
        _tier(wait_s, family=["voice", "sms"]),
        _tier(wait_s, grid_worker=["voice", "sms"]),
        _tier(wait_s, post_station=["voice", "sms"], volunteer=["sms"]),
        _tier(wait_s, hotline=["voice"]),
    ]


def _warning_tiers() -> list[TierSpec]:
    return [
        _tier(600, family=["sms", "voice"]),
        _tier(900, grid_worker=["sms", "voice"]),
        _tier(900, post_station=["voice", "sms"]),
        _tier(900, hotline=["voice"]),
    ]


# a fall with no recovery raises the open "fall" alert to critical (gateway.alerting.lifecycle.ALERT_KIND)
_CRITICAL_VITALS = [
    FALL,
    FALL_NO_RECOVERY,
    HYPOGLYCAEMIA,
    HYPERTENSIVE_CRISIS,
    HR_HIGH,
    HR_LOW,
    SPO2_LOW,
    HYPERGLYCAEMIA,
]
_CARE_WARNINGS = [FALL, HYPOGLYCAEMIA, HYPERGLYCAEMIA, HR_HIGH, HR_LOW, SPO2_LOW, HYPOTENSION]
_DEFAULT_POLICIES: tuple[PolicySpec, ...] = (
    PolicySpec(name="sos", kinds=[SOS], start_tiers=2, respect_quiet_hours=False, tiers=_emergency_tiers(120)),
    PolicySpec(
        name="critical_health",
        kinds=_CRITICAL_VITALS,
        severities=["critical"],
        confirm_window_s=60,
        start_tiers=2,
        tiers=_emergency_tiers(120),
    ),
    PolicySpec(
        name="wandering", kinds=[GEOFENCE_EXIT], severities=["critical"], start_tiers=2, tiers=_emergency_tiers(180)
    ),
    PolicySpec(
        name="device_health",
        kinds=[LOW_BATTERY, DEVICE_SILENT, NOT_WORN],
        tiers=[
            _tier(3600, family=["sms"]),
            _tier(7200, post_station=["sms", "voice"]),
        ],
    ),
    PolicySpec(
        name="care_warning",
        kinds=_CARE_WARNINGS,
        severities=["warning"],
        confirm_window_s=60,
        respect_quiet_hours=False,
        tiers=_warning_tiers(),
    ),
    PolicySpec(name="call", kinds=[CALL], respect_quiet_hours=False, tiers=_warning_tiers()),
    PolicySpec(
        name="info",
        kinds=[ANY_KIND],
        severities=["info"],
        tiers=[
            _tier(3600, family=["sms"]),
            _tier(7200, post_station=["sms"]),
        ],
    ),
    PolicySpec(name="warning", kinds=[ANY_KIND], severities=["warning"], tiers=_warning_tiers()),
    PolicySpec(name="default", kinds=[ANY_KIND], start_tiers=2, tiers=_emergency_tiers(120)),
)

DEFAULT_ESCALATION: EscalationConfig = validate(
    EscalationConfig(
        timezone="Asia/Shanghai",
        quiet_hours="22:00-07:00",
        on_scene_margin_s=600,
        default_eta_s=1200,
        policies=list(_DEFAULT_POLICIES),
    )
)

DEFAULT_ESCALATION_YAML = """\
escalation:
  timezone: Asia/Shanghai
  quiet_hours: "22:00-07:00"     # non-critical alerts wait until it ends (unless respect_quiet_hours: false)
  on_scene_margin_s: 600         # acknowledged but not on scene by ETA + margin -> next tier
  default_eta_s: 1200            # ETA assumed when the responder gives none
  policies:                      # tried in order: specific policies first, catch-alls last
    - name: sos                  # the elder asked for help: no "are you OK?", family and grid worker at once
      kinds: [sos]
      confirm_window_s: 0
      start_tiers: 2
      respect_quiet_hours: false
      tiers:
        - {roles: {family: [voice, sms]}, wait_s: 120}
        - {roles: {grid_worker: [voice, sms]}, wait_s: 120}
        - {roles: {post_station: [voice, sms], volunteer: [sms]}, wait_s: 120}
        - {roles: {hotline: [voice]}, wait_s: 120}
    - name: critical_health      # the elder is asked "are you OK?" for 60 s first
      kinds: [fall, fall_no_recovery,
              hypoglycaemia, hypertensive_crisis, hr_high, hr_low, spo2_low, hyperglycaemia]
      severities: [critical]
      confirm_window_s: 60
      start_tiers: 2
      tiers:
        - {roles: {family: [voice, sms]}, wait_s: 120}
        - {roles: {grid_worker: [voice, sms]}, wait_s: 120}
        - {roles: {post_station: [voice, sms], volunteer: [sms]}, wait_s: 120}
        - {roles: {hotline: [voice]}, wait_s: 120}
    - name: wandering            # e.g. an elder with dementia out of the fence at night
      kinds: [geofence_exit]
      severities: [critical]
      confirm_window_s: 0
      start_tiers: 2
      tiers:
        - {roles: {family: [voice, sms]}, wait_s: 180}
        - {roles: {grid_worker: [voice, sms]}, wait_s: 180}
        - {roles: {post_station: [voice, sms], volunteer: [sms]}, wait_s: 180}
        - {roles: {hotline: [voice]}, wait_s: 180}
    - name: device_health
      kinds: [low_battery, device_silent, not_worn]
      tiers:
        - {roles: {family: [sms]}, wait_s: 3600}
        - {roles: {post_station: [sms, voice]}, wait_s: 7200}
    - name: care_warning         # a person may be unwell: not held for quiet hours
      kinds: [fall, hypoglycaemia, hyperglycaemia, hr_high, hr_low, spo2_low, hypotension]
      severities: [warning]
      confirm_window_s: 60
      respect_quiet_hours: false
      tiers: &warning_tiers
        - {roles: {family: [sms, voice]}, wait_s: 600}
        - {roles: {grid_worker: [sms, voice]}, wait_s: 900}
        - {roles: {post_station: [voice, sms]}, wait_s: 900}
        - {roles: {hotline: [voice]}, wait_s: 900}
    - name: call                 # the elder pressed "call": someone should call back, day or night
      kinds: [call]
      respect_quiet_hours: false
      tiers: *warning_tiers
    - name: info
      kinds: ["*"]
      severities: [info]
      tiers:
        - {roles: {family: [sms]}, wait_s: 3600}
        - {roles: {post_station: [sms]}, wait_s: 7200}
    - name: warning
      kinds: ["*"]
      severities: [warning]
      tiers: *warning_tiers
    - name: default              # anything else (critical): family and grid worker at once
      kinds: ["*"]
      start_tiers: 2
      tiers:
        - {roles: {family: [voice, sms]}, wait_s: 120}
        - {roles: {grid_worker: [voice, sms]}, wait_s: 120}
        - {roles: {post_station: [voice, sms], volunteer: [sms]}, wait_s: 120}
        - {roles: {hotline: [voice]}, wait_s: 120}
"""

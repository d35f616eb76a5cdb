"""Escalation policies: every mistake is named with its policy and tier; the defaults are sound."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from gateway.alerting.policy import (
    ALWAYS_STAFFED,
    DEFAULT_ESCALATION,
    DEFAULT_ESCALATION_YAML,
    KNOWN_KINDS,
    NOT_ALERT_KINDS,
    EscalationConfig,
    PolicyError,
    load_escalation,
    select_policy,
    validate,
)
from gateway.domain import detection
from gateway.domain.detection import LEVEL_SEVERITY, Severity


def _tier(wait_s: Any = 60, **roles: Any) -> dict[str, Any]:
    return {"roles": roles or {"hotline": ["voice"]}, "wait_s": wait_s}


def _raw(**sos: Any) -> dict[str, Any]:
    """A valid config with a 'sos' policy (changed by ``sos``) and a catch-all."""
    policy: dict[str, Any] = {
        "name": "sos",
        "kinds": ["sos"],
        "start_tiers": 1,
        "tiers": [_tier(family=["sms"]), _tier(grid_worker=["voice"]), _tier()],
    }
    policy.update(sos)
    return {
        "quiet_hours": "22:00-07:00",
        "policies": [policy, {"name": "default", "kinds": ["*"], "tiers": [_tier(post_station=["sms"])]}],
    }


def test_the_base_config_is_valid() -> None:
    config = load_escalation(_raw())
    assert [p.name for p in config.policies] == ["sos", "default"]
    assert config.timezone == "Asia/Shanghai"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            _raw(tiers=[_tier(), _tier(neighbour=["sms"]), _tier()]),
            "policy sos, tier 2: unknown role 'neighbour' (known: family, grid_worker, post_station, volunteer, "
            "hotline)",
        ),
        (_raw(tiers=[{"roles": {}, "wait_s": 60}, _tier()]), "policy sos, tier 1: no roles"),
        (_raw(tiers=[_tier(family=[]), _tier()]), "policy sos, tier 1: role family has no channel"),
        (_raw(tiers=[_tier(), _tier(0)]), "policy sos, tier 2: wait_s must be > 0 seconds, got 0"),
        (_raw(tiers=[_tier(-5), _tier()]), "policy sos, tier 1: wait_s must be > 0 seconds, got -5"),
        (
            _raw(tiers=[{"roles": {"family": ["sms"]}, "wait_s": 60, "repeat": 0}, _tier()]),
            "policy sos, tier 1: repeat must be >= 1, got 0",
        ),
        (_raw(tiers=[]), "policy sos: no tiers"),
        (
            _raw(tiers=[_tier(), _tier(family=["sms"], volunteer=["sms"])]),
            "policy sos, tier 2: the last tier repeats until someone takes the alert, so it must page an "
            "always-staffed role (hotline or post_station); it pages family, volunteer",
        ),
        (_raw(start_tiers=4), "policy sos: start_tiers is 4 but must be between 1 and the number of tiers (3)"),
        (_raw(start_tiers=0), "policy sos: start_tiers is 0 but must be between 1"),
        (_raw(kinds=["sos", "sso"]), "policy sos: unknown kind 'sso' (known: call, cancel_late,"),
        (_raw(kinds=[]), "policy sos: no kinds"),
        (_raw(confirm_window_s=-1), "policy sos: confirm_window_s must be >= 0, got -1"),
        (
            {"policies": [_raw()["policies"][0]]},
            "no policy matches kind 'call' at severity 'info'; end the list with a catch-all policy",
        ),
        (
            {"policies": [{"name": "all", "kinds": sorted(KNOWN_KINDS), "tiers": [_tier()]}]},
            "no catch-all policy (kinds: [\"*\"]) matches severity 'info'",
        ),
        (
            {"policies": [{"name": "w", "kinds": ["*"], "severities": ["warning", "info"], "tiers": [_tier()]}]},
            "no policy matches kind 'call' at severity 'critical'",
        ),
        (
            {"policies": [_raw()["policies"][1], _raw()["policies"][0]]},
            "policy sos: never selected, earlier policies match all of its kinds and severities",
        ),
        ({"policies": [_raw()["policies"][0]] * 2}, "policy sos: name used twice"),
        ({**_raw(), "timezone": "Mars/Olympus"}, "timezone: unknown time zone 'Mars/Olympus'"),
        ({**_raw(), "quiet_hours": "22:00"}, "quiet_hours: '22:00' is not HH:MM-HH:MM"),
        ({**_raw(), "quiet_hours": "07:00-07:00"}, "quiet_hours: '07:00-07:00' starts and ends at the same"),
        ({**_raw(), "on_scene_margin_s": -1}, "on_scene_margin_s must be >= 0"),
        ({**_raw(), "default_eta_s": 0}, "default_eta_s must be > 0"),
        # type errors from msgspec name the key
        ({**_raw(), "quiet": "22:00-07:00"}, "escalation: Object contains unknown field `quiet`"),
        (
            _raw(tiers=[_tier(family=["fax"]), _tier()]),
            "escalation.policies[0].tiers[0].roles[...][0]: Invalid enum value 'fax'",
        ),
        (_raw(severities=["urgent"]), "escalation.policies[0].severities[0]: Invalid enum value 'urgent'"),
        (_raw(tiers=[_tier("soon"), _tier()]), "escalation.policies[0].tiers[0].wait_s: Expected `int`"),
        (_raw(name=None), "escalation.policies[0].name: Expected `str`, got `null`"),
    ],
)
def test_errors_name_the_policy_and_tier(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError) as error:
        load_escalation(copy.deepcopy(raw))
    assert message in str(error.value)


def test_numbers_from_the_environment_are_accepted() -> None:
    """Environment overrides arrive as YAML scalars; strings of digits must still load."""
    config = load_escalation({**_raw(), "on_scene_margin_s": "300"})
    assert config.on_scene_margin_s == 300


def test_default_escalation_is_valid_and_ends_every_policy_in_an_always_staffed_tier() -> None:
    assert validate(DEFAULT_ESCALATION) is DEFAULT_ESCALATION
    for policy in DEFAULT_ESCALATION.policies:
        assert set(policy.tiers[-1].roles) & set(ALWAYS_STAFFED), policy.name
    assert EscalationConfig().policies == DEFAULT_ESCALATION.policies  # an absent `policies:` key ships these


def test_default_yaml_is_the_default_config() -> None:
    raw = yaml.safe_load(DEFAULT_ESCALATION_YAML)
    assert set(raw) == {"escalation"}
    assert load_escalation(raw["escalation"]) == DEFAULT_ESCALATION


def test_known_kinds_are_every_kind_the_detectors_emit() -> None:
    constants = {value for name, value in vars(detection).items() if name.isupper() and isinstance(value, str)}
    assert constants == KNOWN_KINDS | NOT_ALERT_KINDS


@pytest.mark.parametrize(
    ("kind", "severity", "policy"),
    [
        ("sos", "critical", "sos"),
        ("sos", "warning", "sos"),  # sos names no severities: any
        ("fall_no_recovery", "critical", "critical_health"),
        ("fall", "critical", "critical_health"),
        ("hypoglycaemia", "critical", "critical_health"),
        ("hypoglycaemia", "warning", "care_warning"),
        ("hypertensive_crisis", "critical", "critical_health"),
        ("geofence_exit", "critical", "wandering"),
        ("geofence_exit", "warning", "warning"),
        ("low_battery", "critical", "device_health"),
        ("device_silent", "warning", "device_health"),
        ("fall", "warning", "care_warning"),
        ("call", "warning", "call"),
        ("cancel_late", "info", "info"),
        ("inactivity", "warning", "warning"),
        ("inactivity", "critical", "default"),
        ("a_kind_added_later", "critical", "default"),
        ("a_kind_added_later", "info", "info"),
    ],
)
def test_select_policy_by_kind_and_severity(kind: str, severity: Severity, policy: str) -> None:
    assert select_policy(DEFAULT_ESCALATION, kind, severity).name == policy


def test_select_policy_first_match_wins_and_catch_all_takes_the_rest() -> None:
    config = load_escalation(_raw(severities=["critical"]))
    assert select_policy(config, "sos", "critical").name == "sos"
    assert select_policy(config, "sos", "warning").name == "default"
    assert select_policy(config, "fall", "critical").name == "default"


def test_every_kind_and_severity_has_a_default_policy_with_start_tiers_in_range() -> None:
    for kind in KNOWN_KINDS:
        for severity in LEVEL_SEVERITY:
            policy = select_policy(DEFAULT_ESCALATION, kind, severity)
            assert 1 <= policy.start_tiers <= len(policy.tiers)


@pytest.mark.parametrize(
    ("kind", "confirm_s", "start_tiers"),
    [
        ("sos", 0, 2),
        ("fall_no_recovery", 60, 2),
        ("hypertensive_crisis", 60, 2),
        ("geofence_exit", 0, 2),
    ],
)
def test_default_emergencies_start_family_and_grid_worker_at_once(kind: str, confirm_s: int, start_tiers: int) -> None:
    policy = select_policy(DEFAULT_ESCALATION, kind, "critical")
    assert (policy.confirm_window_s, policy.start_tiers) == (confirm_s, start_tiers)
    assert [set(t.roles) for t in policy.tiers[:2]] == [{"family"}, {"grid_worker"}]
    assert set(policy.tiers[-1].roles) == {"hotline"}


def test_default_warnings_start_with_family_only() -> None:
    policy = select_policy(DEFAULT_ESCALATION, "geofence_exit", "warning")
    assert policy.start_tiers == 1 and set(policy.tiers[0].roles) == {"family"}

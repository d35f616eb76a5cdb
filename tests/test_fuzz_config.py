"""Config and registry loaders under arbitrary YAML: a ConfigError/RegistryError saying where, nothing else.

Documents are arbitrary bytes, arbitrary YAML values, and the shipped config (or a full
registry) with one value somewhere replaced by anything YAML can hold. The checks are
``tests/fuzz_checks.check_config`` and ``check_registry``.
"""

from __future__ import annotations

import os
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import ConfigError, load_config
from gateway.domain.registry import RegistryError, load_registry
from tests.fuzz_checks import check_config, check_registry

FAST = settings(max_examples=150, deadline=None, derandomize=True)
REPO = Path(__file__).resolve().parent.parent
SHIPPED = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
REGISTRY: dict[str, Any] = {
    "elders": [
        {
            "id": "e1",
            "name": "王秀英",
            "community": "幸福社区",
            "grid": "g1",
            "address": "幸福路12号",
            "lives_alone": True,
            "conditions": ["dementia", "diabetes"],
            "home": {"lat": 31.2304, "lon": 121.4737},
            "thresholds": {"hr_critical_high": 130.0, "glucose_critical_low": 3.0},
            "fences": [
                {
                    "id": "home",
                    "circle": {"lat": 31.2304, "lon": 121.4737, "radius_m": 300},
                    "active": "20:00-06:00",
                    "severity": "critical",
                },
                {
                    "id": "park",
                    "geojson": {
                        "type": "Polygon",
                        "coordinates": [
                            [[121.47, 31.23], [121.48, 31.23], [121.48, 31.24], [121.47, 31.24], [121.47, 31.23]]
                        ],
                    },
                },
            ],
            "devices": [
                {"id": "wb-1", "type": "wristband", "reporting_interval_s": 5},
                {"id": "pg-1", "type": "pager"},
            ],
            "contacts": [
                {"name": "王强", "phone": "+8613800000001", "priority": 1},
                {"name": "Mei", "phone": "+14155550100", "language": "en", "channels": ["sms"]},
            ],
        }
    ],
    "responders": [
        {
            "id": "grid",
            "name": "王芳",
            "role": "grid_worker",
            "phone": "+8613900000001",
            "grid": "g1",
            "shifts": ["daily 08:00-20:00"],
        },
        {"id": "station", "name": "驿站", "role": "post_station", "phone": "+8621000000001", "community": "幸福社区"},
        {"id": "hotline", "name": "热线", "role": "hotline", "phone": "+8640000000001"},
    ],
    "roster_overrides": [
        {
            "responder": "grid",
            "start": "2026-11-18T08:00:00+08:00",
            "end": "2026-11-18T20:00:00+08:00",
            "on_duty": False,
        }
    ],
}

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=30),
    st.binary(max_size=8),
    st.dates(),
    st.datetimes(),
    st.sampled_from(
        [
            "",
            "~",
            "yes",
            "0x1F",
            "1_000",
            ".inf",
            "-.nan",
            "+8613800000000",
            "00:00-24:00",
            "20:00-06:00",
            "Asia/Shanghai",
            "../etc",
            "\x00",
            "*",
            "[",
            "{{",
            "2026-11-18T08:00:00",
        ]
    ),
)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keys = st.one_of(st.text(max_size=12), st.integers())
    return st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3))


_values = st.recursive(_scalars, _containers, max_leaves=10)


def _dump(value: Any) -> bytes:
    return yaml.safe_dump(value, allow_unicode=True).encode()


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a document a value can be swapped: each mapping value and list item."""
    out = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            out += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            out += _paths(child, (*prefix, i))
    return out


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, *rest = path
    copy = dict(doc) if isinstance(doc, dict) else list(doc)
    copy[head] = _replace(doc[head], tuple(rest), value)
    return copy


@st.composite
def _mutated(draw: st.DrawFn, document: Any) -> bytes:
    doc = document
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        doc = _replace(doc, path, draw(_values))
        if draw(st.integers(0, 4)) == 0 and isinstance(doc, dict):  # and an unknown key somewhere
            doc = {**doc, draw(st.text(max_size=8)): draw(_values)}
    return _dump(doc)


_yaml_text = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.sampled_from(
        [
            b"!!python/object:os.system [ls]",
            b"a: &a [*a]",
            b"? [a]\n: 1",
            b"- - - -",
            b"---\n---\n",
            b"\xef\xbb\xbfmqtt: {}",
            b"mqtt: !!binary aGk=",
            b"%YAML 1.1\n---\n{}",
            b"{a: 1, a: 2}",
            b"\t",
            b"\x00",
            b"mqtt:\n\tport: 1",
        ]
    ),
)


@FAST
@given(data=st.one_of(_yaml_text, _values.map(_dump)))
def test_any_document_loads_or_names_the_problem(data: bytes) -> None:
    check_config(data)
    check_registry(data)


@settings(FAST, max_examples=40)  # the shipped config takes ~50 ms to parse (pure-Python YAML)
@given(data=_mutated(SHIPPED))
def test_the_shipped_config_with_any_value_changed(data: bytes) -> None:
    check_config(data)


@settings(FAST, max_examples=60)
@given(data=_mutated(REGISTRY))
def test_a_full_registry_with_any_value_changed(data: bytes) -> None:
    check_registry(data)


_env_names = st.builds(
    lambda a, b: f"ELDERCARE_{a}__{b}",
    st.sampled_from(["MQTT", "DATABASE", "NOTIFY", "DETECT", "ESCALATION", "X", "", "MQTT__PORT"]),
    st.sampled_from(
        ["PORT", "DSN", "TWILIO__AUTH_TOKEN", "TIMEZONE", "QUIET_HOURS", "TOPIC_FILTERS", "PASSWORD_FILE", "", "X__Y"]
    ),
)


@settings(FAST, max_examples=40)
@given(
    environ=st.dictionaries(
        _env_names,
        st.one_of(
            st.text(max_size=30), _values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip())
        ).filter(lambda v: "\x00" not in v),
        max_size=3,
    )
)
def test_any_environment_override_loads_or_names_the_variable(environ: dict[str, str]) -> None:
    check_config(_dump(SHIPPED), environ)


def test_the_fixtures_are_valid() -> None:
    assert check_config(_dump(SHIPPED)) == ""
    assert check_registry(_dump(REGISTRY)) == ""


# -- regressions: each escaped as a bare exception before --------------------------------------


@pytest.mark.parametrize(("loader", "error"), [(load_config, ConfigError), (load_registry, RegistryError)])
@pytest.mark.parametrize(
    ("data", "words"),
    [
        ("elders: []\nmqtt: {client_id: 网关}\n".encode("gbk"), "not UTF-8 text"),  # UnicodeDecodeError
        # RecursionError from PyYAML's pure-Python composer (the config); libyaml's parser, which
        # reads the registry, stops at its own nesting limit or at the missing content instead
        (b"[" * 700, "nested too deeply|did not find expected node content"),
    ],
)
def test_regression_unreadable_files_are_load_errors(
    tmp_path: Path, loader: Any, error: type[Exception], data: bytes, words: str
) -> None:
    path = tmp_path / "file.yaml"
    path.write_bytes(data)
    with pytest.raises(error, match=words):
        loader(path, **({"environ": {}} if loader is load_config else {}))


@pytest.mark.parametrize(("value", "words"), [("[unclosed", "not valid YAML"), ("[" * 700, "nested too deeply")])
def test_regression_bad_yaml_in_an_environment_override_names_the_variable(value: str, words: str) -> None:
    with pytest.raises(ConfigError, match=f"ELDERCARE_MQTT__TOPIC_FILTERS: .*{words}"):
        load_config(None, environ={"ELDERCARE_MQTT__TOPIC_FILTERS": value})


TWILIO_ENV = {
    "ELDERCARE_NOTIFY__TWILIO__ACCOUNT_SID": "AC1",
    "ELDERCARE_NOTIFY__TWILIO__SMS_FROM": "+15005550006",
    "ELDERCARE_NOTIFY__TWILIO__VOICE_FROM": "+15005550006",
}


def test_regression_a_secret_file_that_is_a_directory_or_not_text(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o700)
    binary = tmp_path / "token"
    binary.write_bytes(b"\xff\xfe")
    os.chmod(binary, 0o600)
    for path, words in [(str(tmp_path), "cannot read"), (str(binary), "not UTF-8"), ("a\x00b", "not a file name")]:
        with pytest.raises(ConfigError, match=f"notify.twilio.auth_token_file: .*{words}"):
            load_config(None, environ={**TWILIO_ENV, "ELDERCARE_NOTIFY__TWILIO__AUTH_TOKEN_FILE": path})


def test_yaml_dates_are_type_errors_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(_dump({"mqtt": {"port": date(2026, 1, 1)}, "detect": {"night": datetime(2026, 1, 1)}}))
    with pytest.raises(ConfigError, match=r"mqtt\.port|detect\.night"):
        load_config(path, environ={})


@pytest.mark.parametrize("position", [{}, b"AAAA", "12", [True, False], [1.0], [1.0, 2.0, 3.0, 4.0], None])
def test_regression_a_fence_position_that_is_not_numbers_is_a_registry_error(position: Any) -> None:
    """``{}`` as a position raised KeyError, ``!!binary`` bytes a numpy ValueError inside shapely."""
    ring = [[121.47, 31.23], [121.48, 31.23], position, [121.47, 31.24], [121.47, 31.23]]
    registry = {
        "elders": [
            {"id": "e1", "name": "x", "fences": [{"id": "f", "geojson": {"type": "Polygon", "coordinates": [ring]}}]}
        ]
    }
    message = check_registry(_dump(registry))
    assert "elder e1, fence f: ring 0 has a position that is not [lon, lat]" in message

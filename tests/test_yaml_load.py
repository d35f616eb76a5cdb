"""The fast YAML reader gives exactly what PyYAML's safe loader (over libyaml) gives, or its own error."""

from __future__ import annotations

import math
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain import yaml_load
from gateway.domain.yaml_load import load_yaml

# plain tokens where YAML 1.1 and 1.2 part ways, and some where they agree
TRICKY = [
    "yes", "No", "ON", "off", "y", "n", "true", "False", "null", "~", "",
    "010", "0o17", "0x1F", "-0x1F", "0b101", "1_000", "1:20", "18:30", "08:00", "190:20:30",
    "1e5", "1.0e5", "1.5e+5", "1.5E-3", ".5", "5.", "-.inf", ".NaN", "0", "-0", "+1", "00",
    "12345678901234567890123", "2024-01-01", "2001-12-14 21:59:43.10 -5", "2001-12-14T21:59:43Z",
    "<<", "=", "+8613800000000", "31.2304", "-121.4737", "150", "e00000", "网格1", "幸福路100号",
    "No. 5", "a: b", "a #b", "- x", "[a]", "!", "!!str 1", "&a x", "x y z",
]  # fmt: skip


def same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def check(text: str) -> None:
    try:
        expected = yaml.load(text, Loader=yaml.CSafeLoader)  # what the registry was read with before
    except yaml.YAMLError as error:
        with pytest.raises(yaml.YAMLError) as raised:
            load_yaml(text)
        assert type(raised.value) is type(error)
        return
    assert same(load_yaml(text), expected), text


@pytest.mark.parametrize("token", TRICKY)
@pytest.mark.parametrize("shape", ["a: {}\n", "- {}\n", "{{a: {}}}\n", "[{}, 1]\n", "{}: 1\n", "a:\n  - {}\n"])
def test_each_tricky_token_plain_reads_as_pyyaml_reads_it(token: str, shape: str) -> None:
    check(shape.format(token))


@pytest.mark.parametrize("token", TRICKY)
def test_each_tricky_token_quoted_reads_as_pyyaml_reads_it(token: str) -> None:
    check(f"a: '{token}'\nb: \"{token}\"\n")


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\na: 2\n",  # PyYAML keeps the last; ryaml refuses
        "--- 1\n--- 2\n",  # two documents: PyYAML refuses
        "%YAML 1.1\n---\na: yes\n",
        "---\na: 1\n",
        "a: \x07\n",  # a character PyYAML refuses
        "x: &a {k: 1}\ny: *a\nz:\n  <<: *a\n  m: 2\n",
        "a: |\n  x\n  y\nb: >\n  x\n  y\n",
        'a: "\\x41\\u4e2d\\N\\/"\n',
        "a:\n\t- 1\n",
        "a: [1, [2, [3, [4]]]]\n",
        "[" * 200 + "]" * 200,
        "",
        "# only a comment\n",
    ],
)
def test_documents_that_differ_by_more_than_a_token(text: str) -> None:
    check(text)


scalars = st.one_of(
    st.sampled_from(TRICKY),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
    st.text(max_size=12),
)
trees = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(trees, st.booleans())
def test_anything_pyyaml_writes_reads_back_the_same(tree: Any, flow: bool) -> None:
    check(yaml.safe_dump(tree, allow_unicode=True, default_flow_style=flow))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(TRICKY), st.sampled_from(TRICKY)), min_size=1, max_size=6))
def test_hand_written_plain_mappings(pairs: list[tuple[str, str]]) -> None:
    check("".join(f"k{i}: {value}\n" for i, (_, value) in enumerate(pairs)))
    check("- [" + ", ".join(v for v, _ in pairs) + "]\n")


def test_a_registry_shaped_file_takes_the_fast_reading() -> None:
    elders = [
        {
            "id": f"e{i:05d}",
            "name": "王秀英",
            "grid": f"网格{i // 200 + 1}",
            "home": {"lat": 31.2304 + i / 1e5, "lon": 121.4737},
            "contacts": [{"name": "王强", "phone": f"+86138{i:08d}", "relation": "child"}],
            "devices": [{"id": f"wb-{i:06d}", "type": "wristband", "reporting_interval_s": 60}],
            "conditions": [],
        }
        for i in range(300)
    ]
    text = yaml.safe_dump({"elders": elders}, allow_unicode=True)
    assert yaml_load._one_reading(text)
    assert load_yaml(text) == yaml.load(text, Loader=yaml.CSafeLoader)


def test_a_file_with_a_yaml_1_1_boolean_takes_pyyaml() -> None:
    text = "elders:\n- id: e1\n  consent: yes\n"
    assert not yaml_load._one_reading(text)
    assert load_yaml(text) == {"elders": [{"id": "e1", "consent": True}]}

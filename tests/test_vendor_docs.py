"""The vendor document and schema files are current, and every example decodes."""

from __future__ import annotations

import json

from devices.codec import Route, decode_payload, route_topic
from devices.contracts import topic_for
from devices.docs import HERE, render_readme, schema_files
from devices.examples import EXAMPLE_TS, EXAMPLES


def test_generated_files_are_current() -> None:
    assert (HERE / "README.md").read_text() == render_readme(), "run: python -m devices.docs"
    for path, text in schema_files().items():
        assert path.read_text() == text, f"{path.name} is stale: run python -m devices.docs"


def test_every_documented_example_is_accepted() -> None:
    for example in EXAMPLES:
        route = route_topic(topic_for(example.device_type, "dev-1", example.channel))
        assert isinstance(route, Route)
        got = decode_payload(json.dumps(example.payload).encode(), route, EXAMPLE_TS)
        assert isinstance(got, list) and got, f"{example.title}: {got}"


def test_status_without_ts_is_accepted_for_the_will_message() -> None:
    route = route_topic("eldercare/v1/wristband/wb-1/status")
    assert isinstance(route, Route)
    got = decode_payload(b'{"online": false}', route, EXAMPLE_TS)
    assert isinstance(got, list) and got[0].online is False

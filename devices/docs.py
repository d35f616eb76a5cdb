"""Generates the vendor document (devices/README.md) and the JSON Schema files.

Run ``python -m devices.docs`` after changing a contract; a test fails while the
committed files differ from what this writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from devices.contracts import CONTRACTS, DEVICE_TYPES, TOPIC_PREFIX, json_schema, topic_for
from devices.examples import EXAMPLES

HERE = Path(__file__).resolve().parent
SCHEMA_DIR = HERE / "schemas"

INTRO = f"""# Device integration guide

This is the contract between device firmware and the eldercare gateway. It is
generated from the code in `devices/contracts.py` (`python -m devices.docs`), so it
cannot drift from what the gateway accepts. JSON Schema files for every topic are in
`devices/schemas/`.

## Connecting

- MQTT 3.1.1 or 5 to the community broker; TLS on port 8883 in production.
- Username = the device id, password = the credential issued by `eldercare provision`.
  The broker only lets a device write under its own id and read its own `cmd` topic.
- Publish at **QoS 1**: the gateway stores a message before it is acknowledged, so a
  PUBACK from the broker means the message is safe. Re-send on reconnect what was not
  acknowledged; the gateway stores a repeated reading (same device, same `ts`) once.
- Set a will on `{TOPIC_PREFIX}/{{type}}/{{device_id}}/status` with payload
  `{{"online": false}}` (no `ts`: the gateway uses the time it arrives), so the gateway
  learns when a device drops off.

## Topics

`{TOPIC_PREFIX}/{{type}}/{{device_id}}/{{channel}}`

| part | values |
|---|---|
| type | {", ".join(f"`{t}`" for t in DEVICE_TYPES)} |
| device_id | 1-64 characters: letters, digits, `_`, `.`, `-` (first a letter or digit) |
| channel | `telemetry` (periodic measurements), `event` (button presses, device-side detections), `status` (battery, signal, firmware, online), `cmd` (downlink, gateway to device; subscribe to it) |

## Payload rules

- A JSON object with `ts`: milliseconds since the Unix epoch (integer), or an RFC 3339
  time **with** an offset (`2026-11-18T16:26:40+08:00`).
- Measurements in fixed units: degrees WGS-84, metres, beats per minute, percent,
  mmol/L for glucose (mg/dL accepted with `"unit": "mg/dL"` and converted), mmHg, g.
- Every measurement is optional unless the schema says it is required; unknown extra
  fields are ignored, so new firmware can add fields.
- A payload may name its own `device_id`; if it differs from the topic it is refused.
- SenML (RFC 8428) JSON packs are accepted on `telemetry` and `status`: the record
  name (after `bn` + `n`, last `:` or `/` part) is the field name below, `bt` + `t` the
  time in seconds, `v` / `vs` / `vb` the value, and a unit, when given, must match.
- Refused: wrong types, physically impossible values (SpO2 above 100, latitude above
  90, NaN or infinite numbers), times more than 7 days old or 5 minutes ahead,
  payloads over 64 KiB. A refused message is kept in the gateway's dead letters with
  the reason; `eldercare device check` shows the reason for your sample payloads.
"""


def render_readme() -> str:
    parts = [INTRO, "## Topics and examples\n"]
    for device_type in DEVICE_TYPES:
        parts.append(f"### {device_type}\n")
        for channel in ("telemetry", "event", "status"):
            contract = CONTRACTS.get((device_type, channel))
            if contract is None:
                continue
            topic = topic_for(device_type, "{device_id}", channel)
            doc = (contract.__doc__ or "").strip().splitlines()
            parts.append(f"#### `{topic}`\n")
            if doc:
                parts.append(doc[0] + "\n")
            schema = json_schema(device_type, channel)
            definition = schema["$defs"][contract.__name__]  # type: ignore[index]
            required = set(definition.get("required", []))
            parts.append("| field | type | required |\n|---|---|---|")
            for name, spec in definition["properties"].items():
                parts.append(f"| `{name}` | {_describe(spec)} | {'yes' if name in required else ''} |")
            parts.append("")
            if "AccelWindow" in schema["$defs"]:  # type: ignore[operator]
                parts.append(
                    "`accel` is an object: `rate_hz` (samples per second, > 0, <= 1000) and "
                    "`samples`, a list of `[x, y, z]` accelerations in g (each within +-64 g, "
                    "at most 6,000 samples), the first taken at `ts`.\n"
                )
            for example in EXAMPLES:
                if (example.device_type, example.channel) == (device_type, channel):
                    parts.append(f"{example.title}:\n")
                    parts.append("```json\n" + json.dumps(example.payload, ensure_ascii=False) + "\n```\n")
        parts.append(f"Downlink: subscribe to `{topic_for(device_type, '{device_id}', 'cmd')}`.\n")
        if device_type in ("wristband", "pager"):
            parts.append(
                'Commands are JSON: `{"cmd": "confirm", "alert": "A17", "timeout_s": 60}` asks '
                'the elder "are you OK?" (a cancel press within the timeout means yes); '
                '`{"cmd": "help_coming", "alert": "A17", "by": "王芳"}` reassures them that '
                "someone is on the way. Publish an event `received` with the alert code once shown.\n"
            )
    return "\n".join(parts)


def _describe(spec: dict[str, object]) -> str:
    options = spec.get("anyOf")
    if isinstance(options, list):
        return " or ".join(_describe(o) for o in options if o.get("type") != "null")
    if "$ref" in spec:
        return str(spec["$ref"]).rsplit("/", 1)[-1]
    kind = str(spec.get("type", "any"))
    if "enum" in spec:
        return "one of " + ", ".join(f"`{v}`" for v in spec["enum"])  # type: ignore[attr-defined]
    bounds = []
    for key, sign in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in spec:
            bounds.append(f"{sign} {spec[key]}")
    if spec.get("format") == "date-time":
        kind = "RFC 3339 string"
    if "description" in spec:
        bounds.append(str(spec["description"]))
    return kind + (f" ({', '.join(bounds)})" if bounds else "")


def schema_files() -> dict[Path, str]:
    return {
        SCHEMA_DIR / f"{device_type}-{channel}.schema.json": json.dumps(
            json_schema(device_type, channel), indent=2, sort_keys=True
        )
        + "\n"
        for device_type, channel in sorted(CONTRACTS)
    }


def main() -> int:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for path, text in schema_files().items():
        path.write_text(text)
    (HERE / "README.md").write_text(render_readme())
    print(f"wrote {HERE / 'README.md'} and {len(schema_files())} schema files", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

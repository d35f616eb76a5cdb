"""Coverage-guided fuzzing (atheris, i.e. libFuzzer) of the gateway's input parsers (issue #8).

The targets check the same invariants as the hypothesis tests (``tests/fuzz_checks.py``),
but with libFuzzer's coverage feedback over the instrumented Python code:

* ``payload``  ``route_topic`` + ``decode_payload``: records of the contract, or a reason
* ``batch``    ``BatchDecoder`` on several messages: good kept, each bad one dead-lettered, counts add up
* ``mqtt``     ``parse_stream`` fed whole and in pieces: only ``MqttProtocolError``, same packets
* ``webhooks`` the real Twilio webhook app over a private PostgreSQL: 403/400/404, never 5xx
* ``config``   ``load_config`` on any file: a ``ConfigError`` naming file, key or variable
* ``registry`` ``load_registry`` on any file: a ``RegistryError`` saying where

Each target runs in its own process (libFuzzer ends the process when its time is up).
An input that breaks an invariant is a finding: it is saved with its traceback under
``OUT/findings/<target>/`` (one file per distinct exception and place) and fuzzing goes
on. A libFuzzer stop (timeout, out of memory) is saved too and the target restarted for
the rest of its time. The corpus is kept in ``OUT/corpus/<target>/`` so later runs start
where earlier ones stopped. Not part of the test suite.

Run: ``.venv/bin/python bench/fuzz.py --seconds 300 [--targets payload,mqtt] [--out var/fuzz]``
Last lines: one summary row per target (executions, exec/s, coverage, corpus, findings).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TARGETS = ("payload", "batch", "mqtt", "webhooks", "config", "registry")
MAX_LEN = {"payload": 8192, "batch": 8192, "mqtt": 4096, "webhooks": 2048, "config": 8192, "registry": 4096}
# Python modules whose coverage guides each target (msgspec is C: not instrumented).
INSTRUMENT = {
    "payload": ["devices", "gateway.pipeline"],
    "batch": ["devices", "gateway.pipeline"],
    "mqtt": ["gateway.ingest.mqtt_wire"],
    "webhooks": ["gateway.notify.twilio_callbacks", "starlette.formparsers", "multipart", "twilio.request_validator"],
    "config": ["gateway.config", "gateway.alerting.policy", "yaml"],
    "registry": ["gateway.domain.registry", "gateway.detect.geo", "gateway.domain.people", "yaml"],
}
DICTIONARY = {
    "payload": [
        '"ts"',
        '"hr"',
        '"spo2"',
        '"lat"',
        '"lon"',
        '"steps"',
        '"battery"',
        '"worn"',
        '"accel"',
        '"samples"',
        '"rate_hz"',
        '"glucose"',
        '"unit"',
        '"mg/dL"',
        '"systolic"',
        '"diastolic"',
        '"event"',
        '"sos"',
        '"alert"',
        '"firmware"',
        '"online"',
        '"device_id"',
        '"bn"',
        '"bt"',
        '"n"',
        '"v"',
        '"vs"',
        '"vb"',
        '"u"',
        '"t"',
        "NaN",
        "Infinity",
        "1e999",
        "-0",
        "18446744073709551616",
        '"\\u0000"',
        '"\\ud800"',
        '"2026-11-18T16:26:40+08:00"',
        "true",
        "null",
        "[",
        "{",
        "]",
        "}",
        ":",
        ",",
    ],
    "config": [
        "mqtt:",
        "database:",
        "ingest:",
        "detect:",
        "escalation:",
        "notify:",
        "twilio:",
        "policies:",
        "tiers:",
        "roles:",
        "kinds:",
        "wait_s:",
        "_file:",
        "!!binary",
        "&a",
        "*a",
        "? ",
        "- ",
        "{",
        "[",
        ".inf",
        ".nan",
        "~",
        "port:",
        "timezone:",
        "quiet_hours:",
    ],
    "registry": [
        "elders:",
        "responders:",
        "roster_overrides:",
        "fences:",
        "geojson:",
        "coordinates:",
        "Polygon",
        "circle:",
        "radius_m:",
        "devices:",
        "contacts:",
        "phone:",
        "shifts:",
        "daily ",
        "thresholds:",
        "!!binary",
        "&a",
        "*a",
        "- ",
        "[",
        "{",
        ".nan",
        "~",
    ],
    "webhooks": [
        "MessageSid",
        "CallSid",
        "From",
        "Body",
        "Digits",
        "CallStatus",
        "MessageStatus",
        "\\x1e",
        "\\x00",
        "%00",
        "+8613800000001",
        "completed",
        "no-answer",
        "1 A1",
    ],
    "mqtt": ["\\x30", "\\x32", "\\x40\\x02", "\\x90", "\\x20\\x02", "\\xd0\\x00", "\\xff\\xff\\xff\\x7f", "\\x80\\x80"],
}
REGISTRY_SEED = """\
elders:
- id: e1
  name: 王秀英
  community: 幸福社区
  grid: g1
  conditions: [dementia]
  home: {lat: 31.2304, lon: 121.4737}
  thresholds: {hr_critical_high: 130}
  fences:
  - {id: home, circle: {lat: 31.2304, lon: 121.4737, radius_m: 300}, active: "20:00-06:00"}
  - id: park
    geojson: {type: Polygon, coordinates: [[[121.47, 31.23], [121.48, 31.23], [121.48, 31.24], [121.47, 31.23]]]}
  devices: [{id: wb-1, type: wristband}]
  contacts: [{name: 王强, phone: "+8613800000001"}]
responders:
- {id: grid, name: 王芳, role: grid_worker, phone: "+8613900000001", grid: g1, shifts: ["daily 08:00-20:00"]}
- {id: hotline, name: 热线, role: hotline, phone: "+8640000000001"}
roster_overrides:
- {responder: grid, start: "2026-11-18T08:00:00+08:00", end: "2026-11-18T20:00:00+08:00"}
"""


# -- child: one target under libFuzzer -----------------------------------------------------------


def _seeds(target: str) -> list[bytes]:
    import msgspec

    from devices.contracts import topic_for
    from devices.examples import EXAMPLES
    from gateway.ingest.mqtt_wire import encode_pubacks, encode_publish
    from tests.fuzz_checks import ROUTES

    if target in ("payload", "batch"):
        out = []
        for ex in EXAMPLES:
            index = ROUTES.index(topic_for(ex.device_type, "dev-1", ex.channel))
            payload = msgspec.json.encode(ex.payload)
            out.append(
                bytes([index]) + payload
                if target == "payload"
                else bytes([0, index]) + len(payload).to_bytes(2, "big") + payload
            )
        return out
    if target == "mqtt":
        return [
            bytes([3, 5, 9])
            + encode_publish("eldercare/v1/wristband/wb-1/telemetry", b'{"ts":1}', qos=1, packet_id=7)
            + encode_pubacks([1, 2]),
            bytes([0, 0, 0]) + encode_publish("t", b"x" * 200, qos=0),
        ]
    if target == "webhooks":
        return [
            b"\x00\x00\x00MessageSid\x1eSM1\x1eFrom\x1e+8613800000001\x1eBody\x1e1",
            b"\x01\x00\x00CallSid\x1eCA1\x1eDigits\x1e1",
            b"\x02\x00\x00CallSid\x1eCA1\x1eCallStatus\x1ebusy",
            b"\x00\x00\x04MessageSid=SM1&From=%2B8613800000001&Body=1",
        ]
    if target == "config":
        return [(REPO / "config.yaml").read_bytes(), b"mqtt: {port: 1883}\n", b"escalation: {policies: []}\n"]
    return [REGISTRY_SEED.encode(), b"elders: []\n"]


def _one_input(target: str, dsn: str | None) -> Callable[[bytes], None]:
    from tests import fuzz_checks as checks

    routes = checks.ROUTES
    # Inputs are read front to back by hand (atheris' data provider takes integers from the end,
    # which would split the seeds' JSON): the first byte picks the topic, the rest is the payload.
    if target == "payload":

        def payload(data: bytes) -> None:
            pick = data[0] if data else 0
            topic = routes[pick % len(routes)] if pick < 240 else data[1:41].decode("utf-8", "replace")
            checks.check_payload(topic, data[1:] if pick < 240 else data[41:])

        return payload
    if target == "batch":

        def batch(data: bytes) -> None:  # count, then per message: topic byte, 2-byte length, payload
            topics, payloads, pos = [], [], 1
            for _ in range(1 + (data[0] % 8 if data else 0)):
                pick = data[pos] if pos < len(data) else 0
                size = int.from_bytes(data[pos + 1 : pos + 3], "big") % 4096
                topics.append(routes[pick % len(routes)].encode() if pick < 240 else data[pos + 3 : pos + 43])
                payloads.append(data[pos + 3 : pos + 3 + size])
                pos += 3 + size
            checks.check_batch(topics, payloads)

        return batch
    if target == "mqtt":

        def mqtt(data: bytes) -> None:
            checks.check_stream(data[3:], list(data[:3]))

        return mqtt
    if target == "config":

        def config(data: bytes) -> None:
            checks.check_config(data)

        return config
    if target == "registry":

        def registry(data: bytes) -> None:
            checks.check_registry(data)

        return registry
    assert dsn is not None
    hooks = checks.start_webhooks(dsn)
    paths = ["/twilio/sms", "/twilio/voice/gather/{}", "/twilio/status/{}", "/twilio/voice/gather/x", "/twilio/sms/"]
    content_types = [
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "multipart/form-data",
        "text/plain",
        "application/json",
    ]

    def webhooks(data: bytes) -> None:  # path byte, id byte, mode byte, then fields split by \x1e
        head = data[:3].ljust(3, b"\x00")
        nid = hooks.notification_ids[0] if head[1] < 128 else int.from_bytes(data[3:12], "big")
        path = paths[head[0] % len(paths)].format(nid)
        mode = head[2] % 5
        if mode == 4:  # any body, any content type, maybe a signature
            headers: dict[str, str | bytes] = {"Content-Type": content_types[head[1] % len(content_types)]}
            if head[0] & 0x80:
                headers["X-Twilio-Signature"] = data[3:23]
            checks.check_raw_webhook(hooks, path, data[3:], headers)
            return
        fields = data[3:].decode("utf-8", "replace").split("\x1e")
        params = dict(zip(fields[::2], fields[1::2], strict=False))
        params.pop("", None)
        checks.check_form_webhook(hooks, path, params, checks.SIGN_MODES[mode], b"forged")

    return webhooks


def _dict_escape(word: str) -> str:
    """A libFuzzer dictionary entry: ``\\xNN`` byte escapes kept, quotes and backslashes escaped."""
    if word.startswith("\\x"):
        return word
    return word.replace("\\", "\\\\").replace('"', '\\"')


def _signature(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if str(REPO) in f.filename and "/.venv/" not in f.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    return f"{type(error).__name__} at {where}"


def run_child(target: str, seconds: int, out: Path, dsn: str | None) -> None:
    import logging

    import atheris  # type: ignore[import-untyped]

    logging.disable(logging.CRITICAL)  # refused webhooks and bad payloads log by design

    corpus = out / "corpus" / target
    findings = out / "findings" / target
    corpus.mkdir(parents=True, exist_ok=True)
    findings.mkdir(parents=True, exist_ok=True)
    include = [*INSTRUMENT[target], "tests.fuzz_checks"]
    with atheris.instrument_imports(include=include):
        one_input = _one_input(target, dsn)
    if not any(corpus.iterdir()):
        for seed in _seeds(target):
            (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    seen: set[str] = {p.stem for p in findings.glob("*.txt")}

    def test_one_input(data: bytes) -> None:
        try:
            one_input(data)
        except Exception as error:  # a finding: keep it and go on fuzzing
            signature = _signature(error)
            key = hashlib.sha1(signature.encode()).hexdigest()[:12]
            if key not in seen:
                seen.add(key)
                (findings / f"{key}.bin").write_bytes(data)
                (findings / f"{key}.txt").write_text(
                    f"{signature}\ninput: {data[:400]!r}\n\n" + "".join(traceback.format_exception(error))
                )
                print(f"FINDING {signature}", file=sys.stderr, flush=True)

    args = [
        sys.argv[0],
        f"-max_total_time={seconds}",
        f"-max_len={MAX_LEN[target]}",
        "-timeout=20",
        "-rss_limit_mb=3072",
        "-print_final_stats=1",
        f"-artifact_prefix={findings}/libfuzzer-",
    ]
    if target in DICTIONARY:
        words = out / f"{target}.dict"
        words.write_text("".join(f'"{_dict_escape(w)}"\n' for w in DICTIONARY[target]))
        args.append(f"-dict={words}")
    atheris.Setup([*args, str(corpus)], test_one_input)
    atheris.Fuzz()


# -- parent: run each target for its time, restart after a libFuzzer stop, summarise -----------

_STATUS = re.compile(r"^#(\d+)\s+\w+\s+(?:cov: (\d+) ft: (\d+) )?corp: (\d+)/(\S+)", re.MULTILINE)
_STOP = re.compile(r"ERROR: libFuzzer: ([\w-]+)|==\d+== ERROR: libFuzzer: ([\w-]+)|ALARM: working on the last Unit for")


def run_target(target: str, seconds: int, out: Path, dsn: str | None) -> dict[str, Any]:
    log_path = out / f"{target}.log"
    started = time.monotonic()
    execs, cov, ft, corp, stops = 0, 0, 0, 0, []
    with log_path.open("w") as log:
        while (left := seconds - (time.monotonic() - started)) > 5:
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    target,
                    "--seconds",
                    str(int(left)),
                    "--out",
                    str(out),
                    *(["--dsn", dsn] if dsn else []),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                check=False,
            )
            text = log_path.read_text(errors="replace")
            runs = text.split("INFO: Running with entropic power schedule")[-1]
            status = _STATUS.findall(runs)
            if status:
                n, c, f, k, _ = status[-1]
                execs += int(n)
                cov, ft, corp = max(cov, int(c or 0)), max(ft, int(f or 0)), max(corp, int(k))
            if proc.returncode != 0:
                stop = _STOP.search(runs)
                stops.append(
                    next((g for g in stop.groups() if g), "timeout")
                    if stop and stop.groups()
                    else f"exit {proc.returncode}"
                )
                if len(stops) > 20:
                    break
    elapsed = time.monotonic() - started
    findings = sorted((out / "findings" / target).glob("*.txt"))
    return {
        "target": target,
        "seconds": round(elapsed),
        "execs": execs,
        "execs_per_s": round(execs / elapsed),
        "cov": cov,
        "features": ft,
        "corpus": corp,
        "stops": stops,
        "findings": [p.read_text().splitlines()[0] for p in findings],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=300, help="fuzzing time per target")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--out", type=Path, default=REPO / "var" / "fuzz")
    parser.add_argument("--child", choices=TARGETS, help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args()
    if args.child:
        run_child(args.child, args.seconds, args.out, args.dsn)
        return
    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; known: {', '.join(TARGETS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    postgres = None
    pg_root = Path(tempfile.mkdtemp(prefix="eldercare-fuzz-pg-"))
    try:
        for target in targets:
            dsn = None
            if target == "webhooks":
                from gateway.storage.schema import upgrade
                from simulators.services.postgres import LocalPostgres

                postgres = LocalPostgres(pg_root, fsync=False)
                postgres.start()
                dsn = postgres.dsn
                upgrade(dsn)
            print(f"fuzzing {target} for {args.seconds} s ...", flush=True)
            result = run_target(target, args.seconds, args.out, dsn)
            results.append(result)
            print(json.dumps(result, ensure_ascii=False), flush=True)
            if postgres is not None:
                postgres.stop("immediate")
                postgres = None
    finally:
        if postgres is not None:
            postgres.stop("immediate")
        shutil.rmtree(pg_root, ignore_errors=True)
    print(f"\n{'target':<9} {'seconds':>7} {'execs':>10} {'exec/s':>7} {'cov':>6} {'ft':>7} {'corpus':>6} findings")
    for r in results:
        print(
            f"{r['target']:<9} {r['seconds']:>7} {r['execs']:>10} {r['execs_per_s']:>7} {r['cov']:>6} "
            f"{r['features']:>7} {r['corpus']:>6} {len(r['findings'])}"
            + (f" (libFuzzer stops: {', '.join(r['stops'])})" if r["stops"] else "")
        )
        for finding in r["findings"]:
            print(f"    {finding}")
    print(
        f"fuzz_findings={sum(len(r['findings']) for r in results)} "
        f"execs={sum(r['execs'] for r in results)} seconds={sum(r['seconds'] for r in results)}"
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()

"""Bad input, a database outage and a SIGKILLed gateway: nothing acknowledged is lost."""

from __future__ import annotations

import json
import time

from simulators.services.postgres import LocalPostgres
from tests.support import GatewayRunner, Publisher, count, ingest_connected, query, wait_until


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def reading(device: str, ts: int, hr: float = 70) -> tuple[str, bytes]:
    return (
        f"eldercare/v1/wristband/{device}/telemetry",
        json.dumps({"ts": ts, "hr": hr, "spo2": 97, "battery": 80}).encode(),
    )


BAD_INPUTS: dict[str, tuple[str, bytes, str]] = {
    # name: (topic, payload, expected words in the reason)
    "wrong type": (
        "eldercare/v1/wristband/wb-bad/telemetry",
        b'{"ts": 1, "hr": "fast"}',
        "Expected `float | null`, got `str` - at `$.hr`",
    ),
    "spo2 of 140": ("eldercare/v1/wristband/wb-bad/telemetry", b'{"ts": NOW, "spo2": 140}', "<= 100.0 - at `$.spo2`"),
    "latitude 200": (
        "eldercare/v1/wristband/wb-bad/telemetry",
        b'{"ts": NOW, "lat": 200, "lon": 1}',
        "<= 90.0 - at `$.lat`",
    ),
    "NaN": ("eldercare/v1/wristband/wb-bad/telemetry", b'{"ts": NOW, "hr": NaN}', "not valid JSON"),
    "Infinity": (
        "eldercare/v1/wristband/wb-bad/telemetry",
        b'{"ts": NOW, "hr": 1e999}',
        "Number out of range - at `$.hr`",
    ),
    "far future": ("eldercare/v1/wristband/wb-bad/telemetry", b'{"ts": FUTURE, "hr": 70}', "too far in the future"),
    "far past": ("eldercare/v1/wristband/wb-bad/telemetry", b'{"ts": 1000, "hr": 70}', "too far in the past"),
    "oversize": (
        "eldercare/v1/wristband/wb-bad/telemetry",
        b'{"ts": NOW, "pad": "' + b"x" * 100_000 + b'"}',
        "exceeds the limit",
    ),
    "unknown type": ("eldercare/v1/toaster/t-1/telemetry", b'{"ts": NOW}', "unknown device type"),
    "other device": (
        "eldercare/v1/wristband/wb-bad/telemetry",
        b'{"ts": NOW, "device_id": "wb-victim", "hr": 70}',
        "names device 'wb-victim'",
    ),
    "not json": ("eldercare/v1/bp/bp-bad/telemetry", b"systolic=120", "not valid JSON"),
    "impossible bp": (
        "eldercare/v1/bp/bp-bad/telemetry",
        b'{"ts": NOW, "systolic": 80, "diastolic": 120}',
        "systolic must be above",
    ),
    "bad senml unit": (
        "eldercare/v1/wristband/wb-bad/telemetry",
        b'[{"bt": NOWS, "n": "hr", "u": "Cel", "v": 70}]',
        "unit 'Cel'",
    ),
    "pager telemetry": ("eldercare/v1/pager/pg-bad/telemetry", b'{"ts": NOW}', "a pager has no telemetry channel"),
    "bad event": ("eldercare/v1/pager/pg-bad/event", b'{"ts": NOW, "event": "dance"}', "Invalid enum value 'dance'"),
}


def test_each_bad_input_is_dead_lettered_and_good_messages_around_it_are_stored(
    gateway: GatewayRunner, publisher: Publisher, database: str
) -> None:
    gateway.start()
    t = now_ms()
    messages: list[tuple[str, bytes]] = []
    for i, (topic, payload, _) in enumerate(BAD_INPUTS.values()):
        payload = (
            payload.replace(b"NOWS", str(t / 1000).encode())
            .replace(b"NOW", str(t).encode())
            .replace(b"FUTURE", str(t + 86_400_000).encode())
        )
        messages.append(reading("wb-good", t + i))
        messages.append((topic, payload))
    messages.append(reading("wb-good", t + 1000))
    publisher.publish_many(messages)
    wait_until(lambda: count(database, "dead_letters") >= len(BAD_INPUTS), what="dead letters")
    wait_until(lambda: count(database, "telemetry_wristband") == len(BAD_INPUTS) + 1, what="every good reading")
    letters = query(database, "SELECT topic, reason, length(payload) FROM dead_letters ORDER BY id")
    assert len(letters) == len(BAD_INPUTS)
    # device events are decoded ahead of telemetry, so the order differs: match each by its reason
    unmatched = list(letters)
    for name, (topic, _, words) in BAD_INPUTS.items():
        found = [row for row in unmatched if row[0] == topic and words in row[1]]
        assert found, f"{name}: no dead letter on {topic} saying {words!r} among {unmatched}"
        assert found[0][2] > 0, name
        unmatched.remove(found[0])
    assert query(database, "SELECT count(*) FROM telemetry_wristband WHERE device_id = 'wb-victim'") == [(0,)]


def test_database_down_while_publishing_every_reading_stored_exactly_once(
    gateway: GatewayRunner, publisher: Publisher, database: str, postgres_server: LocalPostgres
) -> None:
    gw = gateway.start()
    t = now_ms()
    first = [reading(f"wb-{i % 50}", t + i) for i in range(500)]
    publisher.publish_many(first)
    wait_until(lambda: count(database, "telemetry_wristband") == 500, what="first 500 rows")

    postgres_server.stop("fast")
    try:
        during = [reading(f"wb-{i % 50}", t + 10_000 + i) for i in range(2000)]
        publisher.publish_many(during)
        wait_until(lambda: gw.stats.spooled_messages >= 2000, what="outage readings spooled")
        assert not gw.database_up
    finally:
        postgres_server.start()
    after = [reading(f"wb-{i % 50}", t + 20_000 + i) for i in range(500)]
    publisher.publish_many(after)
    wait_until(
        lambda: count(database, "telemetry_wristband") == 3000,
        timeout_s=30,
        what="all 3,000 readings after the database returned",
    )
    wait_until(lambda: gw.spool.is_empty(), what="spool drained")
    assert query(database, "SELECT count(DISTINCT (device_id, time)) FROM telemetry_wristband") == [(3000,)]
    assert gw.database_up


def test_gateway_killed_mid_stream_loses_nothing_published_at_qos1(
    gateway: GatewayRunner, broker: object, database: str
) -> None:
    from simulators.services.mosquitto import LocalMosquitto

    assert isinstance(broker, LocalMosquitto)
    gateway.start_process()
    pub = Publisher(broker.port)
    try:
        wait_until(lambda: ingest_connected(gateway.log_text()), what="gateway connected")
        t = now_ms()
        total = 20_000
        messages = [reading(f"wb-{i % 200}", t + i) for i in range(total)]
        infos = [pub.client.publish(topic, payload, qos=1) for topic, payload in messages]
        # kill while the stream is still flowing
        wait_until(lambda: count(database, "telemetry_wristband") > 2000, what="stream started")
        gateway.kill()
        for info in infos:
            info.wait_for_publish(60)
        stored_at_kill = count(database, "telemetry_wristband")
        assert stored_at_kill < total, "the kill came too late to test anything"
        gateway.start_process()
        wait_until(
            lambda: count(database, "telemetry_wristband") == total,
            timeout_s=60,
            what="every published reading after restart",
        )
        assert query(database, "SELECT count(DISTINCT (device_id, time)) FROM telemetry_wristband") == [(total,)]
    finally:
        pub.close()

"""Scale-out: two gateway processes, one broker (shared subscription), one database.

The same input gives the same alerts as one process, none lost or doubled; per-device
detector state (fence dwell, persistence, silence) stays right although Mosquitto deals
each device's messages to both instances in turn; an instance SIGKILLed just as SOS
presses arrive for its elders loses none of them; an instance joining mid-walk takes the
elders it gains with their state rebuilt from the database.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
import yaml

from gateway.cluster.ownership import Ownership, owner_of, topic_device
from gateway.detect.engine import DetectorSet
from gateway.detect.index import DetectSettings
from gateway.domain.registry import load_registry
from gateway.pipeline.batch import DecodedBatch, RawBatch
from gateway.pipeline.decode import BatchDecoder
from simulators.services.mosquitto import LocalMosquitto
from simulators.services.postgres import LocalPostgres
from simulators.services.process import free_port
from tests.support import GatewayRunner, Publisher, count, ingest_connected, query, wait_until

pytestmark = pytest.mark.slow

HOME = (31.2304, 121.4737)
OUTSIDE_LON = HOME[1] + 500 / (111_320 * 0.855)  # 500 m east: outside a 200 m fence
DETECT = {"fence_dwell_readings": 3, "fence_dwell_s": 20, "silent_factor": 2.0, "tick_s": 0.2}
CLUSTER = {"heartbeat_s": 0.5, "dead_after_s": 3, "settle_s": 0.3}
_databases = itertools.count()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def elder(elder_id: str, devices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": elder_id,
        "name": f"老人{elder_id}",
        "community": "c",
        "grid": "g",
        "home": {"lat": HOME[0], "lon": HOME[1]},
        "devices": devices,
        **extra,
    }


def scenario_registry(sos: int) -> dict[str, Any]:
    elders = [elder(f"s{i}", [{"id": f"pg-{i}", "type": "pager", "reporting_interval_s": 3600}]) for i in range(sos)]
    fence = [{"id": "home", "circle": {"lat": HOME[0], "lon": HOME[1], "radius_m": 200}}]
    elders += [
        elder(
            f"d{i}",
            [{"id": f"wb-d{i}", "type": "wristband", "reporting_interval_s": 600}],
            conditions=["dementia"],
            fences=fence,
        )
        for i in range(6)
    ]
    elders += [
        elder(f"g{i}", [{"id": f"gl-{i}", "type": "glucose", "reporting_interval_s": 3600}], conditions=["diabetes"])
        for i in range(3)
    ]
    elders += [elder(f"o{i}", [{"id": f"wb-o{i}", "type": "wristband", "reporting_interval_s": 600}]) for i in range(4)]
    elders += [elder("q", [{"id": "wb-q", "type": "wristband", "reporting_interval_s": 1}])]
    return {
        "elders": elders,
        "responders": [{"id": "hotline", "name": "热线", "role": "hotline", "phone": "+8640000000001"}],
    }


def band(device: str, ts: int, **values: Any) -> tuple[str, bytes]:
    return f"eldercare/v1/wristband/{device}/telemetry", json.dumps({"ts": ts, **values}).encode()


def sos(device: str, ts: int) -> tuple[str, bytes]:
    return f"eldercare/v1/pager/{device}/event", json.dumps({"ts": ts, "event": "sos"}).encode()


def scenario(sos_count: int) -> list[tuple[str, bytes]]:
    """Interleaved so that round-robin hands every device's readings to both instances."""
    t0 = now_ms() - 180_000
    rounds: list[list[tuple[str, bytes]]] = []
    for step in range(6):
        t = t0 + step * 10_000
        batch: list[tuple[str, bytes]] = []
        # dementia elders walk out: two fixes at home, then four 500 m away (a dwell of 3 readings / 20 s);
        # d4 and d5 turn back after two fixes outside: no exit for them
        for i in range(6):
            out = step >= 2 and not (i >= 4 and step >= 4)
            batch.append(band(f"wb-d{i}", t, lat=HOME[0], lon=OUTSIDE_LON if out else HOME[1], gps_acc_m=8))
        # SpO2 85 %: o0..o2 for every reading (persistence: 3), o3 only for two readings
        for i in range(4):
            low = i < 3 or step in (2, 3)
            batch.append(band(f"wb-o{i}", t, spo2=85 if low else 97, hr=70))
        rounds.append(batch)
    presses = [sos(f"pg-{i}", t0 + 60_000 + i) for i in range(sos_count)]
    glucose = [
        (
            f"eldercare/v1/glucose/gl-{i}/telemetry",
            json.dumps({"ts": t0 + 70_000, "glucose": 3.0, "context": "fasting"}).encode(),
        )
        for i in range(3)
    ]
    messages = [m for batch in rounds for m in batch]
    # presses and glucose spread through the stream
    for k, m in enumerate(presses + glucose):
        messages.insert((k * 7) % (len(messages) + 1), m)
    messages.append(band("wb-q", now_ms(), hr=72))  # then silent: one reading, interval 1 s
    return messages


def new_database(server: LocalPostgres) -> Iterator[str]:
    name = f"scale{next(_databases)}"
    admin = server.dsn.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield server.dsn.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def second_database(postgres_server: LocalPostgres) -> Iterator[str]:
    yield from new_database(postgres_server)


class Instances:
    """Gateway processes of one cluster, each with its own work directory and HTTP port."""

    def __init__(
        self, broker: LocalMosquitto, dsn: str, root: Path, registry: Path, cluster: dict[str, Any] | None = None
    ) -> None:
        self.broker, self.dsn, self.root, self.registry = broker, dsn, root, registry
        self.cluster = {**CLUSTER, **(cluster or {})}
        self.runners: dict[str, GatewayRunner] = {}
        self.ports: dict[str, int] = {}

    def start(self, name: str, *, cluster: bool = True) -> GatewayRunner:
        runner = GatewayRunner(self.broker.port, self.dsn, self.root / name)
        port = free_port()
        overrides: dict[str, Any] = {
            "mqtt": {"client_id": name, **({"share_group": "eldercare"} if cluster else {})},
            "registry": {"file": str(self.registry)},
            "detect": DETECT,
            "notify": {"http_port": port, "public_base_url": f"http://127.0.0.1:{port}"},
        }
        if cluster:
            overrides["cluster"] = {"enabled": True, "instance_id": name, **self.cluster}
        runner.start_process(**overrides)
        self.runners[name], self.ports[name] = runner, port
        # one at a time: each imports the registry file at start, and two imports at once collide
        wait_until(lambda: ingest_connected(runner.log_text()), timeout_s=30, what=f"{name} up")
        return runner

    def wait_live(self, names: list[str]) -> None:
        """Each of our instances sees exactly ``names`` as the live set."""
        members = ", ".join(sorted(names))
        for name, runner in self.runners.items():
            wait_until(
                lambda r=runner: _last_live_set(r.log_text()) == members, timeout_s=30, what=f"{name} sees {members}"
            )

    def rows_stored(self, name: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.ports[name]}/metrics", timeout=10).text
        match = re.search(r"^eldercare_rows_stored_total ([0-9.e+]+)$", text, re.M)
        assert match, text[:500]
        return float(match.group(1))

    def stop(self) -> None:
        for runner in self.runners.values():
            runner.stop()


def _last_live_set(log_text: str) -> str | None:
    found = re.findall(r"cluster: live instances (.*)", log_text)
    return found[-1].strip() if found else None


def alerts(dsn: str) -> Counter[tuple[str, str]]:
    return Counter((str(k), str(e)) for k, e in query(dsn, "SELECT kind, elder_id FROM alerts"))


def settle(dsn: str, at_least: int, quiet_s: float = 2.5, timeout_s: float = 60) -> Counter[tuple[str, str]]:
    """Alerts once there are ``at_least`` and none came for ``quiet_s``."""
    deadline = time.monotonic() + timeout_s
    last, since = Counter[tuple[str, str]](), time.monotonic()
    while time.monotonic() < deadline:
        current = alerts(dsn)
        if current != last:
            last, since = current, time.monotonic()
        elif sum(current.values()) >= at_least and time.monotonic() - since >= quiet_s:
            return current
        time.sleep(0.1)
    raise AssertionError(f"alerts did not settle: {sum(last.values())} of at least {at_least}")


def run(instances: Instances, dsn: str, messages: list[tuple[str, bytes]], expected_min: int) -> Counter[Any]:
    pub = Publisher(instances.broker.port)
    try:
        pub.publish_many(messages)
    finally:
        pub.close()
    return settle(dsn, expected_min)


# -- the scenario set: one process vs two ------------------------------------------------------------------


def test_two_instances_raise_the_same_alerts_as_one(
    broker: LocalMosquitto, database: str, second_database: str, tmp_path: Path
) -> None:
    sos_count = 200
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump(scenario_registry(sos_count), allow_unicode=True))
    # 200 SOS, 4 fence exits, 3 low glucose, 3 low SpO2 (o3: too short), 1 silent band
    expected_min = sos_count + 4 + 3 + 3 + 1

    single = Instances(broker, database, tmp_path / "single", registry)
    try:
        single.start("solo", cluster=False)
        started = time.monotonic()
        one = run(single, database, scenario(sos_count), expected_min)
        one_s = time.monotonic() - started
    finally:
        single.stop()

    two = Instances(broker, second_database, tmp_path / "two", registry)
    try:
        two.start("gw-a")
        two.start("gw-b")
        two.wait_live(["gw-a", "gw-b"])
        started = time.monotonic()
        both = run(two, second_database, scenario(sos_count), expected_min)
        both_s = time.monotonic() - started
        stored = {name: two.rows_stored(name) for name in ("gw-a", "gw-b")}
    finally:
        two.stop()

    print(
        f"one process: {sum(one.values())} alerts in {one_s:.1f} s; two: {sum(both.values())} in {both_s:.1f} s; "
        f"rows stored per instance {stored}"
    )
    assert one == both
    assert max(both.values()) == 1  # one alert per (kind, elder): nothing doubled
    kinds = Counter(kind for kind, _ in both)
    assert kinds == {"sos": sos_count, "geofence_exit": 4, "hypoglycaemia": 3, "spo2_low": 3, "device_silent": 1}
    assert {e for k, e in both if k == "geofence_exit"} == {"d0", "d1", "d2", "d3"}
    # the shared subscription split the storage: both stored a fair part, and together everything once
    assert all(n > 100 for n in stored.values()), stored
    assert count(second_database, "device_events") == sos_count
    assert count(second_database, "telemetry_wristband") == 6 * 6 + 4 * 6 + 1
    # detections dedupe on their key: timer detections too came from one owner only
    assert query(second_database, "SELECT count(*) FROM detections WHERE kind = 'device_silent'") == [(1,)]


# -- an instance dies just as SOS presses for its elders arrive --------------------------------------------


def test_sigkill_of_an_owner_loses_no_sos(broker: LocalMosquitto, database: str, tmp_path: Path) -> None:
    elders = 80
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump(scenario_registry(elders), allow_unicode=True))
    cluster = Instances(broker, database, tmp_path / "kill", registry)
    try:
        cluster.start("gw-a")
        cluster.start("gw-x")
        cluster.wait_live(["gw-a", "gw-x"])
        owned_by_x = [i for i in range(elders) if owner_of(f"s{i}".encode(), ["gw-a", "gw-x"]) == "gw-x"]
        assert 20 < len(owned_by_x) < 60
        presses = [sos(f"pg-{i}", now_ms() + k) for k, i in enumerate(owned_by_x)]
        presses += [sos(f"pg-{i}", now_ms() + 100 + i) for i in range(elders) if i not in owned_by_x][:10]
        pub = Publisher(broker.port)
        try:
            cluster.runners["gw-x"].kill()  # no goodbye: its row, sessions and queue stay behind
            killed = time.monotonic()
            pub.publish_many(presses)
        finally:
            pub.close()
        wait_until(
            lambda: query(database, "SELECT count(*) FROM alerts WHERE kind = 'sos'") == [(len(presses),)],
            timeout_s=40,
            what="an alert for every SOS",
        )
        took = time.monotonic() - killed
        time.sleep(1.5)  # nothing more arrives: no doubles
        per_elder = Counter(str(e) for (e,) in query(database, "SELECT elder_id FROM alerts WHERE kind = 'sos'"))
        assert len(per_elder) == len(presses) and set(per_elder.values()) == {1}
        # the dead instance's share of the stream was taken over and stored, then its row retired
        assert count(database, "device_events") == len(presses)
        assert query(database, "SELECT instance_id FROM gateway_instances") == [("gw-a",)]
        log_a = cluster.runners["gw-a"].log_text()
        assert "taking over its broker sessions" in log_a and "gw-x retired" in log_a
        print(
            f"{len(owned_by_x)} SOS for the killed instance's elders + 10 for the survivor's: all alerted "
            f"once, {took:.1f} s after the kill"
        )
    finally:
        cluster.stop()


def test_events_kept_in_memory_make_the_alerts_when_the_dead_ones_queue_is_out_of_reach(
    broker: LocalMosquitto, database: str, tmp_path: Path
) -> None:
    """A member dies with presses queued in a broker session the takeover does not reach (its row names
    another client id): the survivor's detect stream saw them all, and its replay uses what it kept."""
    elders = 60
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump(scenario_registry(elders), allow_unicode=True))
    cluster = Instances(broker, database, tmp_path / "ghost", registry)
    ghost = GhostMember(broker.port)
    try:
        cluster.start("gw-a")
        cluster.wait_live(["gw-a"])
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO gateway_instances (instance_id, shared_client_id, detect_client_id, host, pid) "
                "VALUES ('ghost', 'ghost-elsewhere', 'ghost-elsewhere.detect', 'nowhere', 1)"
            )
        cluster.wait_live(["ghost", "gw-a"])
        ghost.die()
        owned = [i for i in range(elders) if owner_of(f"s{i}".encode(), ["ghost", "gw-a"]) == "ghost"]
        pub = Publisher(broker.port)
        try:
            pub.publish_many([sos(f"pg-{i}", now_ms() + k) for k, i in enumerate(owned)])
        finally:
            pub.close()
        wait_until(
            lambda: query(database, "SELECT count(*) FROM alerts WHERE kind = 'sos'") == [(len(owned),)],
            timeout_s=30,
            what="an alert for every SOS",
        )
        time.sleep(1.0)
        assert sorted(str(e) for (e,) in query(database, "SELECT elder_id FROM alerts")) == sorted(
            f"s{i}" for i in owned
        )
        stored = count(database, "device_events")
        assert stored < len(owned)  # the rest still waits in the ghost's session
        assert "ghost retired" in cluster.runners["gw-a"].log_text()
    finally:
        ghost.close()
        cluster.stop()


class GhostMember:
    """A shared-subscription member that dies without a word: Mosquitto keeps queueing its share."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ghost-session", protocol=mqtt.MQTTv5)
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.subscribe("$share/eldercare/eldercare/v1/+/+/event", qos=1)
        self.client.loop_start()
        wait_until(lambda: self.client.is_connected(), what="ghost connected")
        time.sleep(0.3)  # its SUBSCRIBE is through

    def die(self) -> None:
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def close(self) -> None:
        self.client.loop_stop()


# -- an instance joins while elders are walking out: their dwell moves with them ---------------------------


def test_a_joining_instance_rebuilds_the_state_it_gains(broker: LocalMosquitto, database: str, tmp_path: Path) -> None:
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump(scenario_registry(0), allow_unicode=True))
    walkers = [f"d{i}" for i in range(4)]
    moving = [e for e in walkers if owner_of(e.encode(), ["gw-a", "gw-b"]) == "gw-b"]
    assert moving and len(moving) < len(walkers)
    cluster = Instances(broker, database, tmp_path / "join", registry)
    t0 = now_ms() - 120_000
    fixes = [
        [band(f"wb-{e}", t0 + step * 10_000, lat=HOME[0], lon=OUTSIDE_LON, gps_acc_m=8) for e in walkers]
        for step in range(4)
    ]
    try:
        cluster.start("gw-a")
        cluster.wait_live(["gw-a"])
        pub = Publisher(broker.port)
        try:
            pub.publish_many(fixes[0] + fixes[1])  # two of the three fixes a dwell needs, all seen by gw-a
            wait_until(lambda: count(database, "telemetry_wristband") == 2 * len(walkers), what="fixes stored")
            cluster.start("gw-b")
            cluster.wait_live(["gw-a", "gw-b"])
            wait_until(lambda: "cluster: replayed" in cluster.runners["gw-b"].log_text(), what="gw-b replayed")
            assert query(database, "SELECT count(*) FROM alerts") == [(0,)]
            pub.publish_many(fixes[2] + fixes[3])
        finally:
            pub.close()
        found = settle(database, len(walkers))
        assert found == Counter({("geofence_exit", e): 1 for e in walkers})
        replays = re.findall(r"cluster: replayed (\d+) rows of (\d+) devices", cluster.runners["gw-b"].log_text())
        assert any(int(rows) >= 2 * len(moving) for rows, _ in replays), replays
    finally:
        cluster.stop()


def test_cluster_needs_a_share_group(tmp_path: Path) -> None:
    from gateway.config import ConfigError, load_config
    from gateway.service import Gateway

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"cluster": {"enabled": True}, "storage": {"spool_dir": str(tmp_path)}}))
    with pytest.raises(ConfigError, match="share_group"):
        Gateway(load_config(path, environ={}))


# -- the pieces, without services --------------------------------------------------------------------------


def test_rendezvous_ownership_is_balanced_and_moves_little() -> None:
    keys = [f"e{i}".encode() for i in range(20_000)]
    two = Counter(owner_of(k, ["a", "b"]) for k in keys)
    assert abs(two["a"] - two["b"]) < 600
    three = {k: owner_of(k, ["a", "b", "c"]) for k in keys}
    moved = [k for k in keys if three[k] != owner_of(k, ["a", "b"])]
    assert all(three[k] == "c" for k in moved)  # a joining member only takes keys, never shuffles others
    assert abs(len(moved) - len(keys) / 3) < 600
    assert Ownership((), "a").owns(b"x")  # no live set known yet: own it (twice is safe, never is not)
    assert topic_device(b"eldercare/v1/pager/pg-7/event") == b"pg-7" and topic_device(b"bad/topic") == b""


def test_forget_returns_a_device_to_a_fresh_state(tmp_path: Path) -> None:
    """Every per-slot state array is reset by ``forget``: compare with a detector set that never saw it."""
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(scenario_registry(2), allow_unicode=True))
    registry = load_registry(path)
    settings = DetectSettings(fence_dwell_readings=3, fence_dwell_s=20)
    used, fresh = DetectorSet(registry, settings), DetectorSet(registry, settings)
    t = now_ms() - 60_000
    messages = [
        band(
            "wb-d0",
            t + k * 10_000,
            lat=HOME[0],
            lon=OUTSIDE_LON,
            gps_acc_m=8,
            spo2=85,
            hr=150,
            steps=100 + k,
            battery=4,
            worn=False,
        )
        for k in range(2)
    ]
    fall = json.dumps({"ts": t, "event": "fall"}).encode()
    messages += [sos("pg-0", t), ("eldercare/v1/wristband/wb-d0/event", fall)]
    raw = RawBatch(
        [m[0].encode() for m in messages],
        [m[1] for m in messages],
        [0] * len(messages),
        [False] * len(messages),
        now_ms(),
    )
    decoded = BatchDecoder().decode(raw)
    for rows in decoded.tables:
        assert used.process(DecodedBatch(tables=[rows], received_ms=raw.received_ms)) is not None
    assert used.events.pending and used.falls.fall_ts.any() and used.geofence.out_count.any()
    used.forget(["wb-d0", "pg-0"])
    assert not used.events.pending
    fresh.health._ensure()
    fresh.falls._ensure()
    fresh.vitals._ensure(fresh.index.capacity)
    for name in ("vitals", "health", "falls", "geofence"):
        a, b = getattr(used, name), getattr(fresh, name)
        for attr, value in vars(a).items():
            arrays = value.items() if isinstance(value, dict) else [(None, value)]
            for key, arr in arrays:
                if isinstance(arr, np.ndarray):
                    other = getattr(b, attr)[key] if key is not None else getattr(b, attr)
                    n = min(len(arr), len(other))
                    assert np.array_equal(arr[:n], other[:n], equal_nan=True), f"{name}.{attr}[{key}]"

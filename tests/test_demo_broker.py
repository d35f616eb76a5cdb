"""The demo's fallback broker (for machines without Mosquitto) carries the gateway's traffic."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.demo_broker import DemoBroker, matches
from tests.support import GatewayRunner, Publisher, count, query, wait_until


@pytest.fixture
def demo_broker() -> Iterator[DemoBroker]:
    broker = DemoBroker()
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(broker.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(5)
    yield broker
    asyncio.run_coroutine_threadsafe(broker.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_topic_filters_match_as_mqtt_says() -> None:
    assert matches("eldercare/v1/+/+/event", "eldercare/v1/pager/pg-1/event")
    assert matches("eldercare/#", "eldercare/v1/pager/pg-1/event")
    assert not matches("eldercare/v1/+/+/event", "eldercare/v1/pager/pg-1/telemetry")
    assert not matches("eldercare/v1/+", "eldercare/v1/pager/pg-1")


def test_the_gateway_ingests_and_detects_through_the_demo_broker(
    demo_broker: DemoBroker, database: str, tmp_path: Path
) -> None:
    runner = GatewayRunner(broker_port=demo_broker.port, dsn=database, workdir=tmp_path / "gw")
    try:
        runner.start()
        pub = Publisher(demo_broker.port)
        try:
            t = time.time_ns() // 1_000_000
            pub.publish_many(
                [
                    (f"eldercare/v1/wristband/wb-{i}/telemetry", json.dumps({"ts": t, "hr": 70, "spo2": 97}).encode())
                    for i in range(200)
                ]
            )
            pub.publish("eldercare/v1/pager/pg-1/event", json.dumps({"ts": t, "event": "sos"}))
            wait_until(lambda: count(database, "telemetry_wristband") == 200, what="200 readings stored")
            wait_until(lambda: query(database, "SELECT kind FROM detections") == [("sos",)], what="the SOS detected")
        finally:
            pub.close()
    finally:
        runner.stop()


def test_the_demo_falls_back_to_its_own_broker_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from simulators import demo_services
    from simulators.services.process import LocalServiceError

    def missing() -> str:
        raise LocalServiceError("mosquitto not found")

    monkeypatch.setattr(demo_services, "mosquitto_binary", missing)
    said: list[str] = []

    async def main() -> None:
        async with demo_services.demo_services(said.append) as (broker, database):
            assert isinstance(broker, DemoBroker) and broker.port > 0
            assert database.dsn

    asyncio.run(main())
    assert any("embedded MQTT 5 broker" in line for line in said)


def test_without_postgresql_or_its_stand_in_the_demo_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import builtins

    from simulators import demo_services
    from simulators.services.process import LocalServiceError

    def missing() -> Path:
        raise LocalServiceError("initdb not found")

    real_import = builtins.__import__

    def no_pgserver(name: str, *args: object, **kwargs: object) -> object:
        if name == "pgserver":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(demo_services, "postgres_bindir", missing)
    monkeypatch.setattr(builtins, "__import__", no_pgserver)
    with pytest.raises(LocalServiceError, match="pip install pgserver"), demo_services._database(tmp_path, print):
        pass

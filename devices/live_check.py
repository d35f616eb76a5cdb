"""Check a live device's traffic against the contract: what a vendor runs during integration.

It subscribes to the device's topics on the broker (as any MQTT client; with the
production ACL, use an account allowed to read them) and decodes every message with
the same code the gateway uses, printing a verdict per message and a summary.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devices.codec import Rejected, decode_payload, route_topic


@dataclass(slots=True)
class LiveCheck:
    ok: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.ok + self.rejected


def verdict(topic: str, payload: bytes, now_ms: int) -> str | None:
    """None when the message follows the contract, else why not."""
    route = route_topic(topic)
    if isinstance(route, Rejected):
        return route.reason
    result = decode_payload(payload, route, now_ms)
    return result.reason if isinstance(result, Rejected) else None


def check_live(
    host: str,
    port: int,
    device: str,
    *,
    seconds: float,
    count: int | None = None,
    username: str | None = None,
    password: str | None = None,
    say: Callable[[str], None] = print,
) -> LiveCheck:
    """Watch ``device`` (or ``+`` for every device) for ``seconds`` or ``count`` messages."""
    inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"eldercare-check-{time.time_ns() % 10**9}", protocol=mqtt.MQTTv5
    )
    if username:
        client.username_pw_set(username, password)
    subscribed = queue.Queue[bool]()
    topics = [f"eldercare/v1/+/{device}/{channel}" for channel in ("telemetry", "event", "status")]

    def on_connect(c: mqtt.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        if getattr(reason, "is_failure", False):
            subscribed.put(False)
            return
        c.subscribe([(t, 1) for t in topics])

    def on_subscribe(c: mqtt.Client, userdata: object, mid: int, reasons: object, props: object) -> None:
        subscribed.put(True)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = lambda c, u, m: inbox.put((m.topic, bytes(m.payload)))
    client.connect(host, port)
    client.loop_start()
    result = LiveCheck()
    try:
        try:
            if not subscribed.get(timeout=10):
                raise ConnectionError(f"the broker at {host}:{port} refused the connection")
        except queue.Empty:
            raise ConnectionError(f"no answer from the broker at {host}:{port}") from None
        say(f"watching {', '.join(topics)} for {seconds:g} s" + (f" or {count} messages" if count else ""))
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and (count is None or result.total < count):
            try:
                topic, payload = inbox.get(timeout=min(0.5, max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                continue
            problem = verdict(topic, payload, time.time_ns() // 1_000_000)
            if problem is None:
                result.ok += 1
                say(f"ok        {topic}")
            else:
                result.rejected += 1
                result.reasons[problem] = result.reasons.get(problem, 0) + 1
                say(f"REJECTED  {topic}: {problem}")
    finally:
        client.loop_stop()
        client.disconnect()
    say(f"checked {result.total}: {result.ok} ok, {result.rejected} rejected")
    return result

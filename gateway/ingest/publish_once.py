"""Publish one command to a device (QoS 1) from a short-lived process, such as the CLI.

The running gateway publishes downlinks on its own MQTT session; ``eldercare alerts ack``
has none, so it connects, publishes, waits for the PUBACK and disconnects. paho-mqtt is
already a dependency and does this in a few lines; it runs in a thread so the caller's
event loop is not blocked.
"""

from __future__ import annotations

import asyncio

import paho.mqtt.client as mqtt
import paho.mqtt.publish as mqtt_publish


async def publish_once(
    host: str,
    port: int,
    topic: str,
    payload: bytes,
    *,
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    timeout_s: float = 10.0,
) -> None:
    """Return once the broker has acknowledged the message; raise on refusal or time-out."""
    auth = {"username": username, "password": password} if username else None

    def send() -> None:
        mqtt_publish.single(
            topic,
            payload,
            qos=1,
            hostname=host,
            port=port,
            client_id=client_id,
            auth=auth,  # type: ignore[arg-type]
            protocol=mqtt.MQTTv5,
        )

    async with asyncio.timeout(timeout_s):
        await asyncio.to_thread(send)

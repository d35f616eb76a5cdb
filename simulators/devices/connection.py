"""One device's MQTT session, as firmware holds it (paho-mqtt 2, MQTT 5).

The device logs in with its own credentials (username = device id, the password
``eldercare provision`` issued), leaves a will ``{"online": false}`` on its ``status``
topic, subscribes to its ``cmd`` topic at QoS 1 on every (re)connect, publishes at
QoS 1 and keeps what the broker has not acknowledged to send again after a reconnect.
A lost connection is retried with exponential back-off (``backoff_s``: first and
longest wait). A refusal by the broker (wrong password, unknown device) is logged once
per reason and kept in ``refused``; ``wait_connected`` raises :class:`DeviceRefused`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from devices.contracts import topic_for
from simulators.devices.wire import WILL_PAYLOAD

log = logging.getLogger("simulators.devices")


class DeviceRefused(ConnectionError):
    """The broker refused the device (``reason``: the CONNACK reason, e.g. bad credentials)."""

    def __init__(self, device_id: str, reason: str) -> None:
        super().__init__(f"broker refused {device_id}: {reason}")
        self.device_id = device_id
        self.reason = reason


class DeviceConnection:
    """A device's own MQTT connection; ``start`` it, ``publish`` to its channels, ``close`` it."""

    def __init__(
        self,
        device_type: str,
        device_id: str,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        password: str | None = None,
        username: str | None = None,
        keepalive_s: int = 30,
        backoff_s: tuple[float, float] = (0.5, 30.0),
        tls_ca: str | None = None,
        on_command: Callable[[bytes], None] | None = None,
        on_online: Callable[[], None] | None = None,
    ) -> None:
        self.device_type = device_type
        self.device_id = device_id
        self.host, self.port, self.keepalive_s = host, port, keepalive_s
        self.on_command = on_command
        self.on_online = on_online
        self.cmd_topic = topic_for(device_type, device_id, "cmd")
        self.refused: str | None = None  # the broker's reason, while it keeps refusing
        self.connects = 0
        self.drops = 0
        self.sent = 0
        self.acked = 0
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._refused = threading.Event()
        self._logged_refusal: str | None = None
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id, protocol=mqtt.MQTTv5)
        if password is not None:
            client.username_pw_set(username or device_id, password)
        if tls_ca is not None:
            client.tls_set(ca_certs=tls_ca)
        client.will_set(topic_for(device_type, device_id, "status"), WILL_PAYLOAD, qos=1, retain=False)
        client.reconnect_delay_set(min_delay=max(1, round(backoff_s[0])), max_delay=max(1, round(backoff_s[1])))
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)  # unbounded: a device offline for a while sends it all later
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        self.client = client
        self._started = False
        self._closing = False

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> DeviceConnection:
        """Connect in the background (and keep reconnecting); returns at once."""
        if not self._started:
            self._closing = False
            self.client.connect_async(self.host, self.port, keepalive=self.keepalive_s)
            self.client.loop_start()
            self._started = True
        return self

    def wait_connected(self, timeout_s: float = 10.0) -> None:
        """Block until connected; :class:`DeviceRefused` if the broker refuses the device."""
        waited = 0.0
        while waited < timeout_s:
            if self._connected.wait(0.05):
                return
            if self.refused is not None:
                raise DeviceRefused(self.device_id, self.refused)
            waited += 0.05
        if self.refused is not None:
            raise DeviceRefused(self.device_id, self.refused)
        raise TimeoutError(f"{self.device_id} did not connect to {self.host}:{self.port} within {timeout_s} s")

    def publish(self, channel: str, payload: bytes) -> None:
        """QoS 1 to ``eldercare/v1/{type}/{id}/{channel}``; queued while offline."""
        self.client.publish(topic_for(self.device_type, self.device_id, channel), payload, qos=1)
        with self._lock:
            self.sent += 1

    def drop(self) -> None:
        """Lose the network without a goodbye (battery pulled, out of range): the broker sends the will.

        The device notices, backs off and reconnects like firmware would.
        """
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until the broker has acknowledged everything published; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self.acked >= self.sent:
                    return True
            time.sleep(0.02)
        return False

    def close(self, flush_s: float = 2.0) -> None:
        """Disconnect cleanly (no will) once what was sent is acknowledged; stop the network thread."""
        if self._started:
            if self.connected:
                self.flush(flush_s)
            self._closing = True
            self.client.disconnect()
            self.client.loop_stop()
            self._started = False
        self._connected.clear()

    # paho callbacks, on its network thread

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            text = str(reason)
            self.refused = text
            self._refused.set()
            if self._logged_refusal != text:
                log.error("%s: broker %s:%s refused the connection: %s", self.device_id, self.host, self.port, text)
                self._logged_refusal = text
            return
        self.refused = None
        self._logged_refusal = None
        self.connects += 1
        client.subscribe(self.cmd_topic, qos=1)
        self._connected.set()
        log.info("%s: connected to %s:%s", self.device_id, self.host, self.port)
        if self.on_online is not None:
            self.on_online()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self._connected.is_set() and not self._closing:
            self.drops += 1
            log.warning("%s: connection lost (%s); reconnecting with back-off", self.device_id, reason)
        self._connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == self.cmd_topic and self.on_command is not None:
            self.on_command(bytes(message.payload))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            self.acked += 1

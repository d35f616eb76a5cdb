"""MQTT 5 PUBLISH parsing: our codec against the ``mqtt5`` codec (Rust) and paho-mqtt 2.

The same recorded stream of QoS 1 PUBLISH frames, cut into the 256 KiB reads asyncio
hands a protocol, is parsed by each in turn (alternating, best of five, in packets per
CPU-second of this process, which other load on a shared machine disturbs less than
wall time):

* ours: ``gateway.ingest.mqtt_wire.parse_stream``, as ``IngestConnection`` runs it;
* ``mqtt5.read``, one packet at a time as aiomqtt 3 runs it (``PublishPacket`` objects,
  topic decoded to ``str``), and the same feeding our ``InboundPublishes`` (topic back to
  bytes, as the batcher and decoder take it): what swapping it in would cost;
* paho-mqtt 2: it parses only from a socket (``_packet_read`` calls ``recv`` for the
  first byte, each length byte, then the body), so its public path is ``loop_read`` on
  a socketpair fed by a thread (on the first 20,000 frames: it is slow); its private
  ``paho.mqtt._packet.decode_publish`` is timed too, on bodies framed beforehand
  (framing not counted).

Every codec's topics, payloads and packet ids are checked equal to ours.
Two streams: the wristband readings bench/ingest.py queues, and every documented
example payload (devices.examples) in turn, the acceleration window a full 2 s at 50 Hz.

Run alone: ``.venv/bin/python bench/mqtt_parse.py [--messages 200000]``
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from devices.examples import EXAMPLES  # noqa: E402
from gateway.ingest.mqtt_wire import ControlPacket, InboundPublishes, encode_publish, parse_stream  # noqa: E402

READ_SIZE = 256 * 1024  # what asyncio's selector transport reads at most per data_received
PAHO_SOCKET_FRAMES = 20_000
Parsed = tuple[list[bytes], list[bytes], list[int]]


def documented_stream(n: int, devices: int) -> list[tuple[str, bytes]]:
    """Every documented example in turn; the acceleration window gets 2 s of 50 Hz samples."""
    rnd = random.Random(11)
    kinds = []
    for example in EXAMPLES:
        payload = example.payload
        if isinstance(payload, dict) and "accel" in payload:
            samples = [[round(rnd.gauss(0, 0.3), 2) for _ in range(3)] for _ in range(100)]
            payload = {**payload, "accel": {"rate_hz": 50, "samples": samples}}
        kinds.append((example.device_type, example.channel, json.dumps(payload, separators=(",", ":")).encode()))
    out = []
    for i in range(n):
        device_type, channel, payload = kinds[i % len(kinds)]
        out.append((f"eldercare/v1/{device_type}/{device_type[:2]}-{i % devices:05d}/{channel}", payload))
    return out


def frames_of(stream: list[tuple[str, bytes]]) -> list[bytes]:
    return [encode_publish(t, p, qos=1, packet_id=i % 65_535 + 1) for i, (t, p) in enumerate(stream)]


def reads_of(wire: bytes) -> list[bytes]:
    return [wire[i : i + READ_SIZE] for i in range(0, len(wire), READ_SIZE)]


def parse_ours(reads: list[bytes]) -> Parsed:
    buf = bytearray()
    publishes = InboundPublishes([], [], [], [])
    controls: list[ControlPacket] = []
    for data in reads:
        buf += data
        used = parse_stream(buf, publishes, controls)
        del buf[:used]
    return publishes.topics, publishes.payloads, publishes.packet_ids


def _mqtt5_loop(reads: list[bytes], into_ours: bool) -> Parsed:
    import mqtt5

    read = mqtt5.read
    buf = bytearray()
    topics: list = []
    payloads: list[bytes] = []
    ids: list[int] = []
    dup: list[bool] = []
    for data in reads:
        buf += data
        view = memoryview(buf)
        pos = 0
        end = len(buf)
        while pos < end:
            try:
                packet, used = read(view[pos:])
            except IndexError:  # a partial packet: wait for the next read
                break
            pos += used
            if into_ours:
                topics.append(packet.topic.encode())
                dup.append(packet.duplicate)
            else:
                topics.append(packet.topic)
            payloads.append(packet.payload)
            ids.append(packet.packet_id)
        view.release()
        del buf[:pos]
    return topics, payloads, ids


def parse_mqtt5(reads: list[bytes]) -> Parsed:
    return _mqtt5_loop(reads, into_ours=False)


def parse_mqtt5_into_ours(reads: list[bytes]) -> Parsed:
    return _mqtt5_loop(reads, into_ours=True)


def parse_paho_socket(wire: bytes, n: int) -> Parsed:
    """paho's own read path: ``loop_read`` on one end of a socketpair, a thread writing the other."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    ours, theirs = socket.socketpair()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    topics: list = []
    payloads: list[bytes] = []
    ids: list[int] = []

    def on_message(_client: object, _userdata: object, message: mqtt.MQTTMessage) -> None:
        topics.append(message.topic)
        payloads.append(message.payload)
        ids.append(message.mid)

    client.on_message = on_message
    client._sock = theirs  # what connect() would have set; no broker is involved
    writer = threading.Thread(target=ours.sendall, args=(wire,))
    writer.start()
    try:
        for _ in range(n):  # one packet per loop_read while nothing is in flight
            rc = client.loop_read()
            if rc:
                raise RuntimeError(f"paho loop_read: {rc}")
    finally:
        writer.join()
        client._sock = None
        ours.close()
        theirs.close()
    return topics, payloads, ids


def parse_paho_decode(bodies: list[tuple[int, bytes]]) -> Parsed:
    from paho.mqtt._packet import decode_publish
    from paho.mqtt.enums import MQTTProtocolVersion

    v5 = MQTTProtocolVersion.MQTTv5
    topics: list = []
    payloads: list[bytes] = []
    ids: list[int] = []
    for header, body in bodies:
        packet = decode_publish(header, body, v5)
        topics.append(packet.topic)
        payloads.append(bytes(packet.payload))
        ids.append(packet.mid)
    return topics, payloads, ids


def _bodies(frames: list[bytes]) -> list[tuple[int, bytes]]:
    out = []
    for frame in frames:
        i = 1
        while frame[i] & 0x80:
            i += 1
        out.append((frame[0], frame[i + 1 :]))
    return out


def _same(reference: Parsed, got: Parsed) -> bool:
    topics = [t.encode() if isinstance(t, str) else t for t in got[0]]
    return topics == reference[0] and [bytes(p) for p in got[1]] == reference[1] and got[2] == reference[2]


def compare(stream: list[tuple[str, bytes]], *, paho_socket: bool = True, rounds: int = 5) -> dict[str, float]:
    """Packets per CPU-second of each codec on this stream (best of ``rounds``, alternating)."""
    frames = frames_of(stream)
    wire = b"".join(frames)
    reads = reads_of(wire)
    bodies = _bodies(frames)
    n = len(frames)
    runs: dict[str, Callable[[], Parsed]] = {"ours": lambda: parse_ours(reads)}
    try:
        import mqtt5  # noqa: F401
    except ImportError:
        print("mqtt5 codec not installed (pip install -e .[bench]): skipped", file=sys.stderr)
    else:
        runs["mqtt5"] = lambda: parse_mqtt5(reads)
        runs["mqtt5 into InboundPublishes"] = lambda: parse_mqtt5_into_ours(reads)
    runs["paho decode_publish (private, pre-framed)"] = lambda: parse_paho_decode(bodies)
    reference = parse_ours(reads)
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.process_time()
            got = run()
            rate = n / (time.process_time() - start)
            if not _same(reference, got):
                raise SystemExit(f"{name} parsed the stream differently from ours")
            best[name] = max(best.get(name, 0.0), rate)
    if paho_socket:  # slow and steady: once, on a prefix
        m = min(n, PAHO_SOCKET_FRAMES)
        start = time.process_time()
        got = parse_paho_socket(b"".join(frames[:m]), m)
        best["paho loop_read over a socketpair"] = m / (time.process_time() - start)
        if not _same((reference[0][:m], reference[1][:m], reference[2][:m]), got):
            raise SystemExit("paho parsed the stream differently from ours")
    return best


def report(streams: dict[str, list[tuple[str, bytes]]], *, paho_socket: bool = True) -> dict[str, dict[str, float]]:
    """Print packets/s per codec for each stream; return them by stream and codec."""
    out: dict[str, dict[str, float]] = {}
    for label, stream in streams.items():
        size = sum(len(encode_publish(t, p, qos=1, packet_id=1)) for t, p in stream) / len(stream)
        rates = compare(stream, paho_socket=paho_socket)
        out[label] = rates
        print(f"parse {len(stream):,} QoS 1 PUBLISH, {label} ({size:.0f} B frames avg), per CPU-second, best of 5:")
        for name, rate in rates.items():
            print(f"  {name:<42} {rate:>12,.0f} packets/s  {rate / rates['ours']:5.2f} x ours")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=10_000)
    args = parser.parse_args()
    from bench.ingest import wristband_stream

    n = args.messages
    report(
        {
            "wristband readings": wristband_stream(n, args.devices, 1_795_000_000_000),
            "documented examples": documented_stream(n, args.devices),
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

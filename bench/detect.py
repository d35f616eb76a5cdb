"""Detection benchmark: per-message cost of the full detector set against decoding alone.

10,000 wristbands, each worn by its own elder with its own fence (half circles, half
polygons), stream readings (position with GPS noise, heart rate, SpO2, steps,
battery, worn). For batch sizes 100, 1,000 and 10,000 this times, in the same run:
decoding a raw batch (``BatchDecoder``) and running every detector on the decoded
batch (``DetectorSet.process``), and reports microseconds per message and the memory
the detectors hold per device. Last line (batch size 1,000):
``detect_us_per_msg=<x> decode_us_per_msg=<y>``

Run: ``.venv/bin/python bench/detect.py``
"""

from __future__ import annotations

import json
import math
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gateway.detect.engine import DetectorSet  # noqa: E402
from gateway.domain.registry import registry_from_dicts  # noqa: E402
from gateway.pipeline.batch import RawBatch  # noqa: E402
from gateway.pipeline.decode import BatchDecoder  # noqa: E402

DEVICES = 10_000
CENTRE = (31.2304, 121.4737)


def homes(n: int, rnd: random.Random) -> list[tuple[float, float]]:
    return [(CENTRE[0] + rnd.uniform(-0.1, 0.1), CENTRE[1] + rnd.uniform(-0.1, 0.1)) for _ in range(n)]


def fence(i: int, lat: float, lon: float, rnd: random.Random) -> dict[str, Any]:
    if i % 2 == 0:
        return {"id": "home", "circle": {"lat": lat, "lon": lon, "radius_m": 300}}
    # an irregular hexagon of about 300 m
    pts = []
    for k in range(6):
        a = k * math.pi / 3 + rnd.uniform(-0.2, 0.2)
        r = 300 * rnd.uniform(0.8, 1.2)
        pts.append([lon + r * math.cos(a) / (111_320 * math.cos(math.radians(lat))), lat + r * math.sin(a) / 110_574])
    pts.append(pts[0])
    return {"id": "home", "geojson": {"type": "Polygon", "coordinates": [pts]}}


def registry(rnd: random.Random) -> tuple[Any, list[tuple[float, float]]]:
    positions = homes(DEVICES, rnd)
    elders = [
        {
            "id": f"e{i:05d}",
            "name": f"elder {i}",
            "lives_alone": i % 3 == 0,
            "conditions": ["dementia"] if i % 10 == 0 else [],
            "fences": [fence(i, lat, lon, rnd)],
            "devices": [{"id": f"wb-{i:05d}", "type": "wristband"}],
        }
        for i, (lat, lon) in enumerate(positions)
    ]
    return registry_from_dicts(elders), positions


_ORDER: list[int] = []


def next_device(rnd: random.Random) -> int:
    """Devices report periodically: each once per round, in a shuffled order."""
    if not _ORDER:
        _ORDER.extend(rnd.sample(range(DEVICES), DEVICES))
    return _ORDER.pop()


def stream(n: int, positions: list[tuple[float, float]], start_ms: int, rnd: random.Random) -> RawBatch:
    topics, payloads = [], []
    for k in range(n):
        i = next_device(rnd)
        lat, lon = positions[i]
        # 1 elder in 100 has wandered 600 m off, 1 in 100 has a racing heart; the rest
        # are ordinary (with a rare odd sample that persistence must ignore)
        away = 0.0055 if i % 100 == 1 else 0.0
        payload = {
            "ts": start_ms + k,
            "lat": round(lat + away + rnd.gauss(0, 0.0003), 6),
            "lon": round(lon + rnd.gauss(0, 0.0003), 6),
            "gps_acc_m": round(rnd.uniform(3, 30), 1),
            # clinically ordinary values with a small abnormal share (about 1 in 200)
            "hr": 135 if i % 100 == 2 or rnd.random() < 0.005 else int(rnd.gauss(74, 9)),
            "spo2": min(100, int(rnd.gauss(97, 1.2))),
            "steps": k // 7,
            "battery": 60.0,
            "worn": True,
        }
        topics.append(f"eldercare/v1/wristband/wb-{i:05d}/telemetry".encode())
        payloads.append(json.dumps(payload, separators=(",", ":")).encode())
    return RawBatch(topics, payloads, [0] * n, [False] * n, start_ms + n)


def measure(
    batch_size: int,
    total: int,
    detectors: DetectorSet,
    positions: list[tuple[float, float]],
    rnd: random.Random,
    start_ms: int,
) -> tuple[float, float, int]:
    decoder = BatchDecoder()
    batches = [
        stream(batch_size, positions, start_ms + b * batch_size, rnd) for b in range(max(1, total // batch_size))
    ]
    decoded = [decoder.decode(b) for b in batches[:2]]  # warm the route cache
    t = time.perf_counter()
    decoded = [decoder.decode(b) for b in batches]
    decode_s = time.perf_counter() - t
    detections = 0
    t = time.perf_counter()
    for d in decoded:
        detections += len(detectors.process(d))
    detect_s = time.perf_counter() - t
    n = batch_size * len(batches)
    return decode_s / n * 1e6, detect_s / n * 1e6, detections


def fall_model_cost(path: Path, batch: int = 1_000, seconds: int = 20) -> tuple[float, float] | None:
    """(us per 1-s window, bytes per slot) for the accelerometer fall model on real recordings.

    Every device replays a FallAllD recording (falls and daily activities with impacts),
    which is the model's worst case: quiet devices cost a fraction of it.
    """
    if not path.exists():
        return None
    import numpy as np

    from gateway.detect.fall_stream import FallDetector

    data = np.load(path)
    acc, offsets = data["acc_g"], data["offsets"]
    n = min(batch, len(offsets) - 1)
    model = FallDetector(n)
    slots = np.arange(n, dtype=np.int64)
    elapsed = 0.0
    for second in range(seconds):
        windows = [acc[offsets[i] + second * 50 : offsets[i] + (second + 1) * 50].astype(np.float64) for i in range(n)]
        t0 = np.full(n, 1_795_000_000_000 + second * 1000, np.int64)
        t = time.perf_counter()
        model.update(slots, t0, windows)
        elapsed += time.perf_counter() - t
    return elapsed / (n * seconds) * 1e6, float(model.bytes_per_slot())


def main() -> int:
    rnd = random.Random(11)
    reg, positions = registry(rnd)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    detectors = DetectorSet(reg)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    setup_bytes = sum(s.size_diff for s in after.compare_to(before, "filename"))
    start_ms = int(time.time() * 1000) - 3_600_000
    print(f"{DEVICES:,} wristbands, one elder and one fence each (half circles, half polygons)")
    print(
        "median of 5 passes of 20,000 messages; 'new' = detections raised in those passes "
        "(standing alerts fire once, during warm-up)"
    )
    print(f"{'batch':>7} {'decode us/msg':>14} {'detect us/msg':>14} {'new':>11}")
    results = {}
    for size in (100, 1_000, 10_000):
        # a warm-up pass gives every device state (and fires the standing alerts), then
        # five measured passes of 20,000 messages; the median is reported
        measure(size, 20_000, detectors, positions, rnd, start_ms)
        start_ms += 20_000
        runs = []
        for _ in range(5):
            runs.append(measure(size, 20_000, detectors, positions, rnd, start_ms))
            start_ms += 20_000
        decode_us = statistics.median(r[0] for r in runs)
        detect_us = statistics.median(r[1] for r in runs)
        found = sum(r[2] for r in runs)
        results[size] = (decode_us, detect_us)
        print(f"{size:>7,} {decode_us:>14.2f} {detect_us:>14.2f} {found:>11,}")
    per_device = detectors.bytes_per_device()
    print(
        f"detector state: {per_device} bytes per device in arrays; all detector structures "
        f"(registry index, fences, prepared geometries): {setup_bytes / DEVICES / 1024:.1f} KiB "
        f"per device"
    )
    falls = fall_model_cost(REPO.parent / "shared" / "data" / "fallalld_wrist_50hz.npz")
    if falls:
        print(
            f"accelerometer fall model (bands that stream raw windows): {falls[0]:.1f} us per 1-s window "
            f"at 1,000 windows per batch, replaying FallAllD activity (worst case); "
            f"{falls[1]:,.0f} bytes per device"
        )
    decode_us, detect_us = results[1_000]
    print(f"detect_us_per_msg={detect_us:.2f} decode_us_per_msg={decode_us:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

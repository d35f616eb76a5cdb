"""Per-device rate limits: one broken or hostile device must not drown the others.

A token bucket per device (events have their own, smaller one, so a flood of
telemetry cannot use up the room an SOS needs). The burst is large enough for a band
uploading a day of readings it kept while offline; a device beyond its rate has the
excess dropped, and that is never silent: every drop is counted (metrics), and once
per report interval each flooding device gets one dead letter saying how many of its
messages were dropped, with the first one as a sample, and one warning in the log.
Storing every dropped message would let the flood reach the database after all.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RateLimits:
    rate_per_s: float = 50.0
    burst: float = 3_000.0
    event_rate_per_s: float = 5.0
    event_burst: float = 50.0
    report_every_ms: int = 10_000


@dataclass(slots=True)
class _Drops:
    """What one device lost since its last report."""

    count: int
    first_ms: int
    topic: str
    sample: bytes


@dataclass(frozen=True, slots=True)
class DropReport:
    device_id: str
    dropped: int
    since_ms: int
    topic: str
    sample: bytes

    def reason(self, limits: RateLimits) -> str:
        return (
            f"rate limited: {self.dropped} messages from device {self.device_id} dropped "
            f"(limit {limits.rate_per_s:g}/s, burst {limits.burst:g}; events "
            f"{limits.event_rate_per_s:g}/s)"
        )


@dataclass(slots=True)
class DeviceRateLimiter:
    limits: RateLimits = field(default_factory=RateLimits)
    _buckets: dict[tuple[str, bool], list[float]] = field(default_factory=dict)  # -> [tokens, last ms]
    _drops: dict[str, _Drops] = field(default_factory=dict)
    dropped_total: int = 0
    flooding_devices: int = 0  # devices that have had messages dropped, ever (for the metric)
    _ever: set[str] = field(default_factory=set)

    def allow(self, device_id: str, is_event: bool, now_ms: int) -> bool:
        """Take one token; False when the device is over its rate."""
        key = (device_id, is_event)
        bucket = self._buckets.get(key)
        limits = self.limits
        rate, burst = (limits.event_rate_per_s, limits.event_burst) if is_event else (limits.rate_per_s, limits.burst)
        if bucket is None:
            self._buckets[key] = [burst - 1.0, float(now_ms)]
            return True
        tokens = min(burst, bucket[0] + (now_ms - bucket[1]) * rate / 1000.0)
        bucket[1] = float(now_ms)
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return True
        bucket[0] = tokens
        return False

    def dropped(self, device_id: str, topic: str, payload: bytes, now_ms: int) -> None:
        self.dropped_total += 1
        drops = self._drops.get(device_id)
        if drops is None:
            self._drops[device_id] = _Drops(1, now_ms, topic, payload[:4096])
            if device_id not in self._ever:
                self._ever.add(device_id)
                self.flooding_devices += 1
        else:
            drops.count += 1

    def due_reports(self, now_ms: int, *, everything: bool = False) -> list[DropReport]:
        """Devices whose drops have waited a report interval (or all of them)."""
        out: list[DropReport] = []
        for device_id, drops in list(self._drops.items()):
            if everything or now_ms - drops.first_ms >= self.limits.report_every_ms:
                out.append(DropReport(device_id, drops.count, drops.first_ms, drops.topic, drops.sample))
                del self._drops[device_id]
        return out

    def forget_idle(self, now_ms: int, idle_ms: int = 3_600_000) -> None:
        """Buckets of devices not heard from for an hour are full again anyway: drop them."""
        stale = [k for k, (_, last) in self._buckets.items() if now_ms - last > idle_ms]
        for key in stale:
            del self._buckets[key]

"""The scenario clock: scenario time runs ``speed`` times faster than real time.

Device timestamps and the gateway's ``clock_ms`` both read it, so detectors (device
time) and escalation timers (gateway time) see the same compressed world: a 120 s
tier wait takes 2 real seconds at speed 60.

The runner may *hold* the clock: it never runs past :attr:`limit` (the next thing the
scenario does, or "now" while the gateway is still taking in what was just sent), and
goes on from there, without a jump, when the limit is raised. Real processing time
thus does not eat into scenario windows, however busy the machine. Until
:meth:`start` the clock stands at the scenario's start time.
"""

from __future__ import annotations

import bisect
import math
import time
from datetime import datetime
from zoneinfo import ZoneInfo


def start_ms_for(start_local: str, timezone: str, today: datetime | None = None) -> int:
    """Epoch ms of ``HH:MM`` today in ``timezone`` (today: so storage partitions cover it)."""
    zone = ZoneInfo(timezone)
    now = (today or datetime.now(zone)).astimezone(zone)
    hour, minute = (int(p) for p in start_local.split(":"))
    return int(now.replace(hour=hour, minute=minute, second=0, microsecond=0).timestamp() * 1000)


class ScenarioClock:
    def __init__(self, start_ms: int, speed: float) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        self.start_ms = start_ms
        self.speed = speed
        self.limit = math.inf
        self._t0: float | None = None  # monotonic time of the current anchor
        self._base = 0.0  # scenario seconds at the anchor
        # (monotonic, scenario s, limit) at every change, to map a monotonic reading back
        self._anchors: list[tuple[float, float, float]] = []

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._anchors.append((self._t0, self._base, self.limit))

    @property
    def started(self) -> bool:
        return self._t0 is not None

    def _at(self, monotonic: float, t0: float, base: float, limit: float) -> float:
        return min(base + max(0.0, monotonic - t0) * self.speed, max(limit, base))

    def elapsed_s(self) -> float:
        """Scenario seconds since the start."""
        if self._t0 is None:
            return self._base
        return self._at(time.monotonic(), self._t0, self._base, self.limit)

    def hold_at(self, limit_s: float) -> None:
        """Run on, but not past ``limit_s`` (or stand still if that is behind us)."""
        if limit_s == self.limit:
            return
        now = time.monotonic()
        current = self.elapsed_s()
        self._base, self.limit = current, max(limit_s, current)
        if self._t0 is not None:
            self._t0 = now
            self._anchors.append((now, self._base, self.limit))

    @property
    def held(self) -> bool:
        """Standing at its limit."""
        return self.elapsed_s() >= self.limit

    def now_ms(self) -> int:
        """Epoch milliseconds in scenario time (the gateway's and the devices' clock)."""
        return self.start_ms + int(self.elapsed_s() * 1000)

    def at_monotonic(self, monotonic: float) -> float:
        """Scenario seconds at a ``time.monotonic()`` reading (e.g. when fake Twilio got a request)."""
        if not self._anchors:
            return self._base
        i = bisect.bisect_right(self._anchors, (monotonic, math.inf, math.inf)) - 1
        t0, base, limit = self._anchors[max(i, 0)]
        return self._at(monotonic, t0, base, limit)

    def scenario_s(self, epoch_ms: int) -> float:
        """Scenario seconds of an epoch-ms time stamped by the gateway or a device."""
        return (epoch_ms - self.start_ms) / 1000

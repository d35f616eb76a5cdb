"""Simulated pager (a button by the bed or on a lanyard): SOS, call, cancel; hourly status.

A pager says nothing unless pressed, apart from its status heartbeat (battery lasts
months). ``calls_per_day`` adds non-urgent "call" presses at random times of day.
Commands (``help_coming``, ``confirm``) light its LED and are confirmed with a
``received`` event, like the wristband.
"""

from __future__ import annotations

from devices.contracts import PagerEvent
from simulators.devices.base import Clock, Outgoing, SimulatedDevice

DAY_MS = 86_400_000


class Pager(SimulatedDevice):
    device_type = "pager"
    firmware = "1.3.0"
    receipt = PagerEvent

    def __init__(
        self,
        device_id: str,
        *,
        clock: Clock | None = None,
        seed: int | None = None,
        battery: float = 95.0,
        status_every_s: float = 3600.0,
        calls_per_day: float = 0.0,
    ) -> None:
        super().__init__(device_id, clock=clock, seed=seed, battery=battery, status_every_s=status_every_s)
        self.calls_per_day = calls_per_day
        self._next_call_ms = self._draw_call(self.clock())
        self._battery_ms = self.clock()

    def _draw_call(self, after_ms: int) -> int | None:
        if self.calls_per_day <= 0:
            return None
        return after_ms + round(self.rng.exponential(DAY_MS / self.calls_per_day))

    def readings(self, now_ms: int) -> list[Outgoing]:
        self.battery = max(0.0, self.battery - (now_ms - self._battery_ms) / DAY_MS * 0.15)
        self._battery_ms = now_ms
        out: list[Outgoing] = []
        while self._next_call_ms is not None and self._next_call_ms <= now_ms:
            out.append(self.message("event", PagerEvent, ts=self._next_call_ms, event="call"))
            self._next_call_ms = self._draw_call(self._next_call_ms)
        return out

    def press(self, event: str = "sos") -> Outgoing:
        """Press a button now: ``sos``, ``call`` or ``cancel``."""
        return self.act(self.message("event", PagerEvent, ts=self.clock(), event=event))

    def sos(self) -> Outgoing:
        return self.press("sos")

    def call(self) -> Outgoing:
        return self.press("call")

    def cancel(self) -> Outgoing:
        return self.press("cancel")

"""Simulated glucose meter and blood pressure cuff: a few readings a day at the usual times.

Readings happen at the elder's routine times (drawn afresh each local day): the glucose
meter fasting on waking, after breakfast, before lunch or after dinner; the cuff in the
morning and the evening. ``mode`` switches what the next readings show: ``"hypo"`` or
``"hyper"`` for glucose, ``"crisis"`` for blood pressure (a hypertensive crisis).
``measure()`` takes a reading now. About one measurement in fifty fails first (strip
error, loose cuff): the meter sends an ``error`` event and the elder retries a minute later.

Meters listen on ``cmd`` and log what they get, but cannot confirm it: their contract has
no ``received`` event.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np

from devices.contracts import MG_PER_DL_PER_MMOL_PER_L, BloodPressureReading, GlucoseReading, MeterEvent
from simulators.devices import physiology as phys
from simulators.devices.base import Clock, Outgoing, SimulatedDevice

HOUR_MS = 3_600_000
# (context, earliest hour, latest hour, probability on a given day)
GLUCOSE_ROUTINE: tuple[tuple[str, float, float, float], ...] = (
    ("fasting", 6.0, 7.5, 0.95),
    ("after_meal", 9.0, 10.0, 0.5),
    ("before_meal", 11.0, 11.8, 0.3),
    ("after_meal", 19.0, 20.0, 0.5),
    ("random", 21.0, 22.0, 0.15),
)
BP_ROUTINE: tuple[tuple[str, float, float, float], ...] = (("morning", 6.5, 8.5, 0.95), ("evening", 19.0, 21.0, 0.8))


class _Meter(SimulatedDevice):
    routine: tuple[tuple[str, float, float, float], ...] = ()
    manual_context = "random"
    error_codes: tuple[str, ...] = ("E-1",)

    def __init__(
        self,
        device_id: str,
        *,
        clock: Clock | None = None,
        seed: int | None = None,
        tz: str,
        battery: float,
        status_every_s: float,
        error_rate: float,
    ) -> None:
        super().__init__(device_id, clock=clock, seed=seed, battery=battery, status_every_s=status_every_s)
        self.tz = ZoneInfo(tz)
        self.error_rate = error_rate
        self._plan: list[tuple[int, str]] = []
        self._planned_until = self._midnight(self.clock())
        self._after_ms = self.clock()

    def _midnight(self, t_ms: int) -> int:
        local = datetime.fromtimestamp(t_ms / 1000, self.tz)
        return int(local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp() * 1000)

    def _plan_until(self, now_ms: int) -> None:
        while self._planned_until <= now_ms:
            day = self._planned_until
            for context, lo, hi, p in self.routine:
                if self.rng.random() < p:
                    self._plan.append((day + round(self.rng.uniform(lo, hi) * HOUR_MS), context))
            nxt = datetime.fromtimestamp(day / 1000, self.tz) + timedelta(days=1, hours=3)
            self._planned_until = self._midnight(int(nxt.timestamp() * 1000))
        self._plan.sort()

    def readings(self, now_ms: int) -> list[Outgoing]:
        self._plan_until(now_ms)
        out: list[Outgoing] = []
        while self._plan and self._plan[0][0] <= now_ms:
            at, context = self._plan.pop(0)
            if at >= self._after_ms:
                out += self._measurement(at, context)
        self._after_ms = max(self._after_ms, now_ms)
        self.battery = max(0.0, self.battery - 0.02 * len(out))
        return out

    def _measurement(self, at_ms: int, context: str) -> list[Outgoing]:
        if self.rng.random() < self.error_rate:
            code = self.error_codes[int(self.rng.integers(len(self.error_codes)))]
            failed = self.message("event", MeterEvent, ts=at_ms, event="error", code=code)
            return [failed, self.reading(at_ms + 60_000 + int(self.rng.integers(0, 30_000)), context)]
        return [self.reading(at_ms, context)]

    def reading(self, at_ms: int, context: str) -> Outgoing:
        raise NotImplementedError

    def measure(self, context: str | None = None) -> Outgoing:
        """The elder takes a reading now (``context`` as the meter's menu offers it)."""
        now = self.clock()
        return self.act(self.reading(now, context or self.manual_context))

    def error(self, code: str | None = None) -> Outgoing:
        """The meter fails a measurement now."""
        return self.act(
            self.message("event", MeterEvent, ts=self.clock(), event="error", code=code or self.error_codes[0])
        )


GlucoseMode = Literal["normal", "hypo", "hyper"]
_GLUCOSE_MODES = {"normal": phys.NORMAL, "hypo": phys.HYPO, "hyper": phys.HYPER}


class GlucoseMeter(_Meter):
    """Finger-stick meter of a type 2 diabetic (``control_mmol``: usual fasting level)."""

    device_type = "glucose"
    firmware = "3.1.0"
    routine = GLUCOSE_ROUTINE
    error_codes = ("E-3", "E-5")  # used strip, too little blood

    def __init__(
        self,
        device_id: str,
        *,
        clock: Clock | None = None,
        seed: int | None = None,
        tz: str = "Asia/Shanghai",
        control_mmol: float | None = None,
        unit: Literal["mmol/L", "mg/dL"] = "mmol/L",
        mode: GlucoseMode = "normal",
        battery: float = 80.0,
        status_every_s: float = 86_400.0,
        error_rate: float = 0.02,
    ) -> None:
        super().__init__(
            device_id,
            clock=clock,
            seed=seed,
            tz=tz,
            battery=battery,
            status_every_s=status_every_s,
            error_rate=error_rate,
        )
        self.control_mmol = float(control_mmol if control_mmol is not None else self.rng.uniform(5.5, 8.0))
        self.unit = unit
        self.mode: GlucoseMode = mode

    def hypoglycaemia(self) -> Outgoing:
        """From now on readings are low; one is taken at once."""
        self.mode = "hypo"
        return self.measure("random")

    def reading(self, at_ms: int, context: str) -> Outgoing:
        ctx = phys.CONTEXTS.index(context)
        mmol = float(
            phys.glucose_mmol(
                np.array([ctx], np.int8),
                np.array([_GLUCOSE_MODES[self.mode]], np.int8),
                np.array([self.control_mmol]),
                self.rng,
            )[0]
        )
        value = mmol if self.unit == "mmol/L" else float(round(mmol * MG_PER_DL_PER_MMOL_PER_L))
        return self.message("telemetry", GlucoseReading, ts=at_ms, glucose=value, unit=self.unit, context=context)


BpMode = Literal["normal", "crisis"]


class BloodPressureCuff(_Meter):
    """Upper-arm cuff of a treated hypertensive (``systolic``/``diastolic``: usual evening level)."""

    device_type = "bp"
    firmware = "1.0.9"
    routine = BP_ROUTINE
    error_codes = ("CUFF-LOOSE", "MOTION")

    def __init__(
        self,
        device_id: str,
        *,
        clock: Clock | None = None,
        seed: int | None = None,
        tz: str = "Asia/Shanghai",
        systolic: float | None = None,
        diastolic: float | None = None,
        pulse: float | None = None,
        mode: BpMode = "normal",
        battery: float = 75.0,
        status_every_s: float = 86_400.0,
        error_rate: float = 0.02,
    ) -> None:
        super().__init__(
            device_id,
            clock=clock,
            seed=seed,
            tz=tz,
            battery=battery,
            status_every_s=status_every_s,
            error_rate=error_rate,
        )
        self.systolic = float(systolic if systolic is not None else self.rng.uniform(125.0, 150.0))
        self.diastolic = float(diastolic if diastolic is not None else self.rng.uniform(75.0, 92.0))
        self.pulse = float(pulse if pulse is not None else self.rng.uniform(62.0, 80.0))
        self.mode: BpMode = mode

    def crisis(self) -> Outgoing:
        """A hypertensive crisis: from now on readings are 180+/120+; one is taken at once."""
        self.mode = "crisis"
        return self.measure()

    def reading(self, at_ms: int, context: str) -> Outgoing:
        local = datetime.fromtimestamp(at_ms / 1000, self.tz)
        hour = np.array([local.hour + local.minute / 60])
        sys_, dia, pulse, irregular = phys.blood_pressure(
            hour,
            np.array([self.mode == "crisis"]),
            np.array([self.systolic]),
            np.array([self.diastolic]),
            np.array([self.pulse]),
            self.rng,
        )
        return self.message(
            "telemetry",
            BloodPressureReading,
            ts=at_ms,
            systolic=float(sys_[0]),
            diastolic=float(dia[0]),
            pulse=float(pulse[0]),
            irregular=bool(irregular[0]),
        )

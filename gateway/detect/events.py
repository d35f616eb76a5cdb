"""Button and device-side events: SOS, call, cancel, band fall, band removed.

Events are rare next to telemetry, so this walks them one by one. An SOS or call is
reported at once (the press is the elder's own confirmation); a cancel from the same
device within ``sos_cancel_grace_s`` withdraws it (a cleared detection), a later one
is reported as ``cancel_late`` so responders already paged can be told. Falls, from
the band's own event or from the gateway's detector on raw acceleration, are
confirmed by ``FallConfirmation``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from gateway.detect.index import DetectSettings, DeviceIndex, grow
from gateway.domain.detection import (
    CALL,
    CANCEL,
    CANCEL_LATE,
    CMD_RECEIVED,
    FALL,
    FALL_NO_RECOVERY,
    NOT_WORN,
    SOS,
    Detection,
)


@dataclass(slots=True)
class _Pending:
    kind: str
    ts_ms: int


class FallConfirmation:
    """A fall becomes "fall, no recovery" unless the elder moves or cancels in time.

    Movement is steps rising by ``fall_movement_steps`` or more, or activity seen in
    raw acceleration, after the fall. Checked on every batch and on the timer.
    """

    def __init__(self, index: DeviceIndex, settings: DetectSettings) -> None:
        self.index = index
        self.s = settings
        self.capacity = 0
        self.fall_ts = np.zeros(0, np.int64)  # 0: no fall pending
        self.steps_at_fall = np.zeros(0, np.int64)
        self.last_steps = np.zeros(0, np.int64)
        self._ensure()

    def _ensure(self) -> None:
        cap = self.index.capacity
        if cap > self.capacity:
            self.fall_ts = grow(self.fall_ts, cap, 0)
            self.steps_at_fall = grow(self.steps_at_fall, cap, -1)
            self.last_steps = grow(self.last_steps, cap, -1)
            self.capacity = cap

    def fall(self, slot: int, ts_ms: int, source: str, evidence: dict[str, object], out: list[Detection]) -> None:
        self._ensure()
        if self.fall_ts[slot]:  # a fall is already pending: same incident
            return
        self.fall_ts[slot] = ts_ms
        self.steps_at_fall[slot] = self.last_steps[slot]
        out.append(
            Detection(
                elder_id=_elder(self.index, slot),
                device_id=self.index.device_ids[slot],
                kind=FALL,
                severity="warning",
                ts_ms=ts_ms,
                evidence={"source": source, **evidence},
            )
        )

    def steps(
        self, slots: NDArray[np.int64], ts: NDArray[np.int64], steps: NDArray[np.int64], out: list[Detection]
    ) -> None:
        self._ensure()
        self.last_steps[slots] = steps
        pending = self.fall_ts[slots] > 0
        if not pending.any():
            return
        base = self.steps_at_fall[slots]
        moved = pending & (base >= 0) & (steps - base >= self.s.fall_movement_steps) & (ts > self.fall_ts[slots])
        for i in np.flatnonzero(moved):
            self.recovered(int(slots[i]), int(ts[i]), {"steps_since_fall": int(steps[i] - base[i])}, out)

    def moved(self, slot: int, ts_ms: int, evidence: dict[str, object], out: list[Detection]) -> None:
        self._ensure()
        if self.fall_ts[slot] and ts_ms > self.fall_ts[slot]:
            self.recovered(slot, ts_ms, evidence, out)

    def recovered(self, slot: int, ts_ms: int, evidence: dict[str, object], out: list[Detection]) -> None:
        fell = int(self.fall_ts[slot])
        self.fall_ts[slot] = 0
        out.append(
            Detection(
                elder_id=_elder(self.index, slot),
                device_id=self.index.device_ids[slot],
                kind=FALL,
                severity="warning",
                ts_ms=ts_ms,
                cleared=True,
                evidence={"recovered_after_s": round((ts_ms - fell) / 1000, 1), **evidence},
            )
        )

    def tick(self, now_ms: int, out: list[Detection]) -> None:
        limit = int(self.s.fall_confirm_s * 1000)
        due = np.flatnonzero((self.fall_ts > 0) & (now_ms - self.fall_ts >= limit))
        for slot in due:
            fell = int(self.fall_ts[slot])
            self.fall_ts[slot] = 0
            out.append(
                Detection(
                    elder_id=_elder(self.index, int(slot)),
                    device_id=self.index.device_ids[int(slot)],
                    kind=FALL_NO_RECOVERY,
                    severity="critical",
                    ts_ms=now_ms,
                    evidence={"fell_at_ms": fell, "no_movement_for_s": round((now_ms - fell) / 1000, 1)},
                )
            )


class EventDetector:
    def __init__(self, index: DeviceIndex, settings: DetectSettings, falls: FallConfirmation) -> None:
        self.index = index
        self.s = settings
        self.falls = falls
        self.pending: dict[int, _Pending] = {}  # slot -> last SOS/call not yet cancelled

    def process(
        self,
        slots: NDArray[np.int64],
        ts: NDArray[np.int64],
        events: list[str],
        out: list[Detection],
        details: list[str | None] | None = None,
    ) -> None:
        for i in np.argsort(ts, kind="stable"):
            self._one(int(slots[i]), int(ts[i]), events[i], out, details[i] if details else None)

    def _one(self, slot: int, ts_ms: int, event: str, out: list[Detection], detail: str | None = None) -> None:
        elder = _elder(self.index, slot)
        device = self.index.device_ids[slot]
        if event == "received":
            out.append(Detection(elder, device, CMD_RECEIVED, "info", ts_ms, {"alert": detail}))
        elif event in (SOS, CALL):
            self.pending[slot] = _Pending(event, ts_ms)
            out.append(
                Detection(elder, device, event, "critical" if event == SOS else "warning", ts_ms, {"button": event})
            )
        elif event == "cancel":
            if self.falls.fall_ts[slot] if slot < self.falls.capacity else 0:
                self.falls.recovered(slot, ts_ms, {"cancelled_by": "elder"}, out)
            pending = self.pending.pop(slot, None)
            if pending is None:
                out.append(Detection(elder, device, CANCEL, "info", ts_ms, {"button": "cancel"}))
                return
            within = ts_ms - pending.ts_ms <= self.s.sos_cancel_grace_s * 1000
            evidence = {"cancelled_after_s": round((ts_ms - pending.ts_ms) / 1000, 1)}
            if within and ts_ms >= pending.ts_ms:
                out.append(
                    Detection(elder, device, pending.kind, "info", ts_ms, {**evidence, "withdrawn": True}, cleared=True)
                )
            else:
                out.append(Detection(elder, device, CANCEL_LATE, "info", ts_ms, {**evidence, "of": pending.kind}))
        elif event == "fall":
            self.falls.fall(slot, ts_ms, "band", {}, out)
        elif event == "removed":
            out.append(Detection(elder, device, NOT_WORN, "warning", ts_ms, {"source": "band event"}))


def _elder(index: DeviceIndex, slot: int) -> str | None:
    e = int(index.elder_of_slot[slot])
    return index.elder_ids[e] if e >= 0 else None

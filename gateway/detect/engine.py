"""The detector set: a decoded batch in, detections out; ``tick`` for the timers.

Each table's rows are mapped to device slots once, split into rounds (a device at
most once per round, in time order) and handed to the detectors as arrays.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from gateway.detect.events import EventDetector, FallConfirmation
from gateway.detect.geofence import GeofenceDetector
from gateway.detect.health import NEVER, HealthDetector
from gateway.detect.index import DetectSettings, DeviceIndex, all_distinct, rounds
from gateway.detect.vitals import VitalsDetector
from gateway.domain.detection import Detection
from gateway.domain.registry import RegistryFile
from gateway.pipeline.batch import DecodedBatch, TableRows
from gateway.storage.binary_copy import Column

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from gateway.detect.fall_stream import FallCandidate

log = logging.getLogger(__name__)

ACTIVITY_STD_G = 0.15  # magnitude spread of a window in which the elder is clearly moving
RECOVERY_DELAY_MS = 5_000  # movement this long after a fall counts as getting up


class FallModel(Protocol):
    """What the set asks of a raw-acceleration fall model: ``FallDetector``, or a test's stand-in."""

    def update(
        self, slots: ArrayLike, t0_ms: ArrayLike, windows: Sequence[NDArray[np.floating[Any]]]
    ) -> Iterable[FallCandidate]: ...

    def reset(self, slot: int) -> None: ...


def _valid(rows: TableRows, name: str) -> NDArray[np.bool_]:
    col = rows.column(name)
    return np.ones(len(rows), bool) if col.valid is None else col.valid


class DetectorSet:
    def __init__(
        self, registry: RegistryFile, settings: DetectSettings | None = None, fall_model: FallModel | None = None
    ) -> None:
        self.settings = settings or DetectSettings()
        self.index = DeviceIndex(registry, self.settings)
        self.vitals = VitalsDetector(self.index, self.settings)
        self.geofence = GeofenceDetector(self.index, self.settings)
        self.health = HealthDetector(self.index, self.settings)
        self.falls = FallConfirmation(self.index, self.settings)
        self.events = EventDetector(self.index, self.settings, self.falls)
        self.fall_model = fall_model if fall_model is not None else _default_fall_model(self.index.capacity)

    def process(self, batch: DecodedBatch) -> list[Detection]:
        out: list[Detection] = []
        for rows in batch.tables:
            name = rows.spec.name
            ids = rows.column("device_id").values
            device_type = {
                "telemetry_wristband": "wristband",
                "wristband_accel": "wristband",
                "telemetry_glucose": "glucose",
                "telemetry_bp": "bp",
            }.get(name)
            slots = self.index.slots(ids, device_type)
            ts = rows.column("time").values.astype(np.int64)
            self.health.seen(slots, batch.received_ms, out)
            if name == "telemetry_wristband":
                self._wristband(rows, slots, ts, out)
            elif name == "telemetry_glucose":
                self._vital(
                    "glucose", slots, ts, {"glucose": rows.column("glucose_mmol").values.astype(np.float64)}, out
                )
            elif name == "telemetry_bp":
                self._vital(
                    "bp",
                    slots,
                    ts,
                    {
                        "systolic": rows.column("systolic").values.astype(np.float64),
                        "diastolic": rows.column("diastolic").values.astype(np.float64),
                    },
                    out,
                )
            elif name == "device_events":
                events = [e.decode() for e in rows.column("event").values]
                detail = rows.column("detail")
                details = [
                    d.decode() if (detail.valid is None or detail.valid[i]) else None
                    for i, d in enumerate(detail.values)
                ]
                self.events.process(slots, ts, events, out, details)
            elif name == "device_status":
                self._status(rows, slots, ts, out)
            elif name == "wristband_accel":
                self._accel(rows, slots, ts, out)
        return out

    def tick(self, now_ms: int) -> list[Detection]:
        out: list[Detection] = []
        self.falls.tick(now_ms, out)
        self.health.tick(now_ms, out)
        return out

    def _wristband(
        self, rows: TableRows, slots: NDArray[np.int64], ts: NDArray[np.int64], out: list[Detection]
    ) -> None:
        # one reading per device is the rule; then every subset is one round too
        distinct = all_distinct(slots)
        whole = [slice(None)] if distinct else rounds(slots, ts)
        for metric in ("hr", "spo2"):
            ok = _valid(rows, metric)
            if ok.all() and distinct:
                self.vitals.update(metric, slots, ts, {metric: rows.column(metric).values.astype(np.float64)}, out)
            elif ok.any():
                self._vital(metric, slots[ok], ts[ok], {metric: rows.column(metric).values[ok].astype(np.float64)}, out)
        pos = _valid(rows, "lat") & _valid(rows, "lon")
        if pos.any():
            acc_valid = _valid(rows, "gps_acc_m")
            acc = np.where(acc_valid, rows.column("gps_acc_m").values.astype(np.float64), 0.0)
            self.geofence.process(
                slots[pos], ts[pos], rows.column("lat").values[pos], rows.column("lon").values[pos], acc[pos], out
            )
        for field, handler in (("battery", self.health.battery), ("worn", self.health.worn)):
            ok = _valid(rows, field)
            if ok.all():
                for idx in whole:
                    handler(slots[idx], ts[idx], rows.column(field).values[idx], out)
            elif ok.any():
                s, t, v = slots[ok], ts[ok], rows.column(field).values[ok]
                for idx in rounds(s, t):
                    handler(s[idx], t[idx], v[idx], out)
        ok = _valid(rows, "steps")
        if ok.any():
            s, t, v = slots[ok], ts[ok], rows.column("steps").values[ok].astype(np.int64)
            for idx in [slice(None)] if distinct else rounds(s, t):
                self.health.activity(s[idx], t[idx], v[idx], out)
                self.falls.steps(s[idx], t[idx], v[idx], out)

    def _vital(
        self,
        measurement: str,
        slots: NDArray[np.int64],
        ts: NDArray[np.int64],
        values: dict[str, NDArray[np.float64]],
        out: list[Detection],
    ) -> None:
        for idx in rounds(slots, ts):
            self.vitals.update(measurement, slots[idx], ts[idx], {m: v[idx] for m, v in values.items()}, out)

    def _status(self, rows: TableRows, slots: NDArray[np.int64], ts: NDArray[np.int64], out: list[Detection]) -> None:
        online = rows.column("online")
        if online.valid is not None or len(rows):
            ok = _valid(rows, "online") & ~online.values.astype(bool)
            for i in np.flatnonzero(ok):
                self.health.offline(int(slots[i]), int(ts[i]), out)
        ok = _valid(rows, "battery")
        if ok.any():
            s, t, v = slots[ok], ts[ok], rows.column("battery").values[ok].astype(np.float64)
            for idx in rounds(s, t):
                self.health.battery(s[idx], t[idx], v[idx], out)

    def _accel(self, rows: TableRows, slots: NDArray[np.int64], ts: NDArray[np.int64], out: list[Detection]) -> None:
        rates = rows.column("rate_hz").values
        windows = [np.frombuffer(b, "<f4").reshape(-1, 3) for b in rows.column("samples").values]
        # movement: evidence of activity (and of getting up after a fall)
        spread = np.array([float(np.std(np.linalg.norm(w, axis=1))) if len(w) > 1 else 0.0 for w in windows])
        moving = spread >= ACTIVITY_STD_G
        if moving.any():
            self.health.moved(slots[moving], ts[moving], out)
            for i in np.flatnonzero(moving):
                slot = int(slots[i])
                fell = int(self.falls.fall_ts[slot]) if slot < self.falls.capacity else 0
                if fell and ts[i] >= fell + RECOVERY_DELAY_MS:
                    self.falls.moved(slot, int(ts[i]), {"movement_std_g": round(float(spread[i]), 2)}, out)
        if self.fall_model is None:
            return
        usable = np.flatnonzero(np.isclose(rates, 50.0))
        if len(usable) == 0:
            return
        findings = self.fall_model.update(slots[usable], ts[usable], [windows[i] for i in usable])
        for finding in findings:
            self.falls.fall(
                int(finding.slot),
                int(finding.t_ms),
                "gateway accelerometer model",
                {"peak_g": round(float(finding.peak_g), 2), "score": round(float(finding.score), 3)},
                out,
            )

    # -- scale-out (gateway/cluster.py): state moves with the devices an instance owns --------

    def forget(self, device_ids: Iterable[str]) -> None:
        """Drop every piece of per-device state of these devices, as if never seen.

        A band also resets its elder's fences (their dwell counts come from its fixes).
        Keep this in step with the detectors' state arrays (tests/test_scale_out.py checks it).
        """
        slots = [slot for d in device_ids if (slot := self.index.slot_of.get(d.encode())) is not None]
        if not slots:
            return
        s = np.array(slots, np.int64)
        v = self.vitals
        v._ensure(self.index.capacity)
        for arrays in (v.active, v.normal, v.streak, v.start):
            for arr in arrays.values():
                arr[s] = 0
        for arr in v.last_ts.values():
            arr[s] = NEVER
        h = self.health
        h._ensure()
        for arr in (h.last_seen, h.batt_ref_ts, h.last_activity):
            arr[s] = NEVER
        for arr in (h.silent, h.not_worn, h.inactive):
            arr[s] = False
        h.battery_level[s] = 0
        h.batt_ref[s] = np.nan
        h.not_worn_count[s] = 0
        h.last_steps[s] = -1
        f = self.falls
        f._ensure()
        f.fall_ts[s] = 0
        f.steps_at_fall[s] = -1
        f.last_steps[s] = -1
        for slot in slots:
            self.events.pending.pop(slot, None)
            if self.fall_model is not None:
                self.fall_model.reset(slot)
        g, fences = self.geofence, self.index.fences
        for slot in slots:
            elder = int(self.index.elder_of_slot[slot])
            if elder < 0 or self.index.device_types[slot] != "wristband" or len(fences) == 0:
                continue
            mine = slice(int(fences.start[elder]), int(fences.start[elder] + fences.count[elder]))
            g.out_count[mine] = 0
            g.out_start[mine] = 0
            g.in_count[mine] = 0
            g.exited[mine] = False
            g.last_ts[mine] = NEVER

    def replay(self, tables: Sequence[TableRows]) -> list[Detection]:
        """Rebuild the state of the devices in ``tables`` (stored rows, any order) from their history.

        Rows go through ``process`` in time order. Glucose and cuff readings feed state of
        their own, so each table goes in whole; bands, device events and status messages
        interact (a fall, then steps: recovered), so they are merged by time and handed on in
        runs of one table. A device counts as last heard at its last row's time.
        """
        out: list[Detection] = []
        merged: list[tuple[TableRows, NDArray[np.int64]]] = []
        for rows in tables:
            if not len(rows):
                continue
            ts = rows.column("time").values.astype(np.int64)
            if rows.spec.name in ("telemetry_glucose", "telemetry_bp"):
                out += self.process(DecodedBatch(tables=[rows], received_ms=int(ts.max())))
            else:
                merged.append((rows, ts))
        if merged:
            ts = np.concatenate([t for _, t in merged])
            which = np.concatenate([np.full(len(t), i, np.int64) for i, (_, t) in enumerate(merged)])
            position = np.concatenate([np.arange(len(t)) for _, t in merged])
            order = np.argsort(ts, kind="stable")
            runs = np.split(order, np.flatnonzero(which[order][1:] != which[order][:-1]) + 1)
            for run in runs:
                rows = _take(merged[int(which[run[0]])][0], position[run])
                out += self.process(DecodedBatch(tables=[rows], received_ms=int(ts[run].max())))
        last: dict[bytes, int] = {}
        for rows in tables:
            for device, t in zip(
                rows.column("device_id").values.tolist(), rows.column("time").values.tolist(), strict=True
            ):
                if t > last.get(device, NEVER):
                    last[device] = t
        if last:
            slots = self.index.slots(np.array(list(last), dtype=object))
            self.health.last_seen[slots] = np.fromiter(last.values(), np.int64, len(last))
        return out

    def mark_silent(self, device_ids: Iterable[str]) -> None:
        """These devices were already reported silent (by the instance that owned them before)."""
        slots = [slot for d in device_ids if (slot := self.index.slot_of.get(d.encode())) is not None]
        if slots:
            self.health._ensure()
            self.health.silent[np.array(slots, np.int64)] = True

    def bytes_per_device(self) -> int:
        model = getattr(self.fall_model, "bytes_per_slot", 0)
        model_bytes = int(model() if callable(model) else model)
        return self.vitals.bytes_per_device() + self.health.bytes_per_device() + 8 * 3 + model_bytes


def _take(rows: TableRows, which: NDArray[np.int64]) -> TableRows:
    """The rows at ``which`` (in that order), every column with its NULL mask."""
    return TableRows(
        rows.spec,
        tuple(Column(c.kind, c.values[which], None if c.valid is None else c.valid[which]) for c in rows.columns),
    )


def _default_fall_model(capacity: int) -> FallModel | None:
    """The shipped accelerometer fall model, or None (logged) if it cannot load.

    A broken model file must not stop the gateway: SOS, band fall events and every
    other detector matter more than this one source of fall evidence.
    """
    try:
        from gateway.detect.fall_stream import FallDetector

        return FallDetector(max(capacity, 1024))
    except Exception as error:
        log.error("fall model unavailable, raw-acceleration fall detection is OFF: %s", error)
        return None

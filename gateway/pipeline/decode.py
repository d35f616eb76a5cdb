"""Decode stage: a raw batch becomes columnar rows per table plus dead letters.

Per message this does the least it can: a cached topic route, one msgspec decode,
an append. Range checks live in the contract types (msgspec enforces them while
decoding); time-window checks and column building run over whole arrays.

A topic names the device's type, and the broker's ACL ties each account to its own
type, but a gateway without that ACL (or with an old one) must not believe the
topic either: a wristband publishing on ``pager/<its id>/event`` would open an SOS
for its elder, and ``glucose/<its id>/telemetry`` a hypoglycaemia alert. So a
registered device on a topic of another type is a dead letter. The check lives in
the route cache (cleared when the registry changes), so it costs nothing per message.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from devices.codec import (
    Rejected,
    Route,
    check_record,
    decode_payload,
    explain,
    glucose_mmol,
    route_topic,
)
from devices.contracts import (
    BloodPressureReading,
    DeviceStatus,
    GlucoseReading,
    MeterEvent,
    PagerEvent,
    Payload,
    WristbandEvent,
    WristbandTelemetry,
    ts_to_ms,
)
from gateway.pipeline.batch import DeadLetter, DecodedBatch, RawBatch, TableRows, float_column
from gateway.pipeline.rate_limit import DeviceRateLimiter
from gateway.storage import tables
from gateway.storage.binary_copy import Column

log = logging.getLogger(__name__)
ROUTE_CACHE_LIMIT = 200_000
_NEEDS_CHECK = (GlucoseReading, BloodPressureReading)


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """What the decoder accepts; times are relative to when the batch arrived."""

    max_payload_bytes: int = 65_536
    max_past_ms: int = 7 * 86_400_000
    max_future_ms: int = 5 * 60_000


class BatchDecoder:
    """Turns ``RawBatch`` into ``DecodedBatch``; holds only a cache of topic routes."""

    def __init__(self, limits: DecodeLimits | None = None, rate_limiter: DeviceRateLimiter | None = None) -> None:
        self.limits = limits or DecodeLimits()
        self._routes: dict[bytes, Route | Rejected] = {}
        self.rate_limiter = rate_limiter
        self._forgot_ms = 0
        self.device_types: Mapping[str, str] = {}

    def use_device_types(self, device_types: Mapping[str, str]) -> None:
        """Device id -> registered type (from the registry); topics of another type are refused."""
        self.device_types = device_types
        self._routes.clear()

    def _route(self, topic: bytes) -> Route | Rejected:
        try:
            text = topic.decode("utf-8")
        except UnicodeDecodeError:
            route: Route | Rejected = Rejected("topic is not valid UTF-8")
        else:
            route = route_topic(text)
        if isinstance(route, Route):
            registered = self.device_types.get(route.device_id)
            if registered is not None and registered != route.device_type:
                route = Rejected(
                    f"device {route.device_id} is registered as a {registered}, not a {route.device_type}: "
                    "a device may publish only on its own type's topics"
                )
        if len(self._routes) >= ROUTE_CACHE_LIMIT:
            self._routes.clear()
        self._routes[topic] = route
        return route

    def decode(self, raw: RawBatch, *, rate_limit: bool = True) -> DecodedBatch:
        """``rate_limit=False`` for batches admitted before (a spool replay)."""
        now = raw.received_ms
        max_bytes = self.limits.max_payload_bytes
        routes = self._routes
        limiter = self.rate_limiter if rate_limit else None
        dead: list[DeadLetter] = []
        # contract type -> (records, routes, message index)
        buckets: dict[type[Payload], tuple[list[Any], list[Route], list[int]]] = defaultdict(lambda: ([], [], []))
        for i, (topic, payload) in enumerate(zip(raw.topics, raw.payloads, strict=True)):
            route = routes.get(topic) or self._route(topic)
            if isinstance(route, Rejected):
                dead.append(DeadLetter(now, _text(topic), route.reason, payload, i))
                continue
            if limiter is not None and not limiter.allow(route.device_id, route.channel == "event", now):
                limiter.dropped(route.device_id, _text(topic), payload, now)
                continue
            if len(payload) > max_bytes:
                dead.append(
                    DeadLetter(
                        now,
                        _text(topic),
                        f"payload of {len(payload)} bytes exceeds the limit of {max_bytes}",
                        payload[:max_bytes],
                        i,
                    )
                )
                continue
            if payload[:1] == b"{":
                try:
                    record = route.decoder.decode(payload)
                except Exception as error:
                    dead.append(DeadLetter(now, _text(topic), explain(error), payload, i))
                    continue
                if record.device_id is not None or isinstance(record, _NEEDS_CHECK):
                    problem = check_record(record, route)
                    if problem is not None:
                        dead.append(DeadLetter(now, _text(topic), problem.reason, payload, i))
                        continue
                recs, rts, idx = buckets[route.contract]
                recs.append(record)
                rts.append(route)
                idx.append(i)
            else:
                result = decode_payload(payload, route, now)
                if isinstance(result, Rejected):
                    dead.append(DeadLetter(now, _text(topic), result.reason, payload, i))
                    continue
                for record in result:
                    recs, rts, idx = buckets[type(record)]
                    recs.append(record)
                    rts.append(route)
                    idx.append(i)
        rejected_while_decoding = len(dead)
        out = DecodedBatch(dead_letters=dead, received_ms=now)
        for contract, (recs, rts, idx) in buckets.items():
            self._columns(contract, recs, rts, idx, raw, out)
        if len(out.dead_letters) > rejected_while_decoding:
            out.dead_letters.sort(key=lambda d: d.index)
        if limiter is not None:
            self._report_drops(limiter, now, len(raw), out)
        return out

    def _report_drops(self, limiter: DeviceRateLimiter, now: int, index: int, out: DecodedBatch) -> None:
        for report in limiter.due_reports(now):
            log.warning("device %s over its rate: %d messages dropped", report.device_id, report.dropped)
            out.dead_letters.append(DeadLetter(now, report.topic, report.reason(limiter.limits), report.sample, index))
        if now - self._forgot_ms > 600_000:
            limiter.forget_idle(now)
            self._forgot_ms = now

    def _columns(
        self,
        contract: type[Payload],
        recs: list[Any],
        rts: list[Route],
        idx: list[int],
        raw: RawBatch,
        out: DecodedBatch,
    ) -> None:
        now = raw.received_ms
        ts = np.fromiter((r.ts if r.ts.__class__ is int else ts_to_ms(r.ts, now) for r in recs), np.int64, len(recs))
        bad = (ts < now - self.limits.max_past_ms) | (ts > now + self.limits.max_future_ms)
        if bad.any():
            for j in np.flatnonzero(bad):
                i = idx[j]
                when = "future" if ts[j] > now else "past"
                out.dead_letters.append(
                    DeadLetter(
                        now,
                        _text(raw.topics[i]),
                        f"timestamp {int(ts[j])} ms is too far in the {when}",
                        raw.payloads[i],
                        i,
                    )
                )
            keep = ~bad
            recs = [r for r, k in zip(recs, keep, strict=True) if k]
            rts = [r for r, k in zip(rts, keep, strict=True) if k]
            ts = ts[keep]
            if not recs:
                return
        ids = np.array([r.device_key for r in rts], dtype=object)
        time_col = Column("timestamptz_ms", ts)
        id_col = Column("text", ids)
        if contract is WristbandTelemetry:
            out.tables.append(_wristband(recs, time_col, id_col))
            accel = [j for j, r in enumerate(recs) if r.accel is not None]
            if accel:
                out.tables.append(_accel(recs, accel, ts, ids))
        elif contract is GlucoseReading:
            out.tables.append(
                TableRows(
                    tables.GLUCOSE,
                    (
                        time_col,
                        id_col,
                        Column("float4", np.array([glucose_mmol(r) for r in recs], np.float32)),
                        Column("text", np.array([r.context.encode() for r in recs], dtype=object)),
                    ),
                )
            )
        elif contract is BloodPressureReading:
            out.tables.append(
                TableRows(
                    tables.BLOOD_PRESSURE,
                    (
                        time_col,
                        id_col,
                        Column("float4", np.array([r.systolic for r in recs], np.float32)),
                        Column("float4", np.array([r.diastolic for r in recs], np.float32)),
                        float_column("float4", [r.pulse for r in recs], np.float32),
                        Column("bool", np.array([r.irregular for r in recs], bool)),
                    ),
                )
            )
        elif contract in (WristbandEvent, PagerEvent, MeterEvent):
            details = [getattr(r, "code", None) or getattr(r, "alert", None) for r in recs]
            detail_valid = np.array([d is not None for d in details], bool)
            out.tables.append(
                TableRows(
                    tables.EVENTS,
                    (
                        time_col,
                        id_col,
                        Column("text", np.array([r.device_type.encode() for r in rts], dtype=object)),
                        Column("text", np.array([r.event.encode() for r in recs], dtype=object)),
                        Column(
                            "text",
                            np.array([(d or "").encode() for d in details], dtype=object),
                            None if detail_valid.all() else detail_valid,
                        ),
                        Column("timestamptz_ms", np.full(len(recs), now, np.int64)),
                    ),
                )
            )
        elif contract is DeviceStatus:
            firmware = [r.firmware for r in recs]
            fw_valid = np.array([f is not None for f in firmware], bool)
            out.tables.append(
                TableRows(
                    tables.STATUS,
                    (
                        time_col,
                        id_col,
                        Column("text", np.array([r.device_type.encode() for r in rts], dtype=object)),
                        float_column("float4", [r.battery for r in recs], np.float32),
                        float_column("float4", [r.rssi_dbm for r in recs], np.float32),
                        Column(
                            "text",
                            np.array([(f or "").encode() for f in firmware], dtype=object),
                            None if fw_valid.all() else fw_valid,
                        ),
                        _bool_column([r.online for r in recs]),
                    ),
                )
            )


def _text(topic: bytes) -> str:
    # the dead letter's topic column is PostgreSQL text, which cannot hold NUL
    return topic.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def _bool_column(values: list[bool | None]) -> Column:
    valid = np.array([v is not None for v in values], bool)
    arr = np.array([bool(v) for v in values], bool)
    return Column("bool", arr, None if valid.all() else valid)


def _wristband(recs: list[WristbandTelemetry], time_col: Column, id_col: Column) -> TableRows:
    return TableRows(
        tables.WRISTBAND,
        (
            time_col,
            id_col,
            float_column("float8", [r.lat for r in recs]),
            float_column("float8", [r.lon for r in recs]),
            float_column("float4", [r.gps_acc_m for r in recs], np.float32),
            float_column("float4", [r.hr for r in recs], np.float32),
            float_column("float4", [r.spo2 for r in recs], np.float32),
            _int_column([r.steps for r in recs]),
            float_column("float4", [r.battery for r in recs], np.float32),
            _bool_column([r.worn for r in recs]),
        ),
    )


def _int_column(values: list[int | None]) -> Column:
    valid = np.array([v is not None for v in values], bool)
    arr = np.array([0 if v is None else v for v in values], np.int32)
    return Column("int4", arr, None if valid.all() else valid)


def _accel(
    recs: list[WristbandTelemetry],
    which: list[int],
    ts: np.ndarray[Any, Any],
    ids: np.ndarray[Any, Any],
) -> TableRows:
    chosen = [recs[j] for j in which]
    samples = np.array([np.asarray(r.accel.samples, dtype="<f4").tobytes() for r in chosen if r.accel], dtype=object)
    return TableRows(
        tables.ACCEL,
        (
            Column("timestamptz_ms", ts[which]),
            Column("text", ids[which]),
            Column("float4", np.array([r.accel.rate_hz for r in chosen if r.accel], np.float32)),
            Column("bytea", samples),
        ),
    )

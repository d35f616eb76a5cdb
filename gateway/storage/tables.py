"""The time-series tables: one spec feeds the DDL, the decoder's columns and COPY.

Keeping the column list in one place means the schema, the binary COPY layout and
the decoder cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.storage.binary_copy import Kind

_SQL_TYPE: dict[str, str] = {
    "timestamptz_ms": "timestamptz",
    "float8": "double precision",
    "float4": "real",
    "int4": "integer",
    "int2": "smallint",
    "bool": "boolean",
    "text": "text",
    "bytea": "bytea",
}


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    name: str
    kind: Kind
    nullable: bool = True
    comment: str = ""

    @property
    def sql_type(self) -> str:
        return _SQL_TYPE[self.kind]


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A time-partitioned table; ``key`` is its unique key (it includes ``time``)."""

    name: str
    columns: tuple[ColumnSpec, ...]
    key: tuple[str, ...]
    segment_by: str = "device_id"
    position: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "position", {c.name: i for i, c in enumerate(self.columns)})

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def create_sql(self, partitioned: bool) -> str:
        cols = ",\n  ".join(f"{c.name} {c.sql_type}{'' if c.nullable else ' NOT NULL'}" for c in self.columns)
        suffix = " PARTITION BY RANGE (time)" if partitioned else ""
        return f"CREATE TABLE IF NOT EXISTS {self.name} (\n  {cols},\n  PRIMARY KEY ({', '.join(self.key)})\n){suffix}"


def _time() -> ColumnSpec:
    return ColumnSpec("time", "timestamptz_ms", nullable=False, comment="device time")


def _device() -> ColumnSpec:
    return ColumnSpec("device_id", "text", nullable=False)


WRISTBAND = TableSpec(
    "telemetry_wristband",
    (
        _time(),
        _device(),
        ColumnSpec("lat", "float8"),
        ColumnSpec("lon", "float8"),
        ColumnSpec("gps_acc_m", "float4"),
        ColumnSpec("hr", "float4"),
        ColumnSpec("spo2", "float4"),
        ColumnSpec("steps", "int4"),
        ColumnSpec("battery", "float4"),
        ColumnSpec("worn", "bool"),
    ),
    key=("device_id", "time"),
)

GLUCOSE = TableSpec(
    "telemetry_glucose",
    (
        _time(),
        _device(),
        ColumnSpec("glucose_mmol", "float4", nullable=False),
        ColumnSpec("context", "text", nullable=False),
    ),
    key=("device_id", "time"),
)

BLOOD_PRESSURE = TableSpec(
    "telemetry_bp",
    (
        _time(),
        _device(),
        ColumnSpec("systolic", "float4", nullable=False),
        ColumnSpec("diastolic", "float4", nullable=False),
        ColumnSpec("pulse", "float4"),
        ColumnSpec("irregular", "bool", nullable=False),
    ),
    key=("device_id", "time"),
)

ACCEL = TableSpec(
    "wristband_accel",
    (
        _time(),
        _device(),
        ColumnSpec("rate_hz", "float4", nullable=False),
        ColumnSpec("samples", "bytea", nullable=False, comment="float32 little-endian x,y,z interleaved, in g"),
    ),
    key=("device_id", "time"),
)

EVENTS = TableSpec(
    "device_events",
    (
        _time(),
        _device(),
        ColumnSpec("device_type", "text", nullable=False),
        ColumnSpec("event", "text", nullable=False),
        ColumnSpec("detail", "text"),
        ColumnSpec("received_at", "timestamptz_ms", nullable=False),
    ),
    key=("device_id", "time", "event"),
)

STATUS = TableSpec(
    "device_status",
    (
        _time(),
        _device(),
        ColumnSpec("device_type", "text", nullable=False),
        ColumnSpec("battery", "float4"),
        ColumnSpec("rssi_dbm", "float4"),
        ColumnSpec("firmware", "text"),
        ColumnSpec("online", "bool"),
    ),
    key=("device_id", "time"),
)

TIME_SERIES: tuple[TableSpec, ...] = (WRISTBAND, GLUCOSE, BLOOD_PRESSURE, ACCEL, EVENTS, STATUS)
BY_NAME: dict[str, TableSpec] = {t.name: t for t in TIME_SERIES}

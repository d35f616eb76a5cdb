"""What each stage takes from the configuration, derived in one place.

Stages receive these small values (a DSN, a policy, detector settings), never the whole
``GatewayConfig`` or the gateway object, so they can be built and tested alone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from gateway.config import GatewayConfig, database_password
from gateway.detect.index import DetectSettings
from gateway.domain.registry import parse_window
from gateway.storage.schema import StoragePolicy


def detect_settings(config: GatewayConfig, now: datetime | None = None) -> DetectSettings:
    d = config.detect
    offset = (now or datetime.now(UTC)).astimezone(ZoneInfo(d.timezone)).utcoffset()
    return DetectSettings(
        timezone_offset_min=int(offset.total_seconds() // 60) if offset else 0,
        persistence_readings=d.persistence_readings,
        persistence_span_s=d.persistence_span_s,
        clear_readings=d.clear_readings,
        fence_margin_m=d.fence_margin_m,
        fence_dwell_readings=d.fence_dwell_readings,
        fence_dwell_s=d.fence_dwell_s,
        fence_reentry_readings=d.fence_reentry_readings,
        fence_clear_accuracy_m=d.fence_clear_accuracy_m,
        gps_max_accuracy_m=d.gps_max_accuracy_m,
        night_window=parse_window(d.night),
        day_window=parse_window(d.day),
        sos_cancel_grace_s=d.sos_cancel_grace_s,
        fall_confirm_s=d.fall_confirm_s,
        fall_movement_steps=d.fall_movement_steps,
        battery_warning_pct=d.battery_warning_pct,
        battery_critical_pct=d.battery_critical_pct,
        battery_clear_pct=d.battery_clear_pct,
        not_worn_readings=d.not_worn_readings,
        silent_factor=d.silent_factor,
        inactivity_hours=d.inactivity_hours,
    )


def storage_policy(config: GatewayConfig) -> StoragePolicy:
    return StoragePolicy(
        past_days=config.ingest.max_past_s // 86_400 + 1,
        ahead_days=config.storage.partition_ahead_days,
        retention_days=config.storage.retention_days,
        compress_after_days=config.storage.compress_after_days,
        engine=config.storage.engine,
    )


def conninfo(config: GatewayConfig) -> tuple[str, dict[str, object]]:
    kwargs: dict[str, object] = {"connect_timeout": max(1, int(config.database.connect_timeout_s))}
    password = database_password(config)
    if password:
        kwargs["password"] = password
    return config.database.dsn, kwargs


def dsn_with_password(dsn: str, kwargs: dict[str, object]) -> str:
    """One libpq conninfo string with the password and timeout folded in, for sync code."""
    from psycopg.conninfo import make_conninfo

    extra = {k: v for k, v in kwargs.items() if k in ("password", "connect_timeout")}
    return make_conninfo(dsn, **extra)  # type: ignore[arg-type]

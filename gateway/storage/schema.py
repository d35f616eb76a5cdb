"""Versioned, idempotent schema: TimescaleDB when present, native partitions otherwise.

``upgrade`` applies the migrations not yet recorded in ``schema_migrations`` under an
advisory lock, so two gateways starting at once do not race. Time-series tables are
hypertables (with compression and retention policies) when the timescaledb extension
is available; otherwise they are range-partitioned by UTC day, and
``maintain_partitions`` creates partitions ahead and drops those past retention.
Queries are the same either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql

from gateway.storage.tables import TIME_SERIES, TableSpec

log = logging.getLogger(__name__)

MIGRATION_LOCK = 7_311_001  # pg_advisory_xact_lock key for schema changes


@dataclass(frozen=True, slots=True)
class StoragePolicy:
    """How much time the partitions cover and how long data is kept."""

    past_days: int = 8
    ahead_days: int = 3
    retention_days: int = 400
    compress_after_days: int = 7


REGISTRY_SQL = """
CREATE TABLE IF NOT EXISTS elders (
  elder_id text PRIMARY KEY,
  name text NOT NULL,
  community text,
  grid text,
  profile jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS devices (
  device_id text PRIMARY KEY,
  device_type text NOT NULL CHECK (device_type IN ('wristband', 'pager', 'glucose', 'bp')),
  elder_id text REFERENCES elders (elder_id) ON DELETE SET NULL,
  reporting_interval_s integer NOT NULL DEFAULT 60,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS dead_letters (
  id bigserial PRIMARY KEY,
  received_at timestamptz NOT NULL,
  topic text NOT NULL,
  reason text NOT NULL,
  payload bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_received_at ON dead_letters (received_at);
"""


def _has_timescale(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    return row is not None


def _migration_1(conn: psycopg.Connection[tuple[object, ...]], policy: StoragePolicy) -> None:
    conn.execute(REGISTRY_SQL)
    timescale = _has_timescale(conn)
    if timescale:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    for table in TIME_SERIES:
        conn.execute(table.create_sql(partitioned=not timescale))
        if timescale:
            _make_hypertable(conn, table, policy)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS storage_mode (only_row boolean PRIMARY KEY DEFAULT true "
        "CHECK (only_row), mode text NOT NULL)"
    )
    conn.execute(
        "INSERT INTO storage_mode (mode) VALUES (%s) ON CONFLICT DO NOTHING",
        ("timescaledb" if timescale else "partitioned",),
    )


def _make_hypertable(conn: psycopg.Connection[tuple[object, ...]], table: TableSpec, policy: StoragePolicy) -> None:
    name = table.name
    conn.execute(
        "SELECT create_hypertable(%s, 'time', chunk_time_interval => interval '1 day', if_not_exists => true)",
        (name,),
    )
    conn.execute(
        sql.SQL("ALTER TABLE {} SET (timescaledb.compress, timescaledb.compress_segmentby = {})").format(
            sql.Identifier(name), sql.Literal(table.segment_by)
        )
    )
    conn.execute(
        "SELECT add_compression_policy(%s, make_interval(days => %s), if_not_exists => true)",
        (name, policy.compress_after_days),
    )
    conn.execute(
        "SELECT add_retention_policy(%s, make_interval(days => %s), if_not_exists => true)",
        (name, policy.retention_days),
    )


DETECTIONS_SQL = """
CREATE TABLE IF NOT EXISTS detections (
  id bigserial PRIMARY KEY,
  elder_id text,
  device_id text NOT NULL,
  kind text NOT NULL,
  severity text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
  ts timestamptz NOT NULL,
  cleared boolean NOT NULL DEFAULT false,
  evidence jsonb NOT NULL DEFAULT '{}'::jsonb,
  detected_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (device_id, kind, ts, cleared)
);
CREATE INDEX IF NOT EXISTS detections_elder_ts ON detections (elder_id, ts);
CREATE TABLE IF NOT EXISTS geofences (
  elder_id text NOT NULL REFERENCES elders (elder_id) ON DELETE CASCADE,
  fence_id text NOT NULL,
  spec jsonb NOT NULL,
  PRIMARY KEY (elder_id, fence_id)
);
ALTER TABLE elders ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now();
"""


def _migration_2(conn: psycopg.Connection[tuple[object, ...]], policy: StoragePolicy) -> None:
    conn.execute(DETECTIONS_SQL)


ALERTS_SQL = """
CREATE TABLE IF NOT EXISTS responders (
  responder_id text PRIMARY KEY,
  spec jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS roster_overrides (
  id bigserial PRIMARY KEY,
  spec jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
  alert_id bigserial PRIMARY KEY,
  code text GENERATED ALWAYS AS ('A' || alert_id::text) STORED,
  alert_key text NOT NULL,
  elder_id text,
  device_id text NOT NULL,
  kind text NOT NULL,
  severity text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
  state text NOT NULL CHECK (state IN ('confirming', 'notifying', 'acknowledged', 'on_scene', 'resolved')),
  policy text NOT NULL,
  community text,
  grid text,
  opened_at timestamptz NOT NULL,
  last_seen_at timestamptz NOT NULL,
  detection_count integer NOT NULL DEFAULT 1,
  evidence jsonb NOT NULL DEFAULT '{}'::jsonb,
  confirm_until timestamptz,
  recovered boolean NOT NULL DEFAULT false,
  acknowledged_at timestamptz,
  acknowledged_by text,
  eta timestamptz,
  on_scene_at timestamptz,
  resolved_at timestamptz,
  resolved_by text,
  outcome text,
  next_check_at timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_open_per_key ON alerts (alert_key) WHERE state <> 'resolved';
CREATE INDEX IF NOT EXISTS alerts_due ON alerts (next_check_at) WHERE state <> 'resolved';
CREATE INDEX IF NOT EXISTS alerts_opened ON alerts (opened_at);
CREATE TABLE IF NOT EXISTS alert_events (
  id bigserial PRIMARY KEY,
  alert_id bigint NOT NULL REFERENCES alerts (alert_id),
  at timestamptz NOT NULL,
  event text NOT NULL,
  actor text,
  channel text,
  detail jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS alert_events_alert ON alert_events (alert_id, at);
CREATE TABLE IF NOT EXISTS tier_firings (
  alert_id bigint NOT NULL REFERENCES alerts (alert_id),
  tier integer NOT NULL,
  round integer NOT NULL,
  at timestamptz NOT NULL,
  reached integer NOT NULL,
  PRIMARY KEY (alert_id, tier, round)
);
CREATE TABLE IF NOT EXISTS notifications (
  id bigserial PRIMARY KEY,
  alert_id bigint NOT NULL REFERENCES alerts (alert_id),
  purpose text NOT NULL CHECK (purpose IN ('page', 'taken', 'retraction', 'resolved', 'summary')),
  tier integer,
  round integer,
  recipient_key text NOT NULL,
  recipient_name text NOT NULL,
  role text NOT NULL,
  phone text NOT NULL,
  language text NOT NULL,
  channel text NOT NULL CHECK (channel IN ('sms', 'voice', 'webhook', 'console')),
  channels jsonb NOT NULL DEFAULT '[]'::jsonb,
  provider text,
  idempotency_key text NOT NULL UNIQUE,
  status text NOT NULL DEFAULT 'pending',
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  provider_sid text,
  last_error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (next_attempt_at) WHERE status = 'pending';
ALTER TABLE detections ADD COLUMN IF NOT EXISTS alert_id bigint;
ALTER TABLE detections ADD COLUMN IF NOT EXISTS handled boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS detections_unhandled ON detections (id) WHERE NOT handled;
CREATE INDEX IF NOT EXISTS notifications_alert ON notifications (alert_id);
"""


def _migration_3(conn: psycopg.Connection[tuple[object, ...]], policy: StoragePolicy) -> None:
    conn.execute(ALERTS_SQL)


def _migration_4(conn: psycopg.Connection[tuple[object, ...]], policy: StoragePolicy) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS webhook_receipts (receipt text PRIMARY KEY, "
        "received_at timestamptz NOT NULL DEFAULT now())"
    )


CONSOLE_SQL = """
CREATE TABLE IF NOT EXISTS users (
  username text PRIMARY KEY CHECK (username ~ '^[A-Za-z0-9_.@-]{2,64}$'),
  password_hash text NOT NULL,
  role text NOT NULL CHECK (role IN ('hotline', 'post_station', 'grid_worker', 'family', 'admin')),
  display_name text NOT NULL UNIQUE,
  language text NOT NULL DEFAULT 'zh' CHECK (language IN ('zh', 'en')),
  community text,
  grid text,
  elder_id text,
  created_at timestamptz NOT NULL DEFAULT now(),
  password_changed_at timestamptz NOT NULL DEFAULT now(),
  CHECK (role <> 'post_station' OR community IS NOT NULL),
  CHECK (role <> 'grid_worker' OR grid IS NOT NULL),
  CHECK (role <> 'family' OR elder_id IS NOT NULL)
);
CREATE TABLE IF NOT EXISTS sessions (
  token_hash bytea PRIMARY KEY,
  username text NOT NULL REFERENCES users (username) ON DELETE CASCADE,
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  client text
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (username);
CREATE INDEX IF NOT EXISTS sessions_expires ON sessions (expires_at);
CREATE TABLE IF NOT EXISTS login_failures (
  id bigserial PRIMARY KEY,
  username text NOT NULL,
  client text NOT NULL,
  at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_user ON login_failures (username, at);
CREATE INDEX IF NOT EXISTS login_failures_client ON login_failures (client, at);
CREATE TABLE IF NOT EXISTS audit_log (
  id bigserial PRIMARY KEY,
  at timestamptz NOT NULL DEFAULT now(),
  actor text NOT NULL,
  action text NOT NULL,
  target text,
  detail jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at);
CREATE INDEX IF NOT EXISTS alerts_open_community ON alerts (community, grid) WHERE state <> 'resolved';
CREATE INDEX IF NOT EXISTS alerts_open_grid ON alerts (grid) WHERE state <> 'resolved';
CREATE INDEX IF NOT EXISTS alerts_open_elder ON alerts (elder_id) WHERE state <> 'resolved';
CREATE INDEX IF NOT EXISTS alerts_elder ON alerts (elder_id, alert_id);
CREATE INDEX IF NOT EXISTS alerts_community_id ON alerts (community, alert_id);
CREATE INDEX IF NOT EXISTS alerts_grid_id ON alerts (grid, alert_id);
CREATE INDEX IF NOT EXISTS elders_community ON elders (community, grid, elder_id);
CREATE INDEX IF NOT EXISTS elders_grid ON elders (grid, elder_id);
CREATE INDEX IF NOT EXISTS devices_elder ON devices (elder_id);
CREATE INDEX IF NOT EXISTS detections_alert ON detections (alert_id);
"""


def _migration_5(conn: psycopg.Connection[tuple[object, ...]], policy: StoragePolicy) -> None:
    conn.execute(CONSOLE_SQL)


Migration = Callable[[psycopg.Connection[tuple[object, ...]], StoragePolicy], None]
REGISTRY_VERSION_SQL = """
CREATE SEQUENCE IF NOT EXISTS registry_version;
CREATE OR REPLACE FUNCTION bump_registry_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM nextval('registry_version');
  RETURN NULL;
END $$;
"""


def _migration_6(conn: psycopg.Connection[tuple[object, ...]], policy: StoragePolicy) -> None:
    """A number that moves whenever elders, devices, fences or responders change.

    Every gateway process watches it and reloads its detectors' registry, so a fence
    edited in the console (or an import) takes effect everywhere without a restart.
    """
    conn.execute(REGISTRY_VERSION_SQL)
    for table in ("elders", "devices", "geofences", "responders", "roster_overrides"):
        conn.execute(
            sql.SQL(
                "CREATE OR REPLACE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {} "
                "FOR EACH STATEMENT EXECUTE FUNCTION bump_registry_version()"
            ).format(sql.Identifier(f"{table}_registry_version"), sql.Identifier(table))
        )


CLUSTER_SQL = """
CREATE TABLE IF NOT EXISTS gateway_instances (
  instance_id text PRIMARY KEY,
  shared_client_id text NOT NULL,
  detect_client_id text NOT NULL,
  host text NOT NULL,
  pid integer NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  heartbeat_at timestamptz NOT NULL DEFAULT now(),
  retiring_by text,
  retiring_at timestamptz
);
"""


def _migration_7(conn: psycopg.Connection[tuple[object, ...]], policy: StoragePolicy) -> None:
    """Gateway instances and their heartbeats: who is live, so each knows which elders it owns.

    A row whose heartbeat stopped is claimed (``retiring_by``) by one live instance, which
    drains that instance's broker sessions and then deletes the row (gateway/cluster.py).
    """
    conn.execute(CLUSTER_SQL)


DETECTIONS_CHANNEL = "eldercare_detections"
DETECTIONS_NOTIFY_SQL = f"""
CREATE OR REPLACE FUNCTION notify_detections() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('{DETECTIONS_CHANNEL}', '');
  RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER detections_notify AFTER INSERT ON detections
  FOR EACH STATEMENT EXECUTE FUNCTION notify_detections();
"""


def _migration_8(conn: psycopg.Connection[tuple[object, ...]], policy: StoragePolicy) -> None:
    """Stored detections wake the alert worker (gateway/alert_worker.py) as their transaction commits.

    A trigger, so no writer (an instance, the spool replay) can forget to, and the wake-up
    costs the SOS path no round trip. PostgreSQL folds identical notifications of one
    transaction into one.
    """
    conn.execute(DETECTIONS_NOTIFY_SQL)


def _migration_30(conn: psycopg.Connection[tuple[object, ...]], policy: StoragePolicy) -> None:
    """Grid-worker accounts carry their community: a grid is (community, grid), not the grid's name.

    With one community the accounts made before are its own; with several they stay
    without one, and the console refuses them (403) until ``eldercare users community``.
    """
    conn.execute(
        "UPDATE users SET community = (SELECT min(community) FROM elders WHERE community <> '') "
        "WHERE role = 'grid_worker' AND community IS NULL "
        "AND (SELECT count(DISTINCT community) FROM elders WHERE community <> '') = 1"
    )


MIGRATIONS: Sequence[tuple[int, str, Migration]] = (
    (1, "registry, dead letters and time-series tables", _migration_1),
    (2, "detections and geofences", _migration_2),
    (3, "alerts, audit trail, tier firings, notification outbox, responders", _migration_3),
    (4, "webhook receipts (Twilio retries: apply each once)", _migration_4),
    (5, "console users, sessions, login throttle, audit log; scope indexes", _migration_5),
    (6, "registry version: running gateways reload elders, devices and fences when it moves", _migration_6),
    (7, "gateway instances: heartbeats for scale-out ownership", _migration_7),
    (8, "stored detections notify the alert worker", _migration_8),
    (30, "grid-worker accounts carry their community (a grid is community and grid)", _migration_30),
)


def upgrade(dsn: str, policy: StoragePolicy | None = None, now: datetime | None = None) -> list[int]:
    """Apply pending migrations and create partitions; return the versions applied."""
    policy = policy or StoragePolicy()
    applied: list[int] = []
    with psycopg.connect(dsn, autocommit=False) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
                "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for version, name, migrate in MIGRATIONS:
                if version in done:
                    continue
                log.info("applying schema migration %d: %s", version, name)
                migrate(conn, policy)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (version, name),
                )
                applied.append(version)
        maintain_partitions(conn, policy, now or datetime.now(UTC))
    return applied


def storage_mode(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    row = conn.execute("SELECT mode FROM storage_mode").fetchone()
    return str(row[0]) if row else "unknown"


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def maintain_partitions(
    conn: psycopg.Connection[tuple[object, ...]],
    policy: StoragePolicy,
    now: datetime,
    extra_days: Sequence[date] = (),
) -> int:
    """Create daily partitions around ``now`` (and for ``extra_days``); drop expired ones.

    Returns the number of partitions created. A no-op under TimescaleDB, whose chunks
    and retention policy do this job.
    """
    if storage_mode(conn) != "partitioned":
        return 0
    today = now.astimezone(UTC).date()
    days = {today + timedelta(days=d) for d in range(-policy.past_days, policy.ahead_days + 1)}
    days.update(extra_days)
    oldest_kept = today - timedelta(days=policy.retention_days)
    created = 0
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        existing: set[str] = {
            str(r[0]) for r in conn.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid")
        }
        for table in TIME_SERIES:
            for day in sorted(days):
                if day < oldest_kept:
                    continue
                name = partition_name(table.name, day)
                if name in existing:
                    continue
                conn.execute(
                    sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                        sql.Identifier(name),
                        sql.Identifier(table.name),
                        sql.Literal(day.isoformat() + "T00:00:00Z"),
                        sql.Literal((day + timedelta(days=1)).isoformat() + "T00:00:00Z"),
                    )
                )
                created += 1
            for name in sorted(existing):
                prefix = f"{table.name}_p"
                if not name.startswith(prefix):
                    continue
                try:
                    day = datetime.strptime(name[len(prefix) :], "%Y%m%d").date()
                except ValueError:
                    continue
                if day < oldest_kept:
                    log.info("dropping expired partition %s", name)
                    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
    return created

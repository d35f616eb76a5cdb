"""Prometheus metrics, read at scrape time: nothing is added to the per-message path.

Counters come from the gateway's own ``IngestStats``; the alert and notification
figures are counted in the database when scraped (they live there, and a second
gateway instance shares them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from gateway.alerting.worker_process import AlertWorkerProcess
    from gateway.host import IngestStatus

BATCH_BUCKETS = (1, 10, 100, 500, 1000, 2000, 5000)
WRITE_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 250, 1000)

_DB_QUERIES = {
    "open_alerts": "SELECT severity, count(*) FROM alerts WHERE state <> 'resolved' GROUP BY severity",
    "tiers": "SELECT tier + 1, count(DISTINCT alert_id) FROM tier_firings GROUP BY tier",
    "notifications": "SELECT channel, status, count(*) FROM notifications GROUP BY channel, status",
}


def histogram(
    name: str, doc: str, buckets: tuple[int, ...], counts: dict[int, int], total: float, n: int
) -> HistogramMetricFamily:
    cumulative, running = [], 0
    for bound in buckets:
        running += counts.get(bound, 0)
        cumulative.append((str(bound), running))
    cumulative.append(("+Inf", n))
    return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=total)


def bucket_of(value: float, buckets: tuple[int, ...]) -> int:
    for bound in buckets:
        if value <= bound:
            return bound
    return -1  # beyond the last bound: only in +Inf


class GatewayCollector(Collector):
    def __init__(
        self, gateway: IngestStatus, worker: AlertWorkerProcess | None, db: dict[str, list[tuple[Any, ...]]]
    ) -> None:
        self.gateway = gateway
        self.worker = worker
        self.db = db

    def collect(self) -> Iterator[Metric]:
        gw, s = self.gateway, self.gateway.stats
        yield CounterMetricFamily("eldercare_ingest_messages", "MQTT messages received", value=gw.batcher.received)
        yield CounterMetricFamily(
            "eldercare_rows_stored", "Rows committed (telemetry, events, status)", value=s.rows_stored
        )
        yield CounterMetricFamily(
            "eldercare_spooled_messages", "Messages written to the spool", value=s.spooled_messages
        )
        yield GaugeMetricFamily("eldercare_spool_batches", "Batches waiting in the spool", value=len(gw.spool))
        limiter = gw.decoder.rate_limiter
        if limiter is not None:
            yield CounterMetricFamily(
                "eldercare_rate_limited_messages", "Messages dropped: device over its rate", value=limiter.dropped_total
            )
            yield CounterMetricFamily(
                "eldercare_rate_limited_devices", "Devices that went over their rate", value=limiter.flooding_devices
            )
        rejects = CounterMetricFamily("eldercare_decode_rejects", "Messages dead-lettered", labels=["reason"])
        for reason, n in sorted(s.rejects.items()):
            rejects.add_metric([reason], n)
        yield rejects
        detections = CounterMetricFamily("eldercare_detections", "Detections by kind", labels=["kind"])
        for kind, n in sorted(s.detections.items()):
            detections.add_metric([kind], n)
        yield detections
        yield histogram(
            "eldercare_batch_size",
            "Messages per micro-batch",
            BATCH_BUCKETS,
            s.batch_sizes,
            s.batch_messages,
            s.batches,
        )
        yield histogram(
            "eldercare_db_write_ms",
            "Time to commit one batch, ms",
            WRITE_BUCKETS_MS,
            s.write_ms_buckets,
            s.write_ms_total,
            s.writes,
        )
        yield GaugeMetricFamily(
            "eldercare_mqtt_connected",
            "1 when the broker connection is up",
            value=1 if gw.mqtt.connected.is_set() else 0,
        )
        yield GaugeMetricFamily("eldercare_database_up", "1 when PostgreSQL answers", value=1 if gw.database_up else 0)
        upkeep = gw.storage_upkeep
        if upkeep is not None:
            overdue = GaugeMetricFamily(
                "eldercare_storage_overdue_chunks",
                "Chunks or partitions storage upkeep should have compressed or dropped by now",
                labels=["job"],
            )
            overdue.add_metric(["compression"], upkeep.uncompressed_overdue)
            overdue.add_metric(["retention"], upkeep.expired_present)
            yield overdue
        worker = self.worker
        if worker is not None:
            yield GaugeMetricFamily(
                "eldercare_alert_worker_up", "1 when the alert worker process runs", value=1 if worker.running else 0
            )
            yield CounterMetricFamily(
                "eldercare_alert_worker_restarts", "Alert worker processes that died", value=worker.restarts
            )
        open_alerts = GaugeMetricFamily("eldercare_open_alerts", "Alerts not resolved", labels=["severity"])
        for severity, n in self.db.get("open_alerts", []):
            open_alerts.add_metric([severity], n)
        yield open_alerts
        tiers = CounterMetricFamily("eldercare_alerts_reaching_tier", "Alerts that reached a tier", labels=["tier"])
        for tier, n in self.db.get("tiers", []):
            tiers.add_metric([str(tier)], n)
        yield tiers
        notes = GaugeMetricFamily(
            "eldercare_notifications", "Notifications by channel and status", labels=["channel", "status"]
        )
        for channel, status, n in self.db.get("notifications", []):
            notes.add_metric([channel, status], n)
        yield notes


async def render(gateway: IngestStatus, pool: AsyncConnectionPool | None, worker: AlertWorkerProcess | None) -> bytes:
    db: dict[str, list[tuple[Any, ...]]] = {}
    if pool is not None and gateway.database_up:
        try:
            async with pool.connection(timeout=2) as conn:
                for name, sql in _DB_QUERIES.items():
                    cur = await conn.execute(sql)
                    db[name] = list(await cur.fetchall())
        except Exception:  # metrics must answer even while the database is away
            db = {}
    registry = CollectorRegistry()
    registry.register(GatewayCollector(gateway, worker, db))
    return generate_latest(registry)

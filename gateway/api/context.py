"""What every handler shares: the pool, the alert engine, settings, the clock, the live feed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from gateway.alerting.engine import AlertEngine
from gateway.api.auth import Authenticator
from gateway.api.events import AlertFeed
from gateway.api.settings import ApiConfig


def _never() -> bool:
    return False


@dataclass(slots=True)
class ApiContext:
    pool: AsyncConnectionPool
    engine: AlertEngine
    settings: ApiConfig
    clock_ms: Callable[[], int]
    connect: Callable[[], psycopg.Connection[Any]]  # a blocking connection, for the registry import
    battery_low_pct: float = 15.0
    timezone: str = "Asia/Shanghai"  # where a day starts, for the 30-day chart
    stopping: Callable[[], bool] = _never  # the server is shutting down: long streams end
    auth: Authenticator = field(init=False)
    feed: AlertFeed = field(init=False)

    def __post_init__(self) -> None:
        self.auth = Authenticator(self.pool, self.settings, self.clock_ms)
        self.feed = AlertFeed(self.pool, self.settings.events_poll_s)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock_ms() / 1000, UTC)

"""What the gateway's parts see of the process that runs them.

The supervisor (``gateway/service.py``) builds every stage and hands the few that need
to reach back (the cluster's detection stream, the alert side, the metrics endpoint)
one of these views of itself. They are Protocols, so those parts import this module and
never the supervisor: dependencies point one way (see docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from gateway.config import GatewayConfig
from gateway.detect.engine import DetectorSet
from gateway.domain.detection import Detection
from gateway.domain.registry import RegistryFile
from gateway.ingest.batcher import MicroBatcher
from gateway.ingest.mqtt_client import MqttIngestClient
from gateway.pipeline.decode import BatchDecoder
from gateway.pipeline.stats import IngestStats
from gateway.storage.durable import DurableStore
from gateway.storage.spool import DiskSpool
from gateway.storage.upkeep_check import UpkeepOutcome


class IngestStatus(Protocol):
    """Read-only state for /metrics and /readyz."""

    @property
    def stats(self) -> IngestStats: ...
    @property
    def batcher(self) -> MicroBatcher: ...
    @property
    def decoder(self) -> BatchDecoder: ...
    @property
    def mqtt(self) -> MqttIngestClient: ...
    @property
    def spool(self) -> DiskSpool: ...
    @property
    def database_up(self) -> bool: ...
    @property
    def storage_mode(self) -> str: ...
    @property
    def storage_upkeep(self) -> UpkeepOutcome | None: ...


class AlertSideHost(IngestStatus, Protocol):
    """What the alert side (engine, outbox, HTTP) takes from the gateway."""

    @property
    def config(self) -> GatewayConfig: ...
    @property
    def clock_ms(self) -> Callable[[], int]: ...
    @property
    def registry(self) -> RegistryFile: ...


class ClusterHost(Protocol):
    """What the cluster's detection stream shares with the single-instance path."""

    @property
    def config(self) -> GatewayConfig: ...
    @property
    def clock_ms(self) -> Callable[[], int]: ...
    @property
    def mqtt(self) -> MqttIngestClient: ...
    @property
    def batcher(self) -> MicroBatcher: ...
    @property
    def decoder(self) -> BatchDecoder: ...
    @property
    def detectors(self) -> DetectorSet | None: ...
    @property
    def durable(self) -> DurableStore: ...

    def detected(self, found: list[Detection]) -> None: ...
    def wake_alerts(self) -> None: ...
    async def drain(self, timeout_s: float = 30.0) -> None: ...

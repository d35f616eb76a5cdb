"""One process's share of a fleet: its devices' model, their MQTT links and the send loop.

``simulators.fleet`` builds one :class:`FleetShard` per worker process (or one in-process):
``connect()`` opens the links (one per device with per-device credentials and a will,
or a few shared ones), ``run(stop, rate)`` sends at ``rate`` for the configured duration
with flow control on every link's window, then waits for the last acknowledgements.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from devices.contracts import topic_for
from gateway.ingest.mqtt_wire import Will
from simulators.devices.batch import CHANNELS, TYPES, FleetModel
from simulators.devices.link import LinkRefused, LinkTable, PublisherLink, open_link, topic_header
from simulators.devices.wire import WILL_PAYLOAD

if TYPE_CHECKING:
    from simulators.fleet import FleetConfig

KINDS = len(TYPES) * len(CHANNELS)


@dataclass(frozen=True, slots=True)
class FleetProgress:
    phase: str  # connecting, sending, draining
    elapsed_s: float
    sent: int
    acked: int
    errors: int
    rate: float  # acknowledged per second since the previous report
    connected: int
    connections: int

    def line(self) -> str:
        return (
            f"[{self.elapsed_s:6.1f} s] {self.phase:<10} sent {self.sent:>11,}  acked {self.acked:>11,}  "
            f"rate {self.rate:>9,.0f} msg/s  errors {self.errors:,}  connections {self.connected:,}/"
            f"{self.connections:,}"
        )


class FleetShard:
    """Devices of one process: their model, their links and the send loop."""

    def __init__(self, config: FleetConfig, devices: list[tuple[str, str]], index: int) -> None:
        self.config = config
        self.index = index
        ids = [d for d, _ in devices]
        self.ids = ids
        self.model = FleetModel(ids, [t for _, t in devices], seed=config.seed * 7919 + index)
        self.per_device = config.credentials is not None
        n = len(ids)
        if self.per_device:
            n_links = n
        else:
            n_links = config.connections or min(4, max(1, math.ceil(n / 2500)))
            n_links = max(1, min(n_links, n))
        self.window = config.window or (20 if self.per_device else 5000)
        self.table = LinkTable(n_links, KINDS)
        self.links: list[PublisherLink | None] = [None] * n_links
        self.link_of = np.arange(n, dtype=np.int64) % n_links
        self.topics = [[topic_header(topic_for(t, d, ch)) for d, t in devices] for ch in CHANNELS]
        self.kind_base = self.model.type_code.astype(np.int64) * len(CHANNELS)
        self.refused = 0
        self.stopping = False
        self.phase = "connecting"
        self.t0 = time.monotonic()
        self.connect_s = 0.0
        self.duration_s = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    def _client(self, k: int) -> tuple[str, str | None, str | None, Will | None]:
        if self.per_device:
            device = self.ids[k]
            creds = self.config.credentials or {}
            will = Will(topic_for(TYPES[self.model.type_code[k]], device, "status"), WILL_PAYLOAD, qos=1, retain=False)
            return device, device, creds.get(device), will
        return (
            f"{self.config.id_prefix}fleet-{os.getpid()}-{self.index}-{k}",
            self.config.username,
            self.config.password,
            None,
        )

    async def _connect(self, k: int, gate: asyncio.Semaphore) -> None:
        client_id, user, password, will = self._client(k)
        async with gate:
            try:
                self.links[k] = await open_link(
                    self.table,
                    k,
                    self.config.host,
                    self.config.port,
                    client_id,
                    username=user,
                    password=password,
                    will=will,
                    keepalive_s=self.config.keepalive_s,
                    window=self.window,
                )
            except LinkRefused as error:
                self.refused += 1
                self.table.error(1, str(error))
            except (OSError, TimeoutError, ConnectionError) as error:
                self.table.error(
                    1,
                    f"{client_id}: cannot connect to {self.config.host}:{self.config.port}: "
                    f"{error or type(error).__name__}",
                )

    async def connect(self) -> None:
        started = time.monotonic()
        gate = asyncio.Semaphore(self.config.connect_concurrency)
        await asyncio.gather(*(self._connect(k, gate) for k in range(len(self.links))))
        self.connect_s = time.monotonic() - started

    async def _keep_up(self, k: int) -> None:
        """Reconnect a lost link with back-off while the run lasts."""
        delay = 0.5
        while not self.stopping:
            await asyncio.sleep(delay)
            if self.stopping:
                return
            await self._connect(k, asyncio.Semaphore(1))
            if self.table.up[k]:
                return
            delay = min(delay * 2, 8.0)

    def _watch(self) -> None:
        for k, link in enumerate(self.links):
            if link is not None and link.closed.done() and not self.stopping:
                self.links[k] = None
                task = asyncio.create_task(self._keep_up(k), name=f"reconnect-{k}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _pick(self, idx: NDArray[np.int64]) -> NDArray[np.int64]:
        """The devices of ``idx`` whose connection is up and has room in its window."""
        table = self.table
        links = self.link_of[idx]
        room = np.where(table.up, table.window - table.inflight, 0)
        if self.per_device:
            return idx[room[links] > 0]
        order = np.argsort(links, kind="stable")
        sorted_links = links[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_links)) + 1]
        rank = np.arange(order.shape[0]) - np.repeat(starts, np.diff(np.r_[starts, order.shape[0]]))
        keep = np.zeros(idx.shape[0], bool)
        keep[order] = rank < room[sorted_links]
        return idx[keep]

    def _send(self, idx: NDArray[np.int64]) -> None:
        payloads, channel = self.model.messages(idx, time.time_ns() // 1_000_000)
        kinds = (self.kind_base[idx] + channel).tolist()
        chans = channel.tolist()
        devices = idx.tolist()
        topics = self.topics
        qos = self.config.qos
        if self.per_device and qos:
            own = self.links
            written = [
                d
                for d, c, p, kind in zip(devices, chans, payloads, kinds, strict=True)
                if (link := own[d]) is not None and link.write_one(topics[c][d], p, kind)
            ]
            self.table.inflight[written] += 1  # a device (and so its link) appears once per batch
            self.table.sent += len(written)
            return
        if self.per_device:
            for d, c, p, kind in zip(devices, chans, payloads, kinds, strict=True):
                link = self.links[d]
                if link is not None:
                    link.publish((topics[c][d],), (p,), (kind,), qos)
            return
        links = self.link_of[idx]
        for k in np.unique(links).tolist():
            link = self.links[k]
            if link is None:
                continue
            sel = np.flatnonzero(links == k).tolist()
            link.publish(
                [topics[chans[j]][devices[j]] for j in sel], [payloads[j] for j in sel], [kinds[j] for j in sel], qos
            )

    async def run(self, stop: Callable[[], bool], rate: float, started: Callable[[], None] | None = None) -> None:
        config = self.config
        n = len(self.ids)
        order = self.model.rng.permutation(n).astype(np.int64)
        cursor = 0
        generated = 0
        max_batch = max(64, int(rate * 0.05))
        self.phase = "sending"
        self.t0 = time.monotonic()
        last_ping = self.t0
        if started is not None:
            started()
        while n:
            now = time.monotonic()
            elapsed = now - self.t0
            if elapsed >= config.duration_s or stop():
                break
            if now - last_ping > 5.0:
                self._ping(now)
                self._watch()
                last_ping = now
            budget = int(rate * elapsed) - generated
            if budget > max(2 * rate, 2):  # more than 2 s behind: the broker sets the pace, not the backlog
                generated = int(rate * elapsed) - int(rate)
                budget = max(1, int(rate))  # a shard slower than 1 msg/s still sends
            if budget <= 0:
                await asyncio.sleep(min(0.01, max(0.001, (generated + 1) / rate - elapsed)))
                continue
            take = min(budget, max_batch, n)
            idx = order[np.arange(cursor, cursor + take) % n]
            cursor = (cursor + take) % n
            chosen = self._pick(idx)
            if chosen.shape[0] == 0:
                self.table.progress.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.table.progress.wait(), 0.05)
                continue
            self._send(chosen)
            generated += int(chosen.shape[0])
            await asyncio.sleep(0)
        await self.drain()

    def _ping(self, now: float) -> None:
        idle = self.config.keepalive_s / 2
        for link in self.links:
            if link is not None and now - link.last_write > idle:
                link.ping()

    async def drain(self) -> None:
        self.phase = "draining"
        deadline = time.monotonic() + self.config.drain_s
        while self.table.inflight.sum() > 0 and time.monotonic() < deadline:
            self.table.progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.table.progress.wait(), 0.1)
        self.duration_s = time.monotonic() - self.t0
        self.stopping = True
        unacked = int(self.table.inflight[self.table.up].sum())
        if unacked:
            self.table.error(unacked, f"{unacked} messages not acknowledged within {self.config.drain_s} s")
        for task in list(self._tasks):
            task.cancel()
        for link in self.links:
            if link is not None:
                link.close()
        self.phase = "done"

    def progress(self, prev_acked: int, dt: float) -> FleetProgress:
        t = self.table
        elapsed = time.monotonic() - self.t0
        return FleetProgress(
            self.phase,
            elapsed,
            t.sent,
            t.acked,
            t.errors,
            (t.acked - prev_acked) / dt if dt > 0 else 0.0,
            int(t.up.sum()),
            len(self.links),
        )

    def acked_by_topic(self) -> dict[str, int]:
        """Acknowledged messages per ``type/channel``."""
        return {
            f"{TYPES[k // len(CHANNELS)]}/{CHANNELS[k % len(CHANNELS)]}": int(v)
            for k, v in enumerate(self.table.acked_by_kind.tolist())
            if v
        }

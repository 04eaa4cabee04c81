"""Delivery of event records: one bounded queue and one sender task per destination URL.

A stream never waits for a receiver: ``offer`` only appends to a queue (or drops, counted and
logged, when it is full). The sender posts records in order; an answer other than 2xx is
retried ``retries`` times ``retry_interval`` apart (the cloud service: 12 times, a minute
apart), then the record is given up (counted). ``t``/``sign`` are set afresh on each attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.hooks.events import KIND_OF, Kind, signed

log = logging.getLogger("app.hooks")

OFF = "off"
# A full queue is logged at most this often per destination (the counter has every drop).
DROP_LOG_INTERVAL = 10.0


@dataclass
class DeliveryCounters:
    """Per destination kind, for /metrics."""

    delivered: dict[str, int] = field(default_factory=dict)
    failed_attempts: dict[str, int] = field(default_factory=dict)
    given_up: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def add(counter: dict[str, int], kind: str) -> None:
        counter[kind] = counter.get(kind, 0) + 1


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    key: str = ""
    retries: int = 12
    retry_interval: float = 60.0
    timeout: float = 5.0
    queue_size: int = 1000
    sign_ttl: float = 600.0


class Destination:
    """One receiver URL: its queue and its sender task."""

    def __init__(
        self,
        url: str,
        policy: DeliveryPolicy,
        client: httpx.AsyncClient,
        counters: DeliveryCounters,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.policy = policy
        self.client = client
        self.counters = counters
        self.clock = clock
        self.queue: asyncio.Queue[tuple[Kind, dict[str, Any]]] = asyncio.Queue(policy.queue_size)
        self._last_drop_log = 0.0
        self._task: asyncio.Task[None] | None = None
        self._sending = False

    def offer(self, kind: Kind, body: dict[str, Any]) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            self.queue.put_nowait((kind, body))
        except asyncio.QueueFull:
            self.counters.add(self.counters.dropped, kind)
            now = time.monotonic()
            if now - self._last_drop_log >= DROP_LOG_INTERVAL:
                self._last_drop_log = now
                log.warning(
                    "callback queue for %s full (%d records): dropping event %s; "
                    "the receiver is slow or down",
                    self.url,
                    self.policy.queue_size,
                    body.get("event_type"),
                )

    @property
    def busy(self) -> bool:
        return self._sending or not self.queue.empty()

    async def _run(self) -> None:
        while True:
            kind, body = await self.queue.get()
            self._sending = True
            try:
                await self._deliver(kind, body)
            except Exception:  # a bug of ours must not end delivery for good
                log.exception("callback delivery to %s failed", self.url)
            finally:
                self._sending = False

    async def _deliver(self, kind: Kind, body: Mapping[str, Any]) -> None:
        policy = self.policy
        for attempt in range(policy.retries + 1):
            if attempt:
                await asyncio.sleep(policy.retry_interval)
            why = await self._post(signed(body, policy.key, policy.sign_ttl, self.clock()))
            if why is None:
                self.counters.add(self.counters.delivered, kind)
                return
            self.counters.add(self.counters.failed_attempts, kind)
            log.info(
                "callback %s to %s: %s (attempt %d of %d)",
                body.get("event_type"),
                self.url,
                why,
                attempt + 1,
                policy.retries + 1,
            )
        self.counters.add(self.counters.given_up, kind)
        log.warning(
            "callback %s to %s given up after %d attempts",
            body.get("event_type"),
            self.url,
            policy.retries + 1,
        )

    async def _post(self, body: dict[str, Any]) -> str | None:
        """None when delivered, else why not."""
        try:
            reply = await self.client.post(self.url, json=body, timeout=self.policy.timeout)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if 200 <= reply.status_code < 300:
            return None
        return f"HTTP {reply.status_code}"

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class CallbackDelivery:
    """Routes each record to its kind's destination (``urls``: kind -> URL, "" or "off" = none).

    Destinations that share a URL share one queue, so one receiver sees events in order.
    """

    def __init__(
        self,
        urls: Mapping[Kind, str],
        policy: DeliveryPolicy,
        counters: DeliveryCounters | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.counters = counters or DeliveryCounters()
        self._client = httpx.AsyncClient(follow_redirects=False)
        by_url: dict[str, Destination] = {}
        self._routes: dict[Kind, Destination] = {}
        for kind, url in urls.items():
            if not url or url == OFF:
                continue
            if url not in by_url:
                by_url[url] = Destination(url, policy, self._client, self.counters, clock)
            self._routes[kind] = by_url[url]
        self._destinations = list(by_url.values())

    @property
    def enabled(self) -> bool:
        return bool(self._routes)

    def wants(self, kind: Kind) -> bool:
        return kind in self._routes

    def emit(self, body: dict[str, Any]) -> None:
        """Queues ``body`` for its kind's receiver; never blocks."""
        kind = KIND_OF.get(int(body["event_type"]))
        destination = self._routes.get(kind) if kind is not None else None
        if kind is not None and destination is not None:
            destination.offer(kind, body)

    async def close(self, drain_seconds: float = 1.0) -> None:
        """Gives queued records (the last streams' stop events) a moment, then stops."""
        deadline = time.monotonic() + drain_seconds
        while time.monotonic() < deadline and any(d.busy for d in self._destinations):
            await asyncio.sleep(0.05)
        for destination in self._destinations:
            await destination.close()
        await self._client.aclose()

"""This node's part in the cluster: its heartbeat, the streams it registers, the admission
rule "one publisher per stream cluster-wide", and whether the directory is reachable.

The hub knows nothing of this: streams are registered from ``hub.on_stream_opened/closed``.
Every database call runs in a thread; results come back to the loop, which alone holds state.
A publish is admitted by claiming its key in the directory before the publisher is
answered: the database's unique key decides a race between two nodes, so the loser is
refused, never accepted and then dropped. While the database is unreachable the node keeps
serving what it has, refuses new publishes (they need the directory) and re-claims its
streams on recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from app.cluster.directory import DirectoryEntry, NodeAddress, StreamDirectory
from app.config import Settings
from app.hub import Hub, Stream, StreamKey

log = logging.getLogger("app.cluster")

# A claim made at admission whose publisher never opened the stream (it went away while
# being answered) is given back after this long.
UNUSED_CLAIM_SECONDS = 10.0


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def advertised_host(settings: Settings) -> str:
    host = settings.internal_host or settings.host
    if host in ("0.0.0.0", "::", ""):
        return socket.gethostname()
    return host


class ClusterNode:
    def __init__(
        self,
        hub: Hub,
        settings: Settings,
        address: NodeAddress,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hub = hub
        self.settings = settings
        self.me = address
        self.directory = StreamDirectory(
            settings.resolved_database_url, address, settings.node_expiry_seconds
        )
        self.clock = clock
        self.available = False
        self.unavailable_since: float | None = None
        self.outages = 0
        self.heartbeats = 0
        self.refused: dict[str, int] = {}
        # The cluster's live streams as of the last heartbeat, by key.
        self.snapshot: dict[StreamKey, DirectoryEntry] = {}
        # Streams published here, and whether the directory has them (False: claim pending).
        self._local: dict[StreamKey, bool] = {}
        # Keys claimed at admission whose stream has not opened yet.
        self._claimed_ahead: set[StreamKey] = set()
        # Keys opened by the edge puller: served here, held elsewhere, never registered.
        self.pulled: set[StreamKey] = set()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._stopped = False
        hub.on_stream_opened.append(self._on_opened)
        hub.on_stream_closed.append(self._on_closed)

    # --------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self.directory.migrate)
            # A restarted node with the same id (a --workers child) must not revive the
            # streams its previous run held: they died with it.
            await asyncio.to_thread(self.directory.leave)
        except SQLAlchemyError as exc:
            self._mark_down(exc)
        await self._beat()
        self._task = asyncio.create_task(self._heartbeats())
        log.info("cluster node %s (%s, %s)", self.me.node_id, self.me.http_url, self.me.rtmp_url)

    async def stop(self) -> None:
        self._stopped = True  # streams closing after this are gone with leave()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.available:
            with contextlib.suppress(SQLAlchemyError):
                await asyncio.to_thread(self.directory.leave)
        self.directory.close()

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            await self._beat()

    async def _beat(self) -> None:
        async with self._lock:
            try:
                entries = await asyncio.to_thread(self.directory.heartbeat)
            except SQLAlchemyError as exc:
                self._mark_down(exc)
                return
            self.heartbeats += 1
            if not self.available:
                self.available = True
                if self.unavailable_since is not None:
                    log.warning(
                        "cluster directory reachable again after %.1f s",
                        self.clock() - self.unavailable_since,
                    )
                self.unavailable_since = None
            self.snapshot = {e.key: e for e in entries}
            # Streams published here that the directory lacks (claims made while it was
            # down, or rows a peer expired during an outage) are claimed again.
            for key, registered in list(self._local.items()):
                mine = self.snapshot.get(key)
                if not registered or mine is None or mine.node.node_id != self.me.node_id:
                    await self._claim(key)

    def _mark_down(self, exc: Exception) -> None:
        if self.available or self.unavailable_since is None:
            self.outages += 1
            self.unavailable_since = self.clock()
            log.error(
                "cluster directory unreachable (%s): serving local streams, refusing new "
                "publishes until it returns",
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
        self.available = False

    # --------------------------------------------------------------- publishes

    async def admit_publish(self, key: StreamKey) -> str | None:
        """Why a publish of ``key`` here must be refused, or None once the directory holds
        ``key`` for this node."""
        if key in self.pulled:
            return None  # the edge puller's own stream
        if not self.available:
            return self._down()
        async with self._lock:
            try:
                # The database decides, not the snapshot of the last heartbeat: a row of a
                # node whose heartbeat has expired is taken over here.
                holder = await asyncio.to_thread(self.directory.claim, key)
            except SQLAlchemyError as exc:
                self._mark_down(exc)
                return self._down()
        if holder is not None:
            self._refuse("busy-elsewhere")
            return f"stream {key} already has a publisher on node {holder.node.node_id}"
        self._claimed_ahead.add(key)
        asyncio.get_running_loop().call_later(UNUSED_CLAIM_SECONDS, self._drop_unused_claim, key)
        return None

    def _down(self) -> str:
        self._refuse("directory-down")
        return "the stream directory is unreachable; try again shortly"

    def _drop_unused_claim(self, key: StreamKey) -> None:
        if key not in self._claimed_ahead:
            return
        self._claimed_ahead.discard(key)
        if key not in self._local and not self._stopped:
            asyncio.get_running_loop().create_task(self._release(key))

    def _refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def _on_opened(self, stream: Stream) -> None:
        if stream.key in self.pulled or self._stopped:
            return
        if stream.key in self._claimed_ahead:
            self._claimed_ahead.discard(stream.key)
            self._local[stream.key] = True
            return
        # Opened without admission (a stream the hub made itself): claimed now, and a
        # publisher that loses the claim is dropped.
        self._local[stream.key] = False
        asyncio.get_running_loop().create_task(self._claim_locked(stream.key))

    def _on_closed(self, stream: Stream) -> None:
        if stream.key in self.pulled or self._local.pop(stream.key, None) is None:
            return
        if self._stopped:  # leave() took this node's rows
            return
        self.snapshot.pop(stream.key, None)
        asyncio.get_running_loop().create_task(self._release(stream.key))

    async def _claim_locked(self, key: StreamKey) -> None:
        async with self._lock:
            await self._claim(key)

    async def _claim(self, key: StreamKey) -> None:
        if key not in self._local:
            return
        try:
            holder = await asyncio.to_thread(self.directory.claim, key)
        except SQLAlchemyError as exc:
            self._mark_down(exc)
            return
        if key not in self._local:
            # Closed while we were claiming it: give the row back.
            await self._release(key)
            return
        if holder is None:
            self._local[key] = True
            return
        stream = self.hub.get(key)
        log.warning(
            "stream %s is held by node %s: the publisher here is dropped",
            key,
            holder.node.node_id,
        )
        self._refuse("busy-elsewhere")
        self._local.pop(key, None)
        if stream is not None:
            stream.kick()

    async def _release(self, key: StreamKey) -> None:
        try:
            await asyncio.to_thread(self.directory.release, key)
        except SQLAlchemyError as exc:
            self._mark_down(exc)  # the row expires with this node's heartbeat if it stays

    # --------------------------------------------------------------- lookups

    async def holder(self, key: StreamKey, *, recent: bool = False) -> DirectoryEntry | None:
        """The live node holding ``key`` other than this one, or None. ``recent``: the last
        heartbeat's reading will do when it names such a node, so that requests which come
        often (HLS playlists and segments) do not each read the database."""
        known = self.snapshot.get(key) if recent else None
        if (
            known is not None
            and known.node.node_id != self.me.node_id
            and known.alive(self.directory.expiry)
        ):
            return known
        try:
            entry = await asyncio.to_thread(self.directory.lookup, key)
        except SQLAlchemyError as exc:
            self._mark_down(exc)
            entry = self.snapshot.get(key)
        if entry is None or entry.node.node_id == self.me.node_id:
            return None
        return entry

    async def entries(self) -> list[DirectoryEntry]:
        try:
            return await asyncio.to_thread(self.directory.entries)
        except SQLAlchemyError as exc:
            self._mark_down(exc)
            return sorted(self.snapshot.values(), key=lambda e: e.key)


__all__ = ["ClusterNode", "advertised_host", "default_node_id"]

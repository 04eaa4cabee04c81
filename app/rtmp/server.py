"""The asyncio RTMP server: one RtmpServerSession per connection, wired to the hub.

All protocol decisions live in the sans-IO session; this module moves bytes, asks the push
auth rule and the hub, and pumps packets to players. A protocol error closes only its own
connection (logged on ``app.rtmp``); a player that cannot keep up stops being pumped while its
socket buffer is full, and the hub's bounded queue makes it skip to a keyframe, so neither the
publisher nor other players ever wait for it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

from app.auth import (
    BAD_AUTH,
    PLAY_FAILED,
    Access,
    AccessRequest,
    Action,
    Admit,
    Gate,
    PushKeys,
    signatures_only,
)
from app.config import Settings
from app.hub import Hub, Publisher, Stream, StreamBusyError, StreamKey, Subscription
from app.media.flv import FlvError, TagType
from app.media.packet import MediaPacket, PacketBatch
from app.rtmp import events as rtmp
from app.rtmp.chunk import PendingBudget
from app.rtmp.session import RtmpServerSession
from app.rtmp.tls import TlsListener
from app.rtmp.url import RELAY_PULL_PARAM

log = logging.getLogger("app.rtmp")

# Transport buffer marks for player connections: above HIGH the pump stops feeding the socket.
WRITE_BUFFER_HIGH = 2 * 1024 * 1024
WRITE_BUFFER_LOW = 512 * 1024


@dataclass
class RtmpCounters:
    """Connection-level totals for /metrics (the hub counts media and refused pushes)."""

    connections_total: int = 0
    connections_open: int = 0
    players_open: int = 0
    protocol_errors: int = 0
    timeouts: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    refused: dict[str, int] = field(default_factory=dict)

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1


class RtmpServer:
    def __init__(
        self,
        hub: Hub,
        settings: Settings,
        *,
        counters: RtmpCounters | None = None,
        clock: Callable[[], float] = time.time,
        play_wait_seconds: float = 3.0,
        admit: Admit | None = None,
    ) -> None:
        self.hub = hub
        self.settings = settings
        self.keys = PushKeys(settings.push_key, settings.push_backup_key)
        # Who may publish or play (app/auth.py); the composition root adds the auth hook.
        self.admit = admit or signatures_only(
            Gate(
                self.keys,
                PushKeys(settings.play_key, settings.play_backup_key),
                max_ttl=settings.push_max_ttl,
            ),
            clock,
        )
        self.counters = counters if counters is not None else RtmpCounters()
        self.clock = clock
        self.play_wait_seconds = play_wait_seconds
        self.handshake_timeout = settings.rtmp_handshake_timeout
        self.connect_timeout = settings.rtmp_connect_timeout
        self.idle_timeout = settings.rtmp_idle_timeout
        # What unfinished messages of all connections may hold together.
        self.pending_budget = PendingBudget(settings.rtmp_max_pending_bytes_total)
        self.port = 0
        self.tls_port = 0
        self._servers: list[asyncio.Server] = []
        self._tls_listeners: list[TlsListener] = []
        self._connections: set[RtmpConnection] = set()
        # Cluster hooks (app/cluster): why a publish must be refused beyond auth, and a stream
        # held by another node, pulled here for a player.
        self.publish_admission: Callable[[StreamKey], Awaitable[str | None]] | None = None
        self.remote_stream: Callable[[StreamKey], Awaitable[Stream | None]] | None = None

    @property
    def connections(self) -> frozenset[RtmpConnection]:
        return frozenset(self._connections)

    def new_session(self, peer: str) -> RtmpServerSession:
        return RtmpServerSession(
            peer=peer,
            max_pending_bytes=self.settings.rtmp_max_pending_bytes,
            pending_budget=self.pending_budget,
        )

    async def start(
        self, host: str, port: int, tls: ssl.SSLContext | None = None, *, reuse_port: bool = False
    ) -> int:
        """Listens for RTMP (or RTMPS with ``tls``): the same sessions behind either."""
        loop = asyncio.get_running_loop()
        if tls is None:
            server = await loop.create_server(
                lambda: RtmpConnection(self), host, port, reuse_port=reuse_port or None
            )
            self._servers.append(server)
            bound = self.port = int(server.sockets[0].getsockname()[1])
        else:
            listener = await TlsListener.open(
                host, port, tls, lambda: RtmpConnection(self), reuse_port=reuse_port
            )
            self._tls_listeners.append(listener)
            bound = self.tls_port = listener.port
        log.info("%s listening on %s:%d", "RTMP" if tls is None else "RTMPS", host, bound)
        return bound

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for listener in self._tls_listeners:
            await listener.close()
        self._tls_listeners.clear()
        for conn in tuple(self._connections):
            conn.close("server shutting down")
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    def connection_opened(self, conn: RtmpConnection) -> None:
        self._connections.add(conn)
        self.counters.connections_total += 1
        self.counters.connections_open += 1

    def connection_closed(self, conn: RtmpConnection) -> None:
        if conn in self._connections:
            self._connections.discard(conn)
            self.counters.connections_open -= 1


class RtmpConnection(asyncio.Protocol):
    """One client connection: a session, the publishers and players it registered.

    Whatever the connection registers in the hub is in ``_publishers``/``_players`` (and
    publishes awaiting admission in ``_admitting``) and is released by ``_release``, which
    every way a connection ends goes through (``close``: refusal, protocol error, timeout,
    kick, takeover, shutdown; ``connection_lost``: FIN, reset), so nothing outlives it.
    """

    def __init__(self, server: RtmpServer) -> None:
        self.server = server
        self.peer = "?"
        self.session = server.new_session(self.peer)
        self.transport: asyncio.Transport | None = None
        self._publishers: dict[int, Publisher] = {}
        self._players: dict[int, asyncio.Task[None]] = {}
        self._admitting: dict[int, asyncio.Task[None]] = {}  # publishes awaiting admission
        self._writable = asyncio.Event()
        self._writable.set()
        self._closing = False
        self._last_input = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._opened_at = time.monotonic()
        self._unused_since = self._opened_at  # since when it has neither published nor played

    # --------------------------------------------------------------- transport callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not asyncio.Transport subclasses: no isinstance).
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.session.peer = self.peer
        transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH, low=WRITE_BUFFER_LOW)
        self.server.connection_opened(self)
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        self._last_input = time.monotonic()
        self.server.counters.bytes_in += len(data)
        self._guarded(self.session.receive_data, data)

    def eof_received(self) -> bool:
        self._guarded(self.session.receive_data, b"")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.session.closed:
            self._guarded(self.session.receive_data, b"")
        self.close("connection lost" if exc is None else f"connection lost: {exc}")
        self.server.connection_closed(self)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # --------------------------------------------------------------- plumbing

    def _guarded(self, receive: Callable[[bytes], list[rtmp.Event]], data: bytes) -> None:
        """Protocol errors arrive as events; anything raised here is a bug of ours, which
        still ends only this connection (logged with its traceback, once)."""
        try:
            self._process(receive(data))
        except Exception:
            log.exception("%s: internal error handling RTMP input", self.peer)
            self.close("internal error", abort=True)

    def _flush(self) -> None:
        self._write_all([])

    def _write_all(self, parts: list[bytes]) -> None:
        """What the session queued, then ``parts`` as they are, in one ``writelines`` (a
        vectored write on uvloop)."""
        queued = self.session.data_to_send()
        if queued:
            parts = [queued, *parts]
        if parts and self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(parts)
            self.server.counters.bytes_out += sum(map(len, parts))

    def close(self, reason: str, *, level: int = logging.INFO, abort: bool = False) -> None:
        """Flushes what is queued (unless ``abort``: the peer is presumed gone) and closes
        this connection only, releasing what it registered. Logs one line."""
        if self._closing:
            return
        self._closing = True
        log.log(level, "%s: closing RTMP connection: %s", self.peer, reason)
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self._flush()
                self.transport.close()
        self._release()

    def _release(self) -> None:
        """Ends what this connection registered in the hub and its unfinished messages."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        publishers, self._publishers = self._publishers, {}
        for publisher in publishers.values():
            publisher.close()
        players, self._players = self._players, {}
        for task in players.values():
            task.cancel()
        admitting, self._admitting = self._admitting, {}
        for task in admitting.values():
            task.cancel()
        if not self.session.closed:
            self.session.receive_data(b"")  # the session gives its unfinished messages back

    def _arm_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(1.0, self._check_timeouts)

    def _check_timeouts(self) -> None:
        self._timer = None
        if self._closing:
            return
        server = self.server
        now = time.monotonic()
        reason = None
        if not self.session.connected:
            if now - self._opened_at > server.handshake_timeout:
                reason = f"no handshake and connect within {server.handshake_timeout:g} s"
        elif self._publishers or self._players or self._admitting:
            self._unused_since = now
            if self._publishers and now - self._last_input > server.idle_timeout:
                reason = f"publisher silent for {server.idle_timeout:g} s"
        elif now - self._unused_since > server.connect_timeout:
            reason = f"connected but neither published nor played for {server.connect_timeout:g} s"
        if reason is not None:
            server.counters.timeouts += 1
            self.close(reason)
            return
        self._arm_timer()

    # --------------------------------------------------------------- session events

    def _process(self, events: list[rtmp.Event]) -> None:
        for event in events:
            if self._closing:
                break
            self._on_event(event)
        self._flush()
        if self.session.should_close and not self._closing:
            self.close("request refused")

    def _on_event(self, event: rtmp.Event) -> None:
        match event:
            case rtmp.MediaReceived(stream_id, kind, timestamp, payload):
                self._on_media(stream_id, kind, timestamp, payload)
            case rtmp.MetadataReceived(stream_id, metadata, tag_payload, timestamp):
                publisher = self._publishers.get(stream_id)
                if publisher is not None:
                    publisher.set_metadata(metadata)
                    publisher.push(MediaPacket(TagType.DATA, timestamp, tag_payload))
            case rtmp.PublishRequested(stream_id, app, name, query, _publish_type, request):
                if self.session.awaiting_answer(stream_id, request):
                    self._start_admission(stream_id, request, StreamKey(app, name), query)
            case rtmp.PlayRequested(stream_id, app, name, query, request):
                self._start_player(stream_id, request, StreamKey(app, name), query)
            case rtmp.Unpublished(stream_id):
                pending = self._admitting.pop(stream_id, None)
                if pending is not None:
                    pending.cancel()
                publisher = self._publishers.pop(stream_id, None)
                if publisher is not None:
                    log.info("%s: unpublished %s", self.peer, publisher.stream.key)
                    publisher.close()
            case rtmp.PlayStopped(stream_id):
                task = self._players.pop(stream_id, None)
                if task is not None:
                    task.cancel()
            case rtmp.RequestRefused(stream_id, action, code, reason):
                log.warning("%s: %s refused (%s): %s", self.peer, action, code, reason)
                if action == "publish":
                    self.server.counters.refuse("bad-name")
                    self.server.hub.counters.refused("bad-name")
            case rtmp.ProtocolError(reason):
                self.server.counters.protocol_errors += 1
                self.close(f"RTMP protocol error: {reason}", level=logging.WARNING)
            case rtmp.Closed():
                self.close("peer closed the connection")
            case rtmp.Connected(app, tc_url, _params):
                scheme = self.session.handshake_scheme
                log.debug(
                    "%s: connected to app %r (%s), %s handshake",
                    self.peer,
                    app,
                    tc_url,
                    "plain" if scheme is None else f"digest scheme {scheme}",
                )

    def _on_media(self, stream_id: int, kind: int, timestamp: int, payload: bytes) -> None:
        publisher = self._publishers.get(stream_id)
        if publisher is None:
            return  # publish refused or not yet accepted: nothing to feed
        try:
            packet = MediaPacket.from_tag(kind, timestamp, payload)
        except FlvError as exc:
            self.server.counters.protocol_errors += 1
            self.close(f"malformed FLV tag on {publisher.stream.key}: {exc}", level=logging.WARNING)
            return
        publisher.push(packet)

    def _registered(self, stream_id: int) -> bool:
        """Whether a live registration holds message stream ``stream_id`` already."""
        player = self._players.get(stream_id)
        admitting = self._admitting.get(stream_id)
        return (
            stream_id in self._publishers
            or (player is not None and not player.done())
            or (admitting is not None and not admitting.done())
        )

    def _start_admission(
        self, stream_id: int, request: int, key: StreamKey, query: dict[str, str]
    ) -> None:
        # The session hands out each message stream once and only for an awaited request,
        # so the slot is free; the check keeps that a guarantee of this class too.
        if self._registered(stream_id):
            raise RuntimeError(f"message stream {stream_id} registered twice")
        # Held (no answer, media ignored) until admitted, in this connection's task.
        admitting = asyncio.get_running_loop().create_task(
            self._admit_publish(stream_id, request, key, query)
        )
        self._admitting[stream_id] = admitting
        admitting.add_done_callback(partial(self._admitted, stream_id))

    def _admitted(self, stream_id: int, task: asyncio.Task[None]) -> None:
        if self._admitting.get(stream_id) is task:
            del self._admitting[stream_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: publish admission failed", self.peer, exc_info=task.exception())
            self.close("internal error while admitting a publish", abort=True)

    def _request(self, action: Action, key: StreamKey, query: dict[str, str]) -> AccessRequest:
        ip = self.peer.rsplit(":", 1)[0]
        return AccessRequest(action, "rtmp", key.app, key.name, query, ip)

    async def _admit_publish(
        self, stream_id: int, request: int, key: StreamKey, query: dict[str, str]
    ) -> None:
        verdict = await self.server.admit(self._request("publish", key, query))
        refusal = None
        if verdict.ok and self.server.publish_admission is not None:
            refusal = await self.server.publish_admission(key)
        if self._closing or not self.session.awaiting_answer(stream_id, request):
            return  # the peer went away or withdrew its publish meanwhile
        self._on_publish(stream_id, request, key, query, verdict, refusal)
        self._flush()
        if self.session.should_close:
            self.close("request refused")

    def _on_publish(
        self,
        stream_id: int,
        request: int,
        key: StreamKey,
        query: dict[str, str],
        verdict: Access,
        refusal: str | None,
    ) -> None:
        server = self.server
        if not verdict.ok:
            server.counters.refuse("auth")
            server.hub.counters.refused("auth", key)
            log.warning("%s: push to %s refused: %s", self.peer, key, verdict.reason)
            self.session.refuse_publish(stream_id, BAD_AUTH, verdict.reason, request)
            return
        if refusal is not None:
            server.counters.refuse("busy")
            log.warning("%s: push to %s refused: %s", self.peer, key, refusal)
            self.session.refuse_publish(stream_id, "NetStream.Publish.BadName", refusal)
            return
        if verdict.template:  # the auth hook chose the push's ROI template: the ROI stage
            # reads it from the query, as if the URL had said so (app/roi/status.py)
            query = {**query, "roirecognition": verdict.template}
        try:
            stream = server.hub.open_publisher(key, query, self.peer, on_end=self._publisher_ended)
        except StreamBusyError as exc:
            server.counters.refuse("busy")
            log.warning("%s: push to %s refused: %s", self.peer, key, exc)
            self.session.refuse_publish(stream_id, "NetStream.Publish.BadName", str(exc), request)
            return
        self._publishers[stream_id] = stream.publisher
        self.session.accept_publish(stream_id, request)
        log.info("%s: publishing %s (%s)", self.peer, key, verdict.reason)

    def _publisher_ended(self, reason: str) -> None:
        # A takeover means the previous publisher's network is most likely gone: do not wait
        # for its socket to drain what is queued.
        self.close(reason, abort="taken over" in reason)

    # --------------------------------------------------------------- players

    def _start_player(
        self, stream_id: int, request: int, key: StreamKey, query: dict[str, str]
    ) -> None:
        if self._registered(stream_id):
            raise RuntimeError(f"message stream {stream_id} registered twice")
        task = asyncio.get_running_loop().create_task(self._play(stream_id, request, key, query))
        self._players[stream_id] = task
        task.add_done_callback(partial(self._player_done, stream_id))

    async def _find_stream(self, key: StreamKey) -> Stream | None:
        """The live stream, waiting a little for a publisher that is about to start."""
        deadline = time.monotonic() + self.server.play_wait_seconds
        if self.server.hub.get(key) is None and self.server.remote_stream is not None:
            await self.server.remote_stream(key)
        while True:
            stream = self.server.hub.get(key)
            if stream is not None or time.monotonic() >= deadline:
                return stream
            await asyncio.sleep(0.05)

    async def _play(
        self, stream_id: int, request: int, key: StreamKey, query: dict[str, str]
    ) -> None:
        access = await self.server.admit(self._request("play", key, query))
        if self._closing or not self.session.awaiting_answer(stream_id, request):
            access.ended()
            return  # the peer went away or withdrew its play meanwhile
        if not access.ok:
            log.warning("%s: play %s refused: %s", self.peer, key, access.reason)
            self.session.refuse_play(stream_id, PLAY_FAILED, access.reason, request)
            self._flush()
            return
        try:
            await self._play_admitted(stream_id, request, key, RELAY_PULL_PARAM in query)
        finally:
            access.ended()

    async def _play_admitted(
        self, stream_id: int, request: int, key: StreamKey, relay_pull: bool
    ) -> None:
        stream = await self._find_stream(key)
        session = self.session
        if self._closing or not session.awaiting_answer(stream_id, request):
            return  # the peer went away or withdrew its play meanwhile
        if stream is None:
            log.info("%s: play %s: no such stream", self.peer, key)
            session.refuse_play(stream_id, description=f"{key} is not live", request=request)
            self._flush()
            return
        subscription = stream.output.subscribe(f"rtmp {self.peer}")
        subscription.merge_writes = not relay_pull
        self.server.counters.players_open += 1
        try:
            session.accept_play(stream_id, request)
            self._flush()
            subscription.direct = partial(self._send_now, stream_id)
            log.info("%s: playing %s", self.peer, key)
            await self._pump(stream_id, subscription)
        finally:
            self.server.counters.players_open -= 1
            subscription.close()

    async def _pump(self, stream_id: int, subscription: Subscription) -> None:
        session = self.session
        while not self._closing:
            if not self._writable.is_set():
                await self._writable.wait()
                continue
            packet = await subscription.get()
            if packet is None:
                if session.send_stream_eof(stream_id):
                    self._flush()
                    log.info("%s: stream ended for player", self.peer)
                return
            while packet is not None:
                self._send_packet(stream_id, packet)
                packet = subscription.get_nowait()
            self._flush()

    def _send_packet(self, stream_id: int, packet: MediaPacket) -> None:
        session = self.session
        if packet.kind is TagType.DATA:
            session.send_media(stream_id, packet.kind, packet.timestamp, packet.payload)
            return
        session.send_chunks(self._media_chunks(stream_id, packet))

    def _media_chunks(self, stream_id: int, packet: MediaPacket) -> bytes:
        """The packet's chunks for this session, built once for every player alike."""
        session = self.session
        build = partial(
            session.media_chunks, stream_id, packet.kind, packet.timestamp, packet.payload
        )
        return packet.encoded(("rtmp", *session.media_chunks_key(stream_id)), build)

    def _send_now(self, stream_id: int, batch: PacketBatch) -> bool:
        """The hub's direct path: write at once while the socket has room.

        The batch's chunks, built once for every player with the same chunking, go to the
        transport as they are, after whatever the session has queued, in one ``writelines``:
        no copy into the session's buffer and out again, per player and packet.
        """
        if self._closing or not self._writable.is_set():
            return False
        if any(packet.kind is TagType.DATA for packet in batch.packets):
            # In order, through the session: a data message's AMF is per session.
            for packet in batch.packets:
                self._send_packet(stream_id, packet)
            self._flush()
            return True
        key = ("rtmp", *self.session.media_chunks_key(stream_id))
        self._write_all([batch.encoded(key, partial(self._batch_chunks, stream_id, batch))])
        return True

    def _batch_chunks(self, stream_id: int, batch: PacketBatch) -> bytes:
        chunks = [self._media_chunks(stream_id, packet) for packet in batch.packets]
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _player_done(self, stream_id: int, task: asyncio.Task[Any]) -> None:
        if self._players.get(stream_id) is task:
            del self._players[stream_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: player task failed", self.peer, exc_info=task.exception())
            self.close("internal error in the player pump", abort=True)


__all__ = ["RtmpConnection", "RtmpCounters", "RtmpServer"]

"""One forwarding destination of one stream: connect, publish, pump, reconnect with backoff.

The sans-IO RtmpPublishSession speaks the protocol; this is the thin asyncio layer around it.
Packets come from an internal hub subscription on the stream's output track, so the
destination gets what players get (ROI-encoded when applied). A destination that is slow or
stops reading fills its socket; the pump then waits, the subscription's bounded queue
skips to a keyframe (counted in ``dropped_frames``), and the source and the other players
never wait. A destination that takes nothing for ``WRITE_STALL_SECONDS`` is dropped and
reconnected, as is one that closes or errs.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from app.hub import Stream, Subscription
from app.outputs.forward.target import Target

log = logging.getLogger("app.outputs.forward")

CONNECT_TIMEOUT = 10.0
PUBLISH_TIMEOUT = 10.0
WRITE_STALL_SECONDS = 20.0
# Small kernel and transport buffers: what sits in them is latency, and the hub's queue is
# where a slow destination's backlog belongs (it knows how to skip to a keyframe).
SEND_BUFFER_BYTES = 128 * 1024
WRITE_BUFFER_HIGH = 256 * 1024
WRITE_BUFFER_LOW = 64 * 1024


class ForwardError(Exception):
    pass


class PublishSession(Protocol):
    """The publishing side of RTMP, sans-IO (app/rtmp/client.py's RtmpPublishSession; the
    composition root hands it in, so outputs do not import ingest)."""

    @property
    def published(self) -> bool: ...

    @property
    def phase(self) -> str: ...

    failure: str | None

    def receive_data(self, data: bytes) -> list[Any]: ...

    def data_to_send(self) -> bytes: ...

    def send_media(self, kind: int, timestamp: int, payload: bytes) -> None: ...

    def unpublish(self) -> None: ...


# (app, tcUrl, stream name with query) -> a session that starts with its handshake queued.
SessionFactory = Callable[[str, str, str], PublishSession]


@dataclass
class ForwardStatus:
    url: str  # redacted: no stream key
    state: str = "starting"  # starting | connecting | publishing | backoff | ended | stopped
    connected: bool = False
    bytes: int = 0
    reconnects: int = 0
    dropped_frames: int = 0
    queued_packets: int = 0
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "state": self.state,
            "connected": self.connected,
            "bytes": self.bytes,
            "reconnects": self.reconnects,
            "dropped_frames": self.dropped_frames,
            "queued_packets": self.queued_packets,
            "last_error": self.last_error,
        }


class Forwarder:
    def __init__(
        self,
        target: Target,
        stream: Stream,
        *,
        backoff_initial: float,
        backoff_max: float,
        tls_context: ssl.SSLContext | None,
        new_session: SessionFactory,
    ) -> None:
        self.new_session = new_session
        self.target = target
        self.stream = stream
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.tls_context = tls_context
        self.status = ForwardStatus(url=target.redacted)
        self._subscription: Subscription | None = None
        self._dropped_before = 0
        self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def done(self) -> bool:
        return self._task.done()

    def refresh(self) -> ForwardStatus:
        sub = self._subscription
        if sub is not None:
            self.status.dropped_frames = self._dropped_before + sub.dropped_frames
            self.status.queued_packets = sub.queued
        return self.status

    async def stop(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self.status.state = "stopped"
        self.status.connected = False

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                if await self._publish_once():
                    self.status.state = "ended"
                    return  # the stream ended; a new publisher gets a new forwarder
                attempt = 0
            except (OSError, ForwardError, TimeoutError, ssl.SSLError) as exc:
                reason = str(exc) or type(exc).__name__
                self.status.last_error = reason
                log.warning("forward %s -> %s: %s", self.stream.key, self.target.redacted, reason)
            finally:
                self.status.connected = False
            if self.stream.output.ended:
                self.status.state = "ended"
                return
            delay = min(self.backoff_max, self.backoff_initial * 2**attempt)
            attempt += 1
            self.status.state = "backoff"
            await asyncio.sleep(delay)
            self.status.reconnects += 1

    async def _publish_once(self) -> bool:
        """One connection; True when the stream ended (clean), False when published and lost."""
        target = self.target
        self.status.state = "connecting"
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                target.host,
                target.port,
                ssl=self.tls_context if target.tls else None,
                server_hostname=target.host if target.tls else None,
            ),
            CONNECT_TIMEOUT,
        )
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        writer.transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH, low=WRITE_BUFFER_LOW)
        session = self.new_session(target.app, target.tc_url, target.name)
        published: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        reading = asyncio.get_running_loop().create_task(
            self._read(reader, writer, session, published, lost)
        )
        try:
            writer.write(session.data_to_send())
            waiting: set[asyncio.Future[Any]] = {published, lost}
            done, _ = await asyncio.wait(
                waiting, timeout=PUBLISH_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
            )
            if lost in done:
                raise ForwardError(lost.result())
            if published not in done:
                raise ForwardError(
                    f"not published within {PUBLISH_TIMEOUT:.0f} s ({session.phase})"
                )
            self.status.state = "publishing"
            self.status.connected = True
            self.status.last_error = None
            log.info("forward %s -> %s: publishing", self.stream.key, target.redacted)
            return await self._pump(session, writer, lost)
        finally:
            reading.cancel()
            writer.transport.abort()

    async def _read(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        session: PublishSession,
        published: asyncio.Future[None],
        lost: asyncio.Future[str],
    ) -> None:
        reason = "destination closed the connection"
        try:
            while session.failure is None:
                data = await reader.read(65536)
                session.receive_data(data)
                if session.published and not published.done():
                    published.set_result(None)
                out = session.data_to_send()
                if out:
                    writer.write(out)
            reason = session.failure
        except (OSError, ssl.SSLError) as exc:
            reason = f"connection lost: {exc}"
        finally:
            if not lost.done():
                lost.set_result(reason)
            if self._subscription is not None:
                self._subscription.end()  # wakes the pump

    async def _pump(
        self, session: PublishSession, writer: asyncio.StreamWriter, lost: asyncio.Future[str]
    ) -> bool:
        sub = self.stream.output.subscribe(f"forward {self.target.redacted}", internal=True)
        self._subscription = sub
        transport = writer.transport
        try:
            while True:
                packet = await sub.get()
                if lost.done():
                    raise ForwardError(lost.result())
                if packet is None:
                    session.unpublish()
                    writer.write(session.data_to_send())
                    await asyncio.wait_for(writer.drain(), 2.0)
                    return True
                while packet is not None:
                    session.send_media(int(packet.kind), packet.timestamp, packet.payload)
                    packet = sub.get_nowait()
                data = session.data_to_send()
                writer.write(data)
                self.status.bytes += len(data)
                if transport.get_write_buffer_size() > WRITE_BUFFER_HIGH:
                    started = time.monotonic()
                    try:
                        await asyncio.wait_for(writer.drain(), WRITE_STALL_SECONDS)
                    except TimeoutError:
                        waited = time.monotonic() - started
                        raise ForwardError(f"destination took nothing for {waited:.0f} s") from None
        finally:
            self._dropped_before += sub.dropped_frames
            self._subscription = None
            sub.close()

"""Edge pulls: a stream held by another node, played here, is pulled once from its origin
over RTMP and published into the local hub, whatever the number or kind of its players.

The origin's output already carries each frame's regions in the ROI SEI; the pull reads them
back into ``MediaPacket.roi``, so the ROI WebSocket feed and the WHEP data channel work here
as at the origin, and the ROI stage never transcodes a pulled stream (``is_pulled``). A pull
ends when the origin ends the stream or goes away (players then get a clean end of stream),
or a grace period after its last player left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from urllib.parse import urlencode, urlsplit

from app.auth import sign_push
from app.cluster.directory import DirectoryEntry
from app.cluster.node import ClusterNode
from app.hub import Hub, Stream, StreamBusyError, StreamKey
from app.media.flv import FlvError, TagType, VideoPacketType, parse_video_tag
from app.media.nal import NalError, parse_decoder_config
from app.media.packet import MediaPacket
from app.media.sei import extract_roi_sei
from app.rtmp.play_client import PlayEnded, PlayStarted, RtmpPlaySession
from app.rtmp.session import MediaReceived, MetadataReceived
from app.rtmp.url import RELAY_PULL_PARAM

log = logging.getLogger("app.cluster")

_CODECS = {"avc1": "h264", "hvc1": "hevc"}
# How a pulled copy names its publisher (the streams API's ``remote``).
PULL_REMOTE = "edge pull from "


class _RoiReader:
    """Reads the ROI SEI of each coded frame, knowing the NAL length size from the header."""

    def __init__(self) -> None:
        self.codec: str | None = None
        self.length_size = 4

    def packet(self, kind: int, timestamp: int, payload: bytes) -> MediaPacket:
        packet = MediaPacket.from_tag(kind, timestamp, payload)
        if packet.kind is not TagType.VIDEO:
            return packet
        tag = parse_video_tag(payload)
        codec = _CODECS.get(tag.codec)
        if packet.sequence_header:
            self.codec = codec
            if codec is not None:
                with contextlib.suppress(NalError, ValueError, IndexError):
                    config = parse_decoder_config(payload[tag.data_offset :], codec)  # type: ignore[arg-type]
                    self.length_size = config.length_size
            return packet
        if codec is None or tag.packet_type is not VideoPacketType.CODED_FRAMES:
            return packet
        with contextlib.suppress(NalError, ValueError, IndexError):
            roi = extract_roi_sei(payload[tag.data_offset :], codec, self.length_size)  # type: ignore[arg-type]
            if roi is not None:
                return MediaPacket(
                    packet.kind,
                    timestamp,
                    payload,
                    keyframe=packet.keyframe,
                    sequence_header=False,
                    roi=roi,
                )
        return packet


class _Pull:
    def __init__(self, puller: EdgePuller, key: StreamKey, origin: DirectoryEntry) -> None:
        self.puller = puller
        self.key = key
        self.origin = origin
        self.started: asyncio.Future[Stream | None] = asyncio.get_running_loop().create_future()
        self.stream: Stream | None = None
        # Asked for now: the grace runs from here until the first player attaches.
        self.wanted_at = time.monotonic()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            await self._pull()
        except (TimeoutError, OSError, FlvError) as exc:
            log.warning(
                "edge pull of %s from %s ended: %s", self.key, self.origin.node.node_id, exc
            )
        except Exception:
            log.exception("edge pull of %s from %s failed", self.key, self.origin.node.node_id)
        finally:
            if not self.started.done():
                self.started.set_result(None)
            if self.stream is not None:
                self.stream.close()
            self.puller.pull_ended(self)

    async def _pull(self) -> None:
        target = urlsplit(self.origin.node.rtmp_url)
        host, port = target.hostname or "127.0.0.1", target.port or 1935
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        tc_url = f"rtmp://{host}:{port}/{self.key.app}"
        query = {RELAY_PULL_PARAM: self.puller.node.me.node_id}
        play_key = self.puller.node.settings.play_key
        if play_key:
            # The origin checks plays as it checks any player's: the edge signs its pull with
            # the cluster's (shared) play key, valid for a minute.
            query.update(sign_push(play_key, self.key.name, time.time() + 60))
        name = f"{self.key.name}?{urlencode(query)}"
        session = RtmpPlaySession(self.key.app, tc_url, name)
        rois = _RoiReader()
        grace = self.puller.node.settings.edge_grace_seconds
        idle_since: float | None = None
        try:
            writer.write(session.data_to_send())
            while not session.ended:
                try:
                    data = await asyncio.wait_for(reader.read(256 * 1024), 1.0)
                except TimeoutError:
                    data = None
                if data is not None:
                    for event in session.receive_data(data):
                        match event:
                            case PlayStarted():
                                self._open()
                            case MediaReceived(_sid, kind, timestamp, payload) if self.stream:
                                self.stream.source.push(rois.packet(kind, timestamp, payload))
                            case MetadataReceived(_sid, metadata, tag_payload, timestamp) if (
                                self.stream
                            ):
                                self.stream.set_metadata(metadata)
                                self.stream.source.push(
                                    MediaPacket(TagType.DATA, timestamp, tag_payload)
                                )
                            case PlayEnded(reason, refused):
                                level = logging.WARNING if refused else logging.INFO
                                log.log(level, "edge pull of %s: %s", self.key, reason)
                    out = session.data_to_send()
                    if out:
                        writer.write(out)
                        await writer.drain()
                if self.stream is None:
                    continue
                if self.stream.closed:
                    return  # kicked or closed here
                if self.stream.output.players or time.monotonic() - self.wanted_at < grace:
                    idle_since = None
                elif idle_since is None:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since >= grace:
                    log.info("edge pull of %s: no players for %.0f s, ending", self.key, grace)
                    session.close()
                    writer.write(session.data_to_send())
                    return
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _open(self) -> None:
        self.puller.node.pulled.add(self.key)
        try:
            self.stream = self.puller.hub.open_publisher(
                self.key, {}, PULL_REMOTE + self.origin.node.node_id
            )
        except StreamBusyError:
            self.puller.node.pulled.discard(self.key)
            raise OSError(f"{self.key} was published here meanwhile") from None
        if not self.started.done():
            self.started.set_result(self.stream)
        log.info("edge pull of %s from %s started", self.key, self.origin.node.node_id)


class EdgePuller:
    """One pull per stream key; players wait for it to start."""

    def __init__(self, hub: Hub, node: ClusterNode, start_timeout: float = 5.0) -> None:
        self.hub = hub
        self.node = node
        self.start_timeout = start_timeout
        self._pulls: dict[StreamKey, _Pull] = {}
        self.pulls_started = 0

    def is_pulled(self, stream: Stream) -> bool:
        pull = self._pulls.get(stream.key)
        return pull is not None and pull.stream is stream

    @property
    def active(self) -> int:
        return len(self._pulls)

    async def stream(self, key: StreamKey) -> Stream | None:
        """The local stream for ``key``, pulling it from its origin if another node holds it."""
        local = self.hub.get(key)
        if local is not None:
            return local
        pull = self._pulls.get(key)
        if pull is None:
            origin = await self.node.holder(key)
            if origin is None:
                return None
            local = self.hub.get(key)
            if local is not None:
                return local
            pull = self._pulls.get(key)
            if pull is None:
                pull = self._pulls[key] = _Pull(self, key, origin)
                self.pulls_started += 1
        try:
            return await asyncio.wait_for(asyncio.shield(pull.started), self.start_timeout)
        except TimeoutError:
            return None

    def pull_ended(self, pull: _Pull) -> None:
        if self._pulls.get(pull.key) is pull:
            del self._pulls[pull.key]
        self.node.pulled.discard(pull.key)

    async def close(self) -> None:
        for pull in tuple(self._pulls.values()):
            pull.task.cancel()
        for pull in tuple(self._pulls.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await pull.task


__all__ = ["PULL_REMOTE", "EdgePuller"]

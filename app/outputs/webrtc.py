"""WebRTC playback (WHEP) through aiortc: the relay's H.264 passed through, regions alongside.

* Video is not re-encoded: :class:`RelayVideoTrack` hands aiortc ``av.Packet`` objects holding
  Annex-B access units (parameter sets before keyframes, SEI kept), which aiortc's H.264
  packetizer sends as they are. Only H.264 goes this way (what browsers decode in WebRTC);
  a stream without B-frames is needed, which the ROI transcoder's output is.
* Audio is transcoded from AAC to Opus (WebRTC has no AAC): decoded and resampled here into
  20 ms frames, encoded by aiortc's Opus encoder. Only when the offer asks for audio.
* Regions: the offer may open a data channel (any label; the player uses ``roi``); each
  video frame's ROI JSON (``MediaPacket.roi``, the same text as the SEI and the WebSocket
  feed, whose ``pts`` is the frame's presentation time in ms) is sent on it just before the
  frame's RTP packets. Frame and JSON are matched by that timestamp: a receiver maps RTP
  timestamps to ``pts`` with one constant offset (RTP = offset + 90 * pts, see the player).
* Joining: the hub's cached GOP is sent at once with timestamps 1 ms apart, so the receiver
  decodes up to the live frame at once instead of playing the cached past in real time
  (which would add the GOP's age to the delay for the whole session).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import av
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpCodecCapability,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from app.hub import Hub, Stream, StreamKey, Subscription
from app.media.flv import FlvError, TagType, VideoPacketType, parse_audio_tag, parse_video_tag
from app.media.nal import DecoderConfig
from app.media.packet import MediaPacket
from app.outputs.annexb import VideoConfigError, access_unit, frame_nal_units, parse_video_config

log = logging.getLogger("app.outputs.webrtc")

VIDEO_CLOCK = 90_000
_VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
# Cached frames are replayed this far apart (in 90 kHz ticks): distinct RTP timestamps, shown
# as fast as the receiver decodes.
CATCH_UP_STEP = 90
OPUS_RATE = 48_000
OPUS_FRAME = 960  # 20 ms


class WhepError(Exception):
    """A WHEP request that cannot be served; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


# What an offer may hold before aiortc sees it: aiortc takes text it then cannot tear down
# (a NUL in an attribute, a 5,000-digit mid: pc.close() raises half-way and leaves the ICE
# sockets open), and each media section costs the server transports and sockets.
MAX_MEDIA_SECTIONS = 8
_MID = re.compile(r"[A-Za-z0-9_.\-]{1,32}")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def check_offer(sdp: str) -> None:
    """Raises WhepError (400) for an offer this server will not hand to aiortc."""
    if not sdp.lstrip().startswith("v=0"):
        raise WhepError(400, "body: not an SDP offer (no v=0 line)")
    bad = _CONTROL.search(sdp)
    if bad is not None:
        raise WhepError(
            400, f"body: the SDP offer holds a control character ({ord(bad.group()):#04x})"
        )
    lines = sdp.splitlines()
    sections = sum(1 for line in lines if line.startswith("m="))
    if sections == 0 or not any(line.startswith("m=video") for line in lines):
        raise WhepError(400, "the SDP offer has no video section (m=video)")
    if sections > MAX_MEDIA_SECTIONS:
        raise WhepError(
            400, f"the SDP offer has {sections} media sections (at most {MAX_MEDIA_SECTIONS})"
        )
    for line in lines:
        if line.startswith("a=mid:") and not _MID.fullmatch(line[6:]):
            raise WhepError(400, "the SDP offer has a mid that is not 1-32 letters, digits or -_.")


async def _close_peer(pc: RTCPeerConnection) -> None:
    """``pc.close()``, and when aiortc raises half-way, the transports it left open."""
    try:
        await pc.close()
    except Exception as exc:
        log.info("WHEP: peer connection did not close cleanly (%s); stopping its transports", exc)
        transports = [t.receiver.transport for t in pc.getTransceivers()]
        if pc.sctp is not None:
            transports.append(pc.sctp.transport)
        for dtls in transports:
            with contextlib.suppress(Exception):
                await dtls.stop()
            with contextlib.suppress(Exception):
                await dtls.transport.stop()
        pc.remove_all_listeners()


class RelayVideoTrack(MediaStreamTrack):
    """A stream's output video as pre-encoded H.264 packets for aiortc's sender."""

    kind = "video"

    def __init__(
        self,
        stream: Stream,
        on_frame: Callable[[MediaPacket], None],
        on_end: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.stream = stream
        self.on_frame = on_frame
        self.on_end = on_end
        self.frames_sent = 0
        self._sub: Subscription | None = None
        self._config: DecoderConfig | None = None
        self._catching_up = True
        self._next_catch_up: int | None = None
        self._shift = 0
        self._last_out: int | None = None

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._sub is None:
            self._sub = self.stream.output.subscribe("whep-video")
        while True:
            packet = await self._sub.get()
            if packet is None:
                self.stop()
                if self.on_end is not None:
                    self.on_end()
                raise MediaStreamError
            if packet.kind is not TagType.VIDEO:
                continue
            try:
                out = self._convert(packet)
            except (FlvError, ValueError) as exc:
                log.warning("WHEP: dropped a video tag of %s: %s", self.stream.key, exc)
                continue
            if out is not None:
                return out

    def _convert(self, packet: MediaPacket) -> av.Packet | None:
        if packet.sequence_header:
            self._config = None  # frames after a header the receiver cannot take are dropped
            config = parse_video_config(packet.payload)
            if config.codec != "h264":
                raise VideoConfigError("WebRTC passthrough needs H.264")
            self._config = config
            return None
        tag = parse_video_tag(packet.payload)
        if self._config is None or tag.packet_type is not VideoPacketType.CODED_FRAMES:
            return None
        if self.frames_sent == 0 and not packet.keyframe:
            return None
        unit = access_unit(
            self._config, frame_nal_units(self._config, packet.payload), packet.keyframe
        )
        pts = (packet.timestamp + tag.composition_time) * (VIDEO_CLOCK // 1000)
        out_ts = self._output_timestamp(pts)
        result = av.Packet(unit)
        result.pts = result.dts = out_ts
        result.time_base = _VIDEO_TIME_BASE
        if packet.roi is not None:
            self.on_frame(packet)
        self.frames_sent += 1
        return result

    def _output_timestamp(self, pts: int) -> int:
        assert self._sub is not None
        if self._catching_up:
            if self._next_catch_up is None:
                self._next_catch_up = pts
            out = self._next_catch_up
            self._next_catch_up += CATCH_UP_STEP
            self._shift = pts - out
            if self._sub.queued == 0:
                self._catching_up = False  # at the live edge: real spacing from here on
        else:
            out = pts - self._shift
        if self._last_out is not None and out <= self._last_out:
            # A step back in the source (or a reordered frame) must not reuse a timestamp:
            # receivers take equal RTP timestamps for parts of one frame.
            self._shift -= self._last_out + 1 - out
            out = self._last_out + 1
        self._last_out = out
        return out

    def stop(self) -> None:
        super().stop()
        if self._sub is not None:
            self._sub.close()


class RelayAudioTrack(MediaStreamTrack):
    """A stream's output AAC audio decoded into 20 ms stereo s16 frames for aiortc's Opus."""

    kind = "audio"

    def __init__(self, stream: Stream) -> None:
        super().__init__()
        self.stream = stream
        self._sub: Subscription | None = None
        self._decoder: av.AudioCodecContext | None = None
        self._resampler = av.AudioResampler(
            format="s16", layout="stereo", rate=OPUS_RATE, frame_size=OPUS_FRAME
        )
        self._ready: deque[av.AudioFrame] = deque()
        self._warned = False

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._sub is None:
            # One player, already counted by its video subscription.
            self._sub = self.stream.output.subscribe("whep-audio", internal=True)
            # Cached audio is the past; only the video catches up from the cached GOP.
            while (early := self._sub.get_nowait()) is not None:
                if early.sequence_header and early.kind is TagType.AUDIO:
                    self._open_decoder(early)
        while not self._ready:
            packet = await self._sub.get()
            if packet is None:
                self.stop()
                raise MediaStreamError
            if packet.kind is TagType.AUDIO:
                self._decode(packet)
        return self._ready.popleft()

    def _open_decoder(self, header: MediaPacket) -> None:
        tag = parse_audio_tag(header.payload)
        if tag.codec != "aac":
            if not self._warned:
                log.warning("WHEP: %s audio is %s, only AAC is sent", self.stream.key, tag.codec)
                self._warned = True
            self._decoder = None
            return
        decoder = av.CodecContext.create("aac", "r")
        assert isinstance(decoder, av.AudioCodecContext)
        decoder.extradata = header.payload[tag.data_offset :]
        self._decoder = decoder

    def _decode(self, packet: MediaPacket) -> None:
        if packet.sequence_header:
            self._open_decoder(packet)
            return
        if self._decoder is None:
            return
        tag = parse_audio_tag(packet.payload)
        raw = av.Packet(packet.payload[tag.data_offset :])
        raw.pts = packet.timestamp
        raw.time_base = fractions.Fraction(1, 1000)
        try:
            for frame in self._decoder.decode(raw):
                self._ready.extend(self._resampler.resample(frame))
        except av.FFmpegError as exc:
            log.warning("WHEP: undecodable AAC frame on %s: %s", self.stream.key, exc)

    def stop(self) -> None:
        super().stop()
        if self._sub is not None:
            self._sub.close()


@dataclass
class WhepSession:
    id: str
    key: StreamKey
    pc: RTCPeerConnection
    video: RelayVideoTrack | None = None
    audio: RelayAudioTrack | None = None
    created_at: float = field(default_factory=time.time)
    channels: list[RTCDataChannel] = field(default_factory=list)
    roi_messages: int = 0
    watchdog: asyncio.Task[None] | None = None
    # The player's address (seats are capped per address) and whether ICE/DTLS completed:
    # until then the session is a pending offer.
    client: str = ""
    connected: bool = False
    # The last frame's regions, for a channel that opens after the video has started: the
    # regions of a frame stay in force until the next frame's (docs/roi-rules.md), so the new
    # channel starts from them instead of from nothing.
    last_roi: str | None = None

    def send_roi(self, packet: MediaPacket) -> None:
        assert packet.roi is not None
        self.last_roi = packet.roi
        for channel in self.channels:
            if channel.readyState == "open":
                channel.send(packet.roi)
                self.roi_messages += 1

    def add_channel(self, channel: RTCDataChannel) -> None:
        self.channels.append(channel)
        if self.last_roi is not None and channel.readyState == "open":
            channel.send(self.last_roi)
            self.roi_messages += 1


def _h264_only() -> list[RTCRtpCodecCapability]:
    codecs = RTCRtpSender.getCapabilities("video").codecs
    return [c for c in codecs if c.mimeType.lower() in ("video/h264", "video/rtx")]


class WhepService:
    """WHEP sessions of a hub: one aiortc peer connection per player."""

    def __init__(
        self,
        hub: Hub,
        max_sessions: int = 64,
        ice_servers: list[str] | None = None,
        connect_timeout: float = 10.0,
        max_pending_per_client: int = 4,
        max_sessions_per_client: int = 16,
    ) -> None:
        self.hub = hub
        self.max_sessions = max_sessions
        self.connect_timeout = connect_timeout
        self.max_pending_per_client = max_pending_per_client
        self.max_sessions_per_client = max_sessions_per_client
        self._closing: set[asyncio.Task[bool]] = set()
        # No STUN by default: aiortc would otherwise ask Google's STUN server, which a
        # self-hosted relay on a LAN neither needs nor can always reach.
        self.ice_servers = [RTCIceServer(url) for url in ice_servers or []]
        self.sessions: dict[str, WhepSession] = {}

    def _check_seats(self, client: str) -> None:
        """Raises WhepError unless ``client`` may open one more session."""
        mine = [s for s in self.sessions.values() if s.client == client]
        pending = sum(1 for s in mine if not s.connected)
        if pending >= self.max_pending_per_client:
            raise WhepError(
                429,
                f"{pending} WebRTC offers from {client} have not connected yet (limit "
                f"{self.max_pending_per_client}; an offer that does not connect within "
                f"{self.connect_timeout:g} s is dropped)",
                retry_after=self.connect_timeout,
            )
        if len(mine) >= self.max_sessions_per_client:
            raise WhepError(
                429, f"too many WebRTC players from {client} (limit {self.max_sessions_per_client})"
            )
        if len(self.sessions) >= self.max_sessions:
            raise WhepError(
                503,
                f"too many WebRTC players (limit {self.max_sessions})",
                retry_after=self.connect_timeout,
            )

    async def create(
        self, key: StreamKey, offer_sdp: str, client: str = ""
    ) -> tuple[WhepSession, str]:
        """Answers an SDP offer from address ``client`` for the live stream ``key``; raises
        WhepError."""
        stream = self.hub.get(key)
        if stream is None:
            raise WhepError(404, f"stream {key} is not live")
        self._check_seats(client)
        header = stream.output.video_header
        if header is not None:
            codec = parse_video_tag(header.payload).codec
            if codec != "avc1":
                raise WhepError(
                    422, f"stream {key} is {codec} video; WebRTC playback passes H.264 through"
                )
        check_offer(offer_sdp)
        session_id = secrets.token_urlsafe(12)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=self.ice_servers))
        session = WhepSession(session_id, key, pc, client=client)
        session.video = RelayVideoTrack(stream, session.send_roi, self._closer(session_id))
        pc.addTransceiver(session.video, direction="sendonly").setCodecPreferences(_h264_only())
        if "m=audio" in offer_sdp and stream.output.audio_header is not None:
            session.audio = RelayAudioTrack(stream)
            pc.addTransceiver(session.audio, direction="sendonly")

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            session.add_channel(channel)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState == "connected":
                session.connected = True
            elif pc.connectionState in ("failed", "closed"):
                await self.delete(session_id)

        # The seat is taken before answering: offers arriving while this one is answered see it.
        self.sessions[session_id] = session
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # aiortc raises several types for offers it cannot take
            await self.delete(session_id)
            raise WhepError(400, f"cannot answer this SDP offer: {exc}") from exc
        session.watchdog = asyncio.get_running_loop().create_task(self._watch(session))
        log.info("WHEP session %s on %s for %s", session_id, key, client or "?")
        return session, pc.localDescription.sdp

    def _closer(self, session_id: str) -> Callable[[], None]:
        def close_later() -> None:
            task = asyncio.get_running_loop().create_task(self.delete(session_id))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

        return close_later

    async def _watch(self, session: WhepSession) -> None:
        """Drops a session whose player never connects (an offer sent and then abandoned)."""
        await asyncio.sleep(self.connect_timeout)
        if session.pc.connectionState != "connected":
            log.info("WHEP session %s never connected", session.id)
            await self.delete(session.id)

    async def delete(self, session_id: str) -> bool:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        if session.watchdog is not None and session.watchdog is not asyncio.current_task():
            session.watchdog.cancel()
        if session.video is not None:
            session.video.stop()
        if session.audio is not None:
            session.audio.stop()
        await _close_peer(session.pc)
        log.info("WHEP session %s on %s closed", session_id, session.key)
        return True

    async def close(self) -> None:
        for session_id in list(self.sessions):
            await self.delete(session_id)

"""A real WHEP player: aiortc peer connection, offer POSTed over HTTP, frames and region
messages collected with their arrival times."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import av
import httpx
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from app.media.sei import roi_json_from_frame


@dataclass
class ReceivedFrame:
    arrived: float  # time.time() when decoded
    rtp_pts: int  # 90 kHz, as the receiver numbers it
    sei_roi: str | None
    image: av.VideoFrame | None = None


@dataclass
class WhepPlayer:
    url: str
    keep_images: bool = False
    audio: bool = True
    frames: list[ReceivedFrame] = field(default_factory=list)
    audio_frames: int = 0
    messages: list[tuple[float, str]] = field(default_factory=list)
    location: str | None = None
    status: int | None = None
    answer: str = ""
    _pc: RTCPeerConnection | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, http: httpx.AsyncClient) -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._pc = pc
        pc.addTransceiver("video", direction="recvonly")
        if self.audio:
            pc.addTransceiver("audio", direction="recvonly")
        channel = pc.createDataChannel("roi", ordered=False, maxRetransmits=0)
        channel.on("message", lambda m: self.messages.append((time.time(), m)))
        pc.on("track", self._on_track)
        await pc.setLocalDescription(await pc.createOffer())
        reply = await http.post(
            self.url, content=pc.localDescription.sdp, headers={"content-type": "application/sdp"}
        )
        self.status = reply.status_code
        if reply.status_code != 201:
            raise AssertionError(f"WHEP answered {reply.status_code}: {reply.text}")
        self.location = reply.headers["location"]
        self.answer = reply.text
        await pc.setRemoteDescription(RTCSessionDescription(reply.text, "answer"))

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.ensure_future(self._read(track)))

    async def _read(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    assert isinstance(frame, av.VideoFrame)
                    self.frames.append(
                        ReceivedFrame(
                            time.time(),
                            int(frame.pts),
                            roi_json_from_frame(frame),
                            frame if self.keep_images else None,
                        )
                    )
                else:
                    self.audio_frames += 1
        except MediaStreamError:
            self._ended.set()

    async def wait_ended(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), timeout)
        return self._ended.is_set()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._pc is not None:
            await self._pc.close()

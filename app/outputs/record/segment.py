"""One recording segment on disk: the stream's packets remuxed (no re-encode) into a
fragmented MP4 (or an FLV file), plus its ROI sidecar.

Blocking file I/O: runs in the recording thread, never on the event loop.

Fragmented MP4 (``frag_keyframe+empty_moov+default_base_moof``, plus a fragment at least
every second) has its sample tables in each fragment rather than in one index written at the
end, so a file cut short (a crash, ``kill -9``, a full disk) plays up to its last complete
fragment. Each packet is flushed to the OS as it is muxed, so a dead process loses nothing
the kernel already has.

The sidecar (``<segment>.roi.jsonl``) is JSON lines, one per video frame in presentation
order of arrival: ``{"t": ms, ...the frame's ROI document}``, ``t`` being the frame's
presentation time from the start of the segment, i.e. the ``<video>`` element's
``currentTime * 1000`` when that frame is shown. A frame without ROI metadata has
``"regions": []``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import av

from app.media.flv import (
    TagType,
    VideoPacketType,
    flv_tag,
    parse_audio_tag,
    parse_video_tag,
)
from app.media.packet import MediaPacket

MS = Fraction(1, 1000)
_VIDEO_CODECS = {"avc1": "h264", "hvc1": "hevc"}
FLV_FILE_HEADER = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"


class SegmentError(Exception):
    """The stream cannot be written to this container (codec not supported)."""


@dataclass(frozen=True, slots=True)
class SegmentSummary:
    path: Path
    sidecar: Path
    duration_ms: int
    video_frames: int
    audio_frames: int
    bytes: int


class Segment:
    """Starts at a video keyframe (written first); timestamps start at 0 in every segment."""

    def __init__(
        self,
        path: Path,
        keyframe: MediaPacket,
        video_header: MediaPacket,
        audio_header: MediaPacket | None,
        metadata: MediaPacket | None,
    ) -> None:
        self.path = path
        self.sidecar = path.with_suffix(".roi.jsonl")
        self.base_ms = keyframe.timestamp
        self.video_frames = 0
        self.audio_frames = 0
        self.last_ms = 0
        # Line-buffered: a crash loses no region line the MP4 still has a frame for.
        self._roi_file: IO[str] = open(self.sidecar, "w", encoding="utf-8", buffering=1)
        self._flv: IO[bytes] | None = None
        self._mp4: Any = None
        self._video: Any = None
        self._audio: Any = None
        self._last_dts: dict[int, int] = {}
        try:
            if path.suffix == ".flv":
                self._open_flv(video_header, audio_header, metadata)
            else:
                self._open_mp4(video_header, audio_header, keyframe)
        except BaseException:
            self._roi_file.close()
            raise
        self.write(keyframe)

    # ------------------------------------------------------------------ opening

    def _open_flv(
        self, video: MediaPacket, audio: MediaPacket | None, metadata: MediaPacket | None
    ) -> None:
        # Unbuffered: each tag reaches the kernel as it is written, so a crash loses none.
        self._flv = open(self.path, "wb", buffering=0)
        self._flv.write(FLV_FILE_HEADER)
        for header in (metadata, video, audio):
            if header is not None:
                self._flv.write(flv_tag(header.kind, 0, header.payload))

    def _open_mp4(self, video: MediaPacket, audio: MediaPacket | None, first: MediaPacket) -> None:
        tag = parse_video_tag(video.payload)
        if tag.codec not in _VIDEO_CODECS:
            raise SegmentError(f"video codec {tag.codec} cannot be recorded to MP4")
        # FFmpeg's own FLV demuxer reads the sequence headers into codec parameters, so the
        # MP4 streams are described exactly as a remux of the live stream would be.
        probe = bytearray(FLV_FILE_HEADER)
        for packet in (video, audio, first):
            if packet is not None:
                probe += flv_tag(packet.kind, 0, packet.payload)
        try:
            source = av.open(io.BytesIO(bytes(probe)), format="flv")
        except av.FFmpegError as exc:
            raise SegmentError(f"unreadable sequence headers: {exc}") from exc
        container = av.open(
            str(self.path),
            "w",
            format="mp4",
            options={
                "movflags": "frag_keyframe+empty_moov+default_base_moof",
                "frag_duration": "1000000",
                "flush_packets": "1",
            },
        )
        try:
            for stream in source.streams:
                if stream.type == "video" and self._video is None:
                    self._video = container.add_stream_from_template(stream)
                    self._video.time_base = MS
                elif stream.type == "audio" and self._audio is None:
                    if audio is None or parse_audio_tag(audio.payload).codec != "aac":
                        continue  # MP4 here carries AAC only; other audio is left out
                    self._audio = container.add_stream_from_template(stream)
                    self._audio.time_base = MS
            if self._video is None:
                raise SegmentError("FFmpeg found no video stream in the sequence header")
            if tag.codec == "hvc1":
                self._video.codec_tag = "hvc1"
            container.start_encoding()
        except BaseException:
            container.close()
            raise
        finally:
            source.close()
        self._mp4 = container

    # ------------------------------------------------------------------ writing

    def write(self, packet: MediaPacket) -> None:
        """Writes one coded frame (headers and metadata were taken at open)."""
        rel = packet.timestamp - self.base_ms
        if rel < 0:
            return  # audio from just before the keyframe the segment starts on
        if packet.kind is TagType.VIDEO:
            tag = parse_video_tag(packet.payload)
            if tag.packet_type is not VideoPacketType.CODED_FRAMES:
                return  # an end-of-sequence marker: the file's end says as much
            pts = rel + tag.composition_time
            self._write_roi(pts, packet.roi)
            self.video_frames += 1
            if self._flv is not None:
                self._flv.write(flv_tag(packet.kind, rel, packet.payload))
            else:
                self._mux(self._video, packet.payload[tag.data_offset :], rel, pts, packet.keyframe)
        elif packet.kind is TagType.AUDIO:
            if self._flv is not None:
                self._flv.write(flv_tag(packet.kind, rel, packet.payload))
            elif self._audio is not None:
                atag = parse_audio_tag(packet.payload)
                self._mux(self._audio, packet.payload[atag.data_offset :], rel, rel, False)
            else:
                return
            self.audio_frames += 1
        self.last_ms = max(self.last_ms, rel)

    def _mux(self, stream: Any, data: bytes, dts: int, pts: int, keyframe: bool) -> None:
        # The muxer wants strictly increasing DTS; FLV's millisecond clock can repeat one
        # (a B-frame delay clamped at 0, an encoder's rounding). One millisecond on keeps order.
        last = self._last_dts.get(stream.index)
        if last is not None and dts <= last:
            dts = last + 1
            pts = max(pts, dts)
        self._last_dts[stream.index] = dts
        out = av.Packet(data)
        out.stream = stream
        out.time_base = MS
        out.dts, out.pts = dts, pts
        out.is_keyframe = keyframe
        self._mp4.mux(out)

    def _write_roi(self, pts: int, document: str | None) -> None:
        line: dict[str, Any] = {"t": pts}
        if document:
            try:
                parsed = json.loads(document)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                line.update(parsed)
        line.setdefault("regions", [])
        self._roi_file.write(json.dumps(line, separators=(",", ":")) + "\n")

    def close(self) -> SegmentSummary:
        try:
            if self._mp4 is not None:
                self._mp4.close()
            if self._flv is not None:
                self._flv.close()
        finally:
            self._roi_file.close()
        return SegmentSummary(
            path=self.path,
            sidecar=self.sidecar,
            duration_ms=self.last_ms,
            video_frames=self.video_frames,
            audio_frames=self.audio_frames,
            bytes=self.path.stat().st_size if self.path.exists() else 0,
        )

    def abort(self) -> None:
        """Closes after a write failed (a full disk): whatever reached the file stays."""
        closers: list[Any] = [self._mp4, self._flv, self._roi_file]
        for handle in closers:
            if handle is None:
                continue
            try:
                handle.close()
            except (OSError, av.FFmpegError, ValueError):
                pass


__all__ = ["Segment", "SegmentError", "SegmentSummary"]

"""MPEG-2 transport stream writer for HLS segments, sans-IO (frames in, 188-byte packets out).

Only what HLS needs: one program, one video PID (H.264 or H.265 Annex-B) and one audio PID
(AAC in ADTS, or MP3), PAT/PMT at the start of every segment, PCR on the video PID, and
timestamps taken from the FLV timeline unchanged (milliseconds * 90), so a player reading a
segment sees the same presentation times, and the same SEI, as an HTTP-FLV player.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.media.nal import BitReader, NalError

TS_PACKET = 188
_TS_PAYLOAD = 184
_SYNC = 0x47

PAT_PID = 0x0000
PMT_PID = 0x1000
VIDEO_PID = 0x0100
AUDIO_PID = 0x0101

_VIDEO_STREAM_ID = 0xE0
_AUDIO_STREAM_ID = 0xC0

VIDEO_STREAM_TYPES = {"avc1": 0x1B, "hvc1": 0x24}
AUDIO_STREAM_TYPES = {"aac": 0x0F, "mp3": 0x03}

_TS_MASK = (1 << 33) - 1
# The PCR runs this far behind the decode times, so no decoder sees a frame as already late.
PCR_LEAD_90K = 9000


def _mpeg_crc32_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
        table.append(crc & 0xFFFFFFFF)
    return table


_CRC_TABLE = _mpeg_crc32_table()


def mpeg_crc32(data: bytes) -> int:
    """CRC-32/MPEG-2 (polynomial 0x04C11DB7, not reflected, no final XOR) of PSI sections."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[((crc >> 24) ^ byte) & 0xFF]
    return crc


def _timestamp_field(prefix: int, ts: int) -> bytes:
    ts &= _TS_MASK
    return bytes(
        [
            (prefix << 4) | ((ts >> 29) & 0x0E) | 1,
            (ts >> 22) & 0xFF,
            ((ts >> 14) & 0xFE) | 1,
            (ts >> 7) & 0xFF,
            ((ts << 1) & 0xFE) | 1,
        ]
    )


def pes_packet(stream_id: int, data: bytes, pts: int, dts: int | None, bounded: bool) -> bytes:
    """A PES packet; ``bounded`` False writes length 0 (allowed for video only)."""
    if dts is not None and (dts & _TS_MASK) != (pts & _TS_MASK):
        fields = _timestamp_field(3, pts) + _timestamp_field(1, dts)
        flags = 0xC0
    else:
        fields = _timestamp_field(2, pts)
        flags = 0x80
    header_ext = bytes([0x80, flags, len(fields)]) + fields
    length = len(header_ext) + len(data)
    if not bounded or length > 0xFFFF:
        if bounded:
            raise ValueError("audio PES larger than 64 KiB")
        length = 0
    return b"\x00\x00\x01" + bytes([stream_id]) + length.to_bytes(2, "big") + header_ext + data


def _pcr_field(pcr_90k: int) -> bytes:
    return (((pcr_90k & _TS_MASK) << 15) | (0x3F << 9)).to_bytes(6, "big")


class TsMuxer:
    """Writes frames of one stream as TS packets; continuity counters persist across segments."""

    def __init__(self) -> None:
        self.video_codec: str | None = None
        self.audio_codec: str | None = None
        self._pmt_version = 0
        self._cc: dict[int, int] = {}

    def set_streams(self, video_codec: str | None, audio_codec: str | None) -> None:
        """Declares the elementary streams; the next ``tables()`` announce them."""
        if video_codec is not None and video_codec not in VIDEO_STREAM_TYPES:
            raise ValueError(f"video codec {video_codec} cannot go in MPEG-TS here")
        if audio_codec is not None and audio_codec not in AUDIO_STREAM_TYPES:
            raise ValueError(f"audio codec {audio_codec} cannot go in MPEG-TS here")
        if (video_codec, audio_codec) != (self.video_codec, self.audio_codec):
            self._pmt_version = (self._pmt_version + 1) & 0x1F
        self.video_codec, self.audio_codec = video_codec, audio_codec

    @property
    def pcr_pid(self) -> int:
        return VIDEO_PID if self.video_codec is not None or self.audio_codec is None else AUDIO_PID

    def _next_cc(self, pid: int) -> int:
        cc = self._cc.get(pid, 15)
        cc = (cc + 1) & 0x0F
        self._cc[pid] = cc
        return cc

    def _psi_packet(self, pid: int, section: bytes) -> bytes:
        section += mpeg_crc32(section).to_bytes(4, "big")
        payload = b"\x00" + section  # pointer_field
        header = bytes([_SYNC, 0x40 | (pid >> 8), pid & 0xFF, 0x10 | self._next_cc(pid)])
        return header + payload + b"\xff" * (_TS_PAYLOAD - len(payload))

    def tables(self) -> bytes:
        """PAT and PMT, written first in every segment so each one can be played on its own."""
        pat_body = b"\x00\x01\xc1\x00\x00" + b"\x00\x01" + bytes([0xE0 | (PMT_PID >> 8)])
        pat_body += bytes([PMT_PID & 0xFF])
        pat = bytes([0x00, 0xB0, len(pat_body) + 4]) + pat_body
        streams = b""
        if self.video_codec is not None:
            streams += bytes([VIDEO_STREAM_TYPES[self.video_codec], 0xE0 | (VIDEO_PID >> 8)])
            streams += bytes([VIDEO_PID & 0xFF, 0xF0, 0x00])
        if self.audio_codec is not None:
            streams += bytes([AUDIO_STREAM_TYPES[self.audio_codec], 0xE0 | (AUDIO_PID >> 8)])
            streams += bytes([AUDIO_PID & 0xFF, 0xF0, 0x00])
        pcr = self.pcr_pid
        pmt_body = (
            b"\x00\x01"
            + bytes([0xC1 | (self._pmt_version << 1), 0x00, 0x00])
            + bytes([0xE0 | (pcr >> 8), pcr & 0xFF, 0xF0, 0x00])
            + streams
        )
        pmt = bytes([0x02, 0xB0, len(pmt_body) + 4]) + pmt_body
        return self._psi_packet(PAT_PID, pat) + self._psi_packet(PMT_PID, pmt)

    def _packetize(self, pid: int, pes: bytes, pcr: int | None, random_access: bool) -> bytes:
        out = bytearray()
        pos = 0
        total = len(pes)
        first = True
        while pos < total:
            fields: bytes | None = None  # adaptation field after its length byte
            if first and (pcr is not None or random_access):
                flags = (0x40 if random_access else 0) | (0x10 if pcr is not None else 0)
                fields = bytes([flags]) + (_pcr_field(pcr) if pcr is not None else b"")
            room = _TS_PAYLOAD - (0 if fields is None else 1 + len(fields))
            chunk = min(room, total - pos)
            stuffing = room - chunk
            if stuffing:
                if fields is None:
                    # One spare byte is an empty adaptation field (its length byte alone).
                    fields = b"" if stuffing == 1 else b"\x00" + b"\xff" * (stuffing - 2)
                else:
                    fields += b"\xff" * stuffing
            control = 0x30 if fields is not None else 0x10
            out += bytes(
                [
                    _SYNC,
                    (0x40 if first else 0) | (pid >> 8),
                    pid & 0xFF,
                    control | self._next_cc(pid),
                ]
            )
            if fields is not None:
                out.append(len(fields))
                out += fields
            out += pes[pos : pos + chunk]
            pos += chunk
            first = False
        return bytes(out)

    def video(self, access_unit: bytes, pts_90k: int, dts_90k: int, keyframe: bool) -> bytes:
        """One Annex-B access unit as a PES on the video PID, with a PCR."""
        pes = pes_packet(_VIDEO_STREAM_ID, access_unit, pts_90k, dts_90k, bounded=False)
        pcr = max(0, dts_90k - PCR_LEAD_90K) if self.pcr_pid == VIDEO_PID else None
        return self._packetize(VIDEO_PID, pes, pcr, keyframe)

    def audio(self, frame: bytes, pts_90k: int) -> bytes:
        """One audio frame (ADTS AAC or MP3) as a PES on the audio PID."""
        pes = pes_packet(_AUDIO_STREAM_ID, frame, pts_90k, None, bounded=True)
        pcr = max(0, pts_90k - PCR_LEAD_90K) if self.pcr_pid == AUDIO_PID else None
        return self._packetize(AUDIO_PID, pes, pcr, random_access=pcr is not None)


class AacConfigError(ValueError):
    """An AudioSpecificConfig this writer cannot express as ADTS."""


@dataclass(frozen=True, slots=True)
class AacConfig:
    object_type: int
    sampling_index: int
    channels: int

    @property
    def adts_profile(self) -> int:
        # HE-AAC (SBR, PS) is carried as its AAC-LC core in ADTS; decoders find the SBR part.
        if self.object_type in (5, 29):
            return 1
        return self.object_type - 1


_SAMPLING_RATES: tuple[int, ...] = (
    *(96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025),
    *(8000, 7350),
)


def parse_audio_specific_config(asc: bytes) -> AacConfig:
    """The parts of an AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1) that ADTS repeats."""
    bits = BitReader(asc)
    try:
        object_type = bits.bits(5)
        if object_type == 31:
            object_type = 32 + bits.bits(6)
        sampling_index = bits.bits(4)
        rate = bits.bits(24) if sampling_index == 15 else None
        channels = bits.bits(4)
    except NalError as exc:
        raise AacConfigError("AudioSpecificConfig truncated") from exc
    if rate is not None:
        if rate not in _SAMPLING_RATES:
            raise AacConfigError(f"AAC sampling rate {rate} has no ADTS index")
        sampling_index = _SAMPLING_RATES.index(rate)
    if not 1 <= object_type <= 4 and object_type not in (5, 29):
        raise AacConfigError(f"AAC object type {object_type} cannot be carried in ADTS")
    return AacConfig(object_type, sampling_index, channels)


def adts_frame(config: AacConfig, raw: bytes) -> bytes:
    """A raw AAC frame with its 7-byte ADTS header (no CRC)."""
    length = 7 + len(raw)
    if length > 0x1FFF:
        raise AacConfigError("AAC frame too large for ADTS")
    header = bytes(
        [
            0xFF,
            0xF1,
            (config.adts_profile << 6) | (config.sampling_index << 2) | (config.channels >> 2),
            ((config.channels & 3) << 6) | (length >> 11),
            (length >> 3) & 0xFF,
            ((length & 7) << 5) | 0x1F,
            0xFC,
        ]
    )
    return header + raw


def sampling_rate(config: AacConfig) -> int:
    return _SAMPLING_RATES[config.sampling_index]

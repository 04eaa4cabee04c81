"""The per-frame ROI JSON (and so the SEI built from it) is the same whichever encoder ran:
one clip through the live transcoder with application-supplied regions, once on libx264 and
once on the NVENC backend (against the fake driver; no GPU), gives identical documents."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.hub import Hub, StreamKey
from app.media.flv import TagType, VideoPacketType, parse_video_tag
from app.media.packet import MediaPacket
from app.roi.config import RoiConfig
from app.roi.regions import parse_roi
from app.roi.transcoder import RoiTranscoder
from tests.roi.nvenc.fake_driver import read_calls, write_stream
from tests.support.clips import face_clip, flv_packets

pytestmark = pytest.mark.slow

W, H = 320, 240


def is_frame(packet: MediaPacket) -> bool:
    return (
        packet.kind is TagType.VIDEO
        and parse_video_tag(packet.payload).packet_type is VideoPacketType.CODED_FRAMES
    )


async def transcode(packets: list[MediaPacket], encoder: str, library_dir: Path) -> list[str]:
    hub = Hub()
    stream = hub.open_publisher(StreamKey("live", "same"), {}, "test")
    stream.set_metadata({"framerate": 30})
    transcoder = RoiTranscoder(
        stream,
        RoiConfig(template="roisame", detect=False),
        encoder_name=encoder,
        on_give_up=lambda why: pytest.fail(why),
        nvenc_library_dir=library_dir,
    )
    transcoder.set_override(parse_roi("16,32-80,112=-8;40,200-120,300=-3"))
    stream.set_processor(transcoder)
    documents: list[str] = []
    frames = sum(1 for p in packets if is_frame(p))
    done = asyncio.Event()

    def on_output(packet: MediaPacket) -> None:
        if packet.kind is TagType.VIDEO and packet.roi is not None:
            documents.append(packet.roi)
            if len(documents) >= frames:
                done.set()

    stream.output.listeners.append(on_output)
    for packet in packets:
        stream.source.push(packet)
        await asyncio.sleep(0)
    await asyncio.wait_for(done.wait(), timeout=60)
    assert transcoder.stats.encoder == encoder
    stream.close()
    await hub.wait_closed()
    return documents


def test_roi_json_is_the_same_on_libx264_and_nvenc(
    fake_driver_dir: Path, fake_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NVENC_STREAM", str(write_stream(tmp_path / "au.bin", "h264", W, H)))
    packets = flv_packets(face_clip(tmp_path / "clip.flv", W, H, 2, 400, gop=30, audio=False))
    on_x264 = asyncio.run(transcode(packets, "libx264", fake_driver_dir))
    on_nvenc = asyncio.run(transcode(packets, "h264_nvenc", fake_driver_dir))
    assert len(on_x264) == len(on_nvenc) == sum(1 for p in packets if is_frame(p))
    assert on_nvenc == on_x264
    assert '"roi":"16,32-80,112=-8;40,200-120,300=-3"' in on_nvenc[0]
    assert len(read_calls(fake_env, "nvEncEncodePicture")) == len(on_nvenc) + 1  # + EOS

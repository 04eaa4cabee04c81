"""The live transcoder looks less often at a scene that its detections keep confirming."""

from __future__ import annotations

import asyncio

import pytest

from app.hub import Hub, StreamKey
from app.media.flv import TagType
from app.roi.config import RoiConfig
from app.roi.transcoder import RoiTranscoder
from app.templates.rules import TemplateSettings
from tests.support.clips import face_clip, flv_packets

pytestmark = pytest.mark.slow


async def detection_intervals(packets, name: str) -> tuple[list[int], int]:
    """Feeds the clip at the publisher's pace; (detect_every seen per frame, frames out)."""
    hub = Hub()
    stream = hub.open_publisher(StreamKey("live", name), {"roirecognition": "t"}, "test")
    stream.set_metadata({"framerate": 30})
    transcoder = RoiTranscoder(
        stream,
        RoiConfig(template="t", settings=TemplateSettings(model="LiveShows")),
        encoder_name="libx264",
        on_give_up=lambda why: pytest.fail(f"transcoder gave up: {why}"),
    )
    stream.set_processor(transcoder)
    intervals: list[int] = []
    out = 0

    def on_output(packet) -> None:
        nonlocal out
        if packet.kind is TagType.VIDEO and packet.roi is not None:
            out += 1
            intervals.append(transcoder.stats.detect_every)

    stream.output.listeners.append(on_output)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for packet in packets:
        delay = start + packet.timestamp / 1000 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        stream.source.push(packet)
    await asyncio.sleep(0.5)
    stream.close()
    await hub.wait_closed()
    return intervals, out


async def test_a_still_host_is_checked_about_once_a_second(tmp_path) -> None:
    still = flv_packets(
        face_clip(tmp_path / "still.flv", 640, 360, 6, preset="ultrafast", audio=False, still=True),
        media_only=True,
    )
    intervals, frames = await detection_intervals(still, "still")
    assert frames > 150
    passes = [every for every in intervals if every]
    # The first passes run at the CPU budget's interval (a few frames on this size)...
    assert passes[0] < 30, intervals[::10]
    # ...then each pass that confirms the face doubles it, up to one second at 30 fps.
    assert passes[-1] == 30, intervals[::10]
    assert intervals.count(30) > 0.4 * len(intervals)

"""Only the event loop touches stream state: the ROI stage's threads (worker, detector, the
template lookup) never read or write the Stream or its tracks, and what they measure reaches
the status as immutable snapshots, handed over on the loop."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from pathlib import Path
from typing import Any

import pytest

from app.hub import Hub, StreamKey
from app.media.flv import TagType
from app.roi.config import RoiConfig
from app.roi.controller import RoiController
from app.roi.status import RoiStats
from app.roi.transcoder import RoiTranscoder
from app.templates.rules import TemplateCreate, TemplateSettings
from app.templates.store import TemplateStore
from tests.support.clips import face_clip, flv_packets

pytestmark = pytest.mark.slow


def watch_attributes(obj: Any, loop_thread: int, seen: list[tuple[str, str]]) -> None:
    """Makes ``obj`` record every attribute read or write made from another thread."""
    base = type(obj)

    def note(name: str) -> None:
        if threading.get_ident() != loop_thread:
            seen.append((threading.current_thread().name, name))

    class Watched(base):  # type: ignore[misc, valid-type]
        def __getattribute__(self, name: str) -> Any:
            note(name)
            return base.__getattribute__(self, name)

        def __setattr__(self, name: str, value: Any) -> None:
            note(name)
            base.__setattr__(self, name, value)

    obj.__class__ = Watched


async def push_at_pace(stream: Any, packets: list[Any]) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    for packet in packets:
        delay = start + packet.timestamp / 1000 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        stream.source.push(packet)


@pytest.fixture(scope="module")
def face_packets(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    path = tmp_path_factory.mktemp("clip") / "face.flv"
    return flv_packets(face_clip(path, 320, 240, 3, gop=30, preset="ultrafast"), media_only=True)


async def test_no_thread_of_the_roi_stage_touches_the_stream(
    face_packets: list[Any], tmp_path: Path
) -> None:
    store = TemplateStore(f"sqlite:///{tmp_path / 'templates.db'}", activation_delay=0)
    store.create(TemplateCreate(name="face1", model="LiveShows"))
    hub = Hub()
    controller = RoiController(hub, store.in_force, store.pending, encoder_name="libx264")
    loop_thread = threading.get_ident()
    seen: list[tuple[str, str]] = []
    stream = hub.open_publisher(StreamKey("live", "cam"), {"roirecognition": "roiface1"}, "t")
    # Before the controller's evaluation (a task) has built the transcoder and its threads.
    for obj in (stream, stream.source, stream.output):
        watch_attributes(obj, loop_thread, seen)
    frames_out = 0

    def on_output(packet: Any) -> None:
        nonlocal frames_out
        if packet.kind is TagType.VIDEO and packet.roi is not None:
            frames_out += 1

    stream.output.listeners.append(on_output)
    await push_at_pace(stream, face_packets)
    await asyncio.sleep(0.5)
    status = controller.status(stream)
    stream.close()
    await hub.wait_closed()
    await controller.close()
    store.close()

    assert isinstance(stream.processor, RoiTranscoder), status
    assert frames_out > 30, status
    assert status.applied and status.reason == "ROI encoding", status
    assert status.stats.regions >= 1 and status.stats.detect_every >= 1, status
    assert status.stats.encode_ms > 0 and status.stats.lag_ms > 0, status
    assert not seen, f"threads touched the stream: {sorted(set(seen))}"


async def test_stats_arrive_on_the_loop_as_frozen_snapshots(face_packets: list[Any]) -> None:
    hub = Hub()
    stream = hub.open_publisher(StreamKey("live", "stats"), {}, "t")
    loop_thread = threading.get_ident()
    snapshots: list[tuple[int, RoiStats]] = []
    encoding_on: list[int] = []
    transcoder = RoiTranscoder(
        stream,
        RoiConfig(template="t", settings=TemplateSettings(model="LiveShows")),
        encoder_name="libx264",
        on_give_up=lambda why: pytest.fail(f"gave up: {why}"),
        on_encoding=lambda: encoding_on.append(threading.get_ident()),
        on_stats=lambda stats: snapshots.append((threading.get_ident(), stats)),
    )
    stream.set_processor(transcoder)
    await push_at_pace(stream, face_packets)
    stream.close()
    await hub.wait_closed()

    assert encoding_on == [loop_thread]
    assert len(snapshots) > 30
    assert {thread for thread, _ in snapshots} == {loop_thread}
    stats = [s for _, s in snapshots]
    assert all(isinstance(s, RoiStats) for s in stats)
    # Each is a new object: a snapshot the loop holds is never changed under it.
    assert len({id(s) for s in stats}) == len(stats)
    assert any(s.detect_ms > 0 for s in stats) and stats[-1].regions >= 1
    assert transcoder.stats == stats[-1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats[-1].lag_ms = 0.0  # type: ignore[misc]

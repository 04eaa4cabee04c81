"""A push that names a template almost right is told which one it probably meant."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.hub import Hub, StreamKey
from app.roi.controller import RoiController
from app.templates.rules import TemplateCreate
from app.templates.store import TemplateStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TemplateStore]:
    templates = TemplateStore(f"sqlite:///{tmp_path / 'templates.db'}", activation_delay=0)
    templates.create(TemplateCreate(name="face1", model="LiveShows"))
    yield templates
    templates.close()


@pytest.mark.parametrize("pushed", ["face1", "ROIface1", "FACE1"])
async def test_a_near_miss_says_did_you_mean(store: TemplateStore, pushed: str, caplog) -> None:
    hub = Hub()
    controller = RoiController(hub, store.in_force, store.pending, encoder_name="libx264")
    stream = hub.open_publisher(StreamKey("live", "cam"), {"roirecognition": pushed}, "t")
    with caplog.at_level("WARNING", logger="app.roi"):
        await controller.evaluate(stream)
        controller.templates_changed()  # evaluated again: still said once in the log
        await controller.evaluate(stream)
    status = controller.status(stream)
    assert not status.applied and stream.processor is None
    assert status.template == pushed
    assert f"template {pushed} does not exist (did you mean roiface1?)" in status.reason
    lines = [r.getMessage() for r in caplog.records if "did you mean" in r.getMessage()]
    assert lines == [f"stream live/cam: {status.reason}"]
    await controller.close()


async def test_no_hint_without_a_close_template(store: TemplateStore, caplog) -> None:
    hub = Hub()
    controller = RoiController(hub, store.in_force, store.pending, encoder_name="libx264")
    stream = hub.open_publisher(StreamKey("live", "cam"), {"roirecognition": "roinope"}, "t")
    with caplog.at_level("WARNING", logger="app.roi"):
        await controller.evaluate(stream)
    status = controller.status(stream)
    assert status.reason == "template roinope does not exist: relayed unchanged"
    assert not [r for r in caplog.records if "did you mean" in r.getMessage()]
    await controller.close()

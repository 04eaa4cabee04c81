"""The whole chain in a browser: a face pushed over RTMP with an ROI template, transcoded
with its regions, played by the web player over WebRTC in headless Chromium."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.outputs.test_player_browser import (
    bbox,
    danmaku_pixels,
    load,
    overlay_green,
    page_box,
)
from tests.support.av_client import covers_face, face_push, finish_client
from tests.support.relay_harness import create_template

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_face_push_plays_in_the_browser_with_regions_kept_clear(
    relay_factory: Any,
    browser: Any,
    tmp_path: Path,
) -> None:
    relay = relay_factory(template_activation_delay=0)
    create_template(relay.http_url, "face1", model="LiveShows")
    pusher = face_push(f"{relay.rtmp_url}/live/hopper?roirecognition=roiface1", 14)
    try:
        relay.stream_info("live", "hopper")
        page = browser.new_page(viewport={"width": 800, "height": 640})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(
            f"{relay.http_url}/play/live/hopper?transport=whep&regions=1&demo=1"
            "&color=ff00ff&shadow=0"
        )
        page.wait_for_function(
            "window.roiPlayer && roiPlayer.frames > 10 && roiPlayer.boxes.length > 0",
            timeout=30_000,
        )
        first = page.evaluate("roiPlayer.frames")
        time.sleep(1.0)
        live = page.evaluate(
            "({frames: roiPlayer.frames, status: roiPlayer.status, pts: roiPlayer.pts,"
            " doc: roiPlayer.doc, aligned: roiPlayer.aligned})"
        )
        assert live["status"] == "playing (whep)" and live["frames"] - first >= 15
        assert live["aligned"], "RTP timestamps were tied to the regions' pts"
        assert abs(live["doc"]["pts"] - live["pts"]) <= 1, "regions of the frame on screen"

        page.evaluate("document.getElementById('video').pause()")
        time.sleep(0.3)
        shown = page.evaluate("({boxes: roiPlayer.boxes, regions: roiPlayer.doc.regions})")
        assert any(covers_face(region) for region in shown["regions"]), shown["regions"]
        face = next(i for i, region in enumerate(shown["regions"]) if covers_face(region))
        stage = page.locator("#stage").bounding_box()
        for _ in range(50):
            crossing = page.evaluate(
                """(box) => [...document.querySelectorAll('#danmaku .comment')].some((c) => {
                    const s = document.getElementById('stage').getBoundingClientRect();
                    const r = c.getBoundingClientRect();
                    const x = r.left - s.left, y = r.top - s.top;
                    return x < box.x + box.w && x + r.width > box.x
                        && y < box.y + box.h && y + r.height > box.y;
                })""",
                shown["boxes"][face],
            )
            if crossing:
                break
            time.sleep(0.1)
        shot = tmp_path / "face-whep.png"
        page.screenshot(path=str(shot))
        page.close()
        assert not errors, errors
    finally:
        finish_client(pusher)

    image = load(shot)
    boxes = [page_box(box, stage) for box in shown["boxes"]]
    union = (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )
    sx0, sy0 = round(stage["x"]), round(stage["y"])
    sx1, sy1 = sx0 + round(stage["width"]), sy0 + round(stage["height"])
    drawn = bbox(overlay_green(image[sy0:sy1, sx0:sx1]))
    drawn = (drawn[0] + sx0, drawn[1] + sy0, drawn[2] + sx0, drawn[3] + sy0)
    for got, want in zip(drawn, union, strict=True):
        assert abs(got - want) <= 3, f"overlay {drawn} vs regions {union}"
    assert crossing, "a comment crossed the face region at the screenshot"
    comments = danmaku_pixels(image)
    for x0, y0, x1, y1 in boxes:
        assert int(comments[y0:y1, x0:x1].sum()) == 0, "danmaku drawn over a region"
    assert int(np.asarray(comments[sy0:sy1, sx0:sx1]).sum()) > 500, "comments elsewhere"

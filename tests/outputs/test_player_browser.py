"""The web player in headless Debian Chromium on a live stream with a moving "face".

The pushed video is grey with a white 64x64 block where the face is, and each frame's ROI
JSON (packet + SEI) names that block, so the screenshots can be checked against the picture
itself: the overlay box must frame the white block, no comment pixel may lie on it, and the
blur must soften the background but not the block.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from app.media.packet import MediaPacket
from app.media.sei import build_roi_sei
from tests.outputs.conftest import PlayerServer
from tests.outputs.media import face_box, face_frame, with_roi
from tests.support.clips import encode_flv, flv_packets

pytestmark = [pytest.mark.slow, pytest.mark.browser]

DANMAKU_BGR = (255, 0, 255)  # comments are drawn in magenta, which the video never contains


@pytest.fixture(scope="module")
def face_clip() -> list[MediaPacket]:
    packets = flv_packets(encode_flv(seconds=14, gop=50, draw=face_frame))
    return with_roi(packets, lambda i: [face_box(i)], 320, 240)


def load(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None
    return image


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    assert len(xs), "nothing found"
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def white_block(image: np.ndarray, area: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = area
    crop = image[y0:y1, x0:x1]
    found = bbox(np.all(crop >= 235, axis=2))
    return found[0] + x0, found[1] + y0, found[2] + x0, found[3] + y0


def overlay_green(image: np.ndarray) -> np.ndarray:
    b, g, r = (image[..., i].astype(int) for i in range(3))
    return (g > 180) & (r < 140) & (b < 140)


def danmaku_pixels(image: np.ndarray) -> np.ndarray:
    b, g, r = (image[..., i].astype(int) for i in range(3))
    return (r - g > 80) & (b - g > 80)


def page_box(box: dict[str, float], stage: dict[str, float]) -> tuple[int, int, int, int]:
    x0 = stage["x"] + box["x"]
    y0 = stage["y"] + box["y"]
    return round(x0), round(y0), round(x0 + box["w"]), round(y0 + box["h"])


def open_player(browser: Any, server: PlayerServer, transport: str, extra: str = "") -> Any:
    page = browser.new_page(viewport={"width": 800, "height": 640})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(
        f"{server.http_url}/play/live/face?transport={transport}"
        f"&regions=1&demo=1&color=ff00ff&shadow=0{extra}"
    )
    page.wait_for_function("window.roiPlayer && roiPlayer.frames > 10", timeout=30_000)
    assert not errors, errors
    return page


def state(page: Any) -> dict[str, Any]:
    return page.evaluate(
        "({frames: roiPlayer.frames, status: roiPlayer.status, transport: roiPlayer.transport,"
        " pts: roiPlayer.pts, doc: roiPlayer.doc, boxes: roiPlayer.boxes,"
        " time: document.getElementById('video').currentTime})"
    )


def comments_over(page: Any, box: dict[str, float]) -> int:
    """Comments (DOM boxes, mask ignored) that overlap the region box right now."""
    return page.evaluate(
        """(box) => {
            const stage = document.getElementById('stage').getBoundingClientRect();
            let n = 0;
            for (const c of document.querySelectorAll('#danmaku .comment')) {
                const r = c.getBoundingClientRect();
                const x = r.left - stage.left, y = r.top - stage.top;
                if (x < box.x + box.w && x + r.width > box.x && y < box.y + box.h
                    && y + r.height > box.y) n++;
            }
            return n;
        }""",
        box,
    )


@pytest.mark.parametrize(
    ("transport", "regions_from"),
    [("whep", "channel"), ("whep", "ws"), ("flv", "sei"), ("hls", "ws")],
)
def test_player_overlay_danmaku_and_blur_follow_the_regions(
    browser: Any,
    face_clip: list[MediaPacket],
    tmp_path: Path,
    transport: str,
    regions_from: str,
) -> None:
    server = PlayerServer(segment_seconds=1.0, window=4)
    try:
        server.feed("live", "face", face_clip)
        server.wait_live("live", "face")
        page = open_player(browser, server, transport, "&roi=ws" if regions_from == "ws" else "")
        check_player(page, tmp_path, f"{transport}-{regions_from}")
        assert page.evaluate("roiPlayer.regionSource") == regions_from
        page.close()
    finally:
        server.stop()


def check_player(page: Any, tmp_path: Path, name: str) -> None:
    transport = name.split("-")[0]
    # Frames advance, each with the regions of its own pts.
    first = state(page)
    time.sleep(1.0)
    later = state(page)
    assert later["transport"] == transport and later["status"] == f"playing ({transport})"
    assert later["frames"] - first["frames"] >= 15, "about 25 frames a second"
    assert later["time"] > first["time"]
    assert later["doc"] is not None and later["pts"] is not None
    assert abs(later["doc"]["pts"] - later["pts"]) <= 20, "regions of the frame on screen"

    # Freeze the picture (comments keep flying) so screenshot and state describe one frame.
    page.evaluate("document.getElementById('video').pause()")
    time.sleep(0.3)
    frozen = state(page)
    stage = page.locator("#stage").bounding_box()
    assert frozen["boxes"], "the frame has a region"
    region = frozen["boxes"][0]
    expected = page_box(region, stage)

    # The overlay box frames the white block, in the same screenshot.
    for _ in range(40):  # wait until a comment crosses the region, to test the mask there
        if comments_over(page, region):
            break
        time.sleep(0.1)
    crossing = comments_over(page, region)
    shot = tmp_path / f"{name}-overlay-danmaku.png"
    page.screenshot(path=str(shot))
    image = load(shot)
    stage_area = (
        round(stage["x"]),
        round(stage["y"]),
        round(stage["x"] + stage["width"]),
        round(stage["y"] + stage["height"]),
    )
    block = white_block(image, stage_area)
    for got, want in zip(block, expected, strict=True):
        assert abs(got - want) <= 4, f"white block {block} vs region box {expected}"
    sx0, sy0, sx1, sy1 = stage_area
    green = overlay_green(image[sy0:sy1, sx0:sx1])
    drawn = bbox(green)
    drawn = (drawn[0] + sx0, drawn[1] + sy0, drawn[2] + sx0, drawn[3] + sy0)
    for got, want in zip(drawn, block, strict=True):
        assert abs(got - want) <= 4, f"overlay box {drawn} vs white block {block}"

    # No comment pixel on the region; comments visible elsewhere.
    assert crossing > 0, "a comment crossed the region while the screenshot was taken"
    comments = danmaku_pixels(image)
    x0, y0, x1, y1 = expected
    assert int(comments[y0:y1, x0:x1].sum()) == 0, "danmaku drawn over the region"
    assert int(comments[sy0:sy1, sx0:sx1].sum()) > 500, "comments visible elsewhere"

    # Background blur: the background softens, the region stays sharp.
    page.evaluate(
        "for (const id of ['show-danmaku', 'show-regions']) document.getElementById(id).click();"
        "document.getElementById('show-blur').click();"
    )
    time.sleep(0.3)
    blurred_shot = tmp_path / f"{name}-blur.png"
    page.screenshot(path=str(blurred_shot))
    blurred = load(blurred_shot)
    page.evaluate("document.getElementById('show-blur').click()")
    time.sleep(0.3)
    sharp_shot = tmp_path / f"{name}-sharp.png"
    page.screenshot(path=str(sharp_shot))
    sharp = load(sharp_shot)

    def strong_edges(image: np.ndarray, where: np.ndarray) -> int:
        """Pixels on a sharp edge (the ramp of the background alone has no such step)."""
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(int)
        step = np.zeros_like(grey)
        step[:, 1:] = np.maximum(step[:, 1:], np.abs(np.diff(grey, axis=1)))
        step[1:, :] = np.maximum(step[1:, :], np.abs(np.diff(grey, axis=0)))
        return int(((step > 12) & where).sum())

    # Background: the picture (4:3, letterboxed) away from its borders and from the region.
    picture_w = stage["height"] * 4 / 3
    px0 = round(stage["x"] + (stage["width"] - picture_w) / 2)
    background = np.zeros(image.shape[:2], dtype=bool)
    background[sy0 + 30 : sy1 - 30, px0 + 30 : px0 + round(picture_w) - 30] = True
    background[y0 - 30 : y1 + 30, x0 - 30 : x1 + 30] = False
    sharp_edges = strong_edges(sharp, background)
    assert sharp_edges > 500, "the background has sharp stripes to blur"
    assert strong_edges(blurred, background) < 0.1 * sharp_edges, "background blurred"
    # The block's edges lie inside the unblurred zone around the region.
    ring = np.zeros(image.shape[:2], dtype=bool)
    ring[y0 - 3 : y1 + 3, x0 - 3 : x1 + 3] = True
    ring[y0 + 3 : y1 - 3, x0 + 3 : x1 - 3] = False
    assert strong_edges(blurred, ring) > 0.8 * strong_edges(sharp, ring), "region left sharp"
    for got, want in zip(white_block(blurred, stage_area), expected, strict=True):
        assert abs(got - want) <= 4, "the block itself is not blurred"


def test_player_comes_back_when_the_publisher_does(
    browser: Any, face_clip: list[MediaPacket]
) -> None:
    server = PlayerServer()
    try:
        first = server.feed("live", "face", face_clip[: len(face_clip) // 4])
        server.wait_live("live", "face")
        page = open_player(browser, server, "auto")
        assert page.evaluate("roiPlayer.transport") == "whep", "WebRTC first"
        first.result(20)
        page.wait_for_function("!roiPlayer.status.startsWith('playing')", timeout=15_000)
        server.feed("live", "face", face_clip)
        page.wait_for_function(
            "roiPlayer.status === 'playing (whep)' && roiPlayer.boxes.length > 0",
            timeout=20_000,
        )
        frames = page.evaluate("roiPlayer.frames")
        time.sleep(0.5)
        assert page.evaluate("roiPlayer.frames") > frames
        page.close()
    finally:
        server.stop()


def test_player_modules_in_the_browser(browser: Any) -> None:
    """The player's pure parts, run in Chromium: region clip geometry, the pts-ordered region
    store, the RTP-to-pts clock and the SEI reader (on an SEI built by app/media/sei.py)."""
    sei = build_roi_sei('{"pts":40,"w":2,"h":2,"regions":[]}', "h264")
    server = PlayerServer()
    try:
        page = browser.new_page()
        page.goto(f"{server.http_url}/play/live/none?transport=flv")
        got = page.evaluate(
            """async (sei) => {
                const d = await import('/player/danmaku.js');
                const r = await import('/player/regions.js');
                const rects = d.disjointRects([
                    {x0: 0, y0: 0, x1: 10, y1: 10}, {x0: 5, y0: 5, x1: 15, y1: 15},
                    {x0: 20, y0: 0, x1: 30, y1: 5}]);
                const area = rects.reduce((a, q) => a + (q.x1 - q.x0) * (q.y1 - q.y0), 0);
                let overlaps = 0;
                for (const p of rects) for (const q of rects) if (p !== q
                    && p.x0 < q.x1 && q.x0 < p.x1 && p.y0 < q.y1 && q.y0 < p.y1) overlaps++;
                const track = new r.RegionTrack(3);
                for (const pts of [40, 0, 80, 120]) track.add({pts, w: 1, h: 1, regions: []});
                const clock = new r.RtpClock();
                const origin = 2 ** 32 - 900;  // the RTP clock wraps during the run
                const picks = [];
                for (let i = 0; i < 8; i++) {
                    clock.message(1000 + 40 * i, 100 * i);
                    picks.push(clock.frame((origin + 90 * (1000 + 40 * i)) % 2 ** 32, 100 * i + 3));
                }
                return {area, overlaps, kept: track.docs.map((x) => x.pts),
                        at: [track.at(79), track.at(79, 5), track.at(10)],
                        picks, offset: clock.offset,
                        sei: r.roiFromSei(new Uint8Array(sei)),
                        bad: r.parseRoi('{"pts": 1}')};
            }""",
            list(sei),
        )
        page.close()
    finally:
        server.stop()
    assert got["area"] == 100 + 100 - 25 + 50 and got["overlaps"] == 0
    assert got["kept"] == [40, 80, 120], "bounded, ordered by pts"
    assert got["at"][0]["pts"] == 40 and got["at"][1]["pts"] == 80 and got["at"][2] is None
    assert got["offset"] == 2**32 - 900
    assert got["picks"][:4] == [None] * 4, "five votes before the clock is trusted"
    assert got["picks"][4:] == [1160, 1200, 1240, 1280]
    assert got["sei"] == '{"pts":40,"w":2,"h":2,"regions":[]}'
    assert got["bad"] is None

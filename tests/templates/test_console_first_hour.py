"""The console on a real relay, as a new user meets it: the OBS fields to copy for each
template (and they work), "1 region", no "null" in the form, and an error said once."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.browser import CHROMIUM, chromium
from tests.support.relay_harness import RunningRelay

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed"),
]


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def wait_roi(relay: RunningRelay, name: str, regions: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        reply = httpx.get(f"{relay.http_url}/api/v1/streams/live/{name}")
        if reply.status_code == 200 and reply.json()["roi"]["regions"] == regions:
            return
        time.sleep(0.2)
    raise AssertionError(f"live/{name} never reported {regions} region(s): {reply.text}")


@pytest.mark.skipif(not shutil.which("ffmpeg"), reason="Debian ffmpeg is missing")
def test_console_first_hour(relay_factory: Any, browser: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    relay: RunningRelay = relay_factory(template_activation_delay=0)
    client = httpx.Client(base_url=relay.http_url)
    assert client.post("/api/v1/roi-templates", json={"name": "face1"}).status_code == 201
    context = browser.new_context(
        viewport={"width": 1400, "height": 900}, permissions=["clipboard-read", "clipboard-write"]
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{relay.http_url}/console")

    # The OBS fields for the template, with the relay's real RTMP port.
    row = page.locator('tr[data-name="roiface1"]')
    server = f"rtmp://127.0.0.1:{relay.relay.rtmp_port}/live"
    key = "mystream?roirecognition=roiface1"
    expect(row.locator("td.obs")).to_contain_text(server)
    expect(row.locator("td.obs")).to_contain_text(key)
    row.locator("td.obs button.copy").first.click()
    expect(row.locator("td.obs button.copy").first).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == server
    row.locator("td.obs button.copy").nth(1).click()
    copied_key = page.evaluate("navigator.clipboard.readText()")
    assert copied_key == key

    # What was copied is a push URL the relay takes, with the template (as OBS joins them).
    pusher = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
         "-t", "20", "-c:v", "libx264", "-g", "25", "-f", "flv", f"{server}/{copied_key}"],
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        info = relay.stream_info("live", "mystream")
        assert info["template"] == "roiface1"
        # One region, supplied by the application: the console says "1 region".
        deadline = time.monotonic() + 20
        while not httpx.get(f"{relay.http_url}/api/v1/streams/live/mystream").json()["roi"][
            "applied"
        ]:
            assert time.monotonic() < deadline, "ROI encoding never started"
            time.sleep(0.2)
        put = client.put("/api/v1/streams/live/mystream/roi", json={"roi": "16,16-64,64=-8"})
        assert put.status_code == 200, put.text
        wait_roi(relay, "mystream", 1)
        stream_row = page.locator('tr[data-stream="live/mystream"]')
        expect(stream_row).to_contain_text("1 region", timeout=10_000)
        expect(stream_row).not_to_contain_text("1 regions")
        expect(stream_row).not_to_contain_text(", ,")
        assert "ROI on ," not in stream_row.inner_text()

        # Edit: a template keeping the publisher's bitrate shows an empty field, never "null".
        row.locator("button.edit").click()
        values = page.evaluate(
            "[...document.querySelectorAll('#template-form input')].map((i) => i.value)"
        )
        assert "null" not in values and "undefined" not in values, values
        assert page.locator("#field-bitrate_kbps").input_value() == ""
        expect(page.locator('[data-rule-for="bitrate_kbps"]')).to_contain_text("leave it empty")
        expect(page.locator("#editor")).not_to_contain_text("null")

        # A rule broken: said once, next to the field (the hint it repeats steps aside).
        page.fill("#field-delta_qp", "99")
        page.click("#save-template")
        expect(page.locator("#error-delta_qp")).to_have_text(
            "delta_qp must be an integer from -51 to 51"
        )
        expect(page.locator('[data-rule-for="delta_qp"]')).to_be_hidden()
        field = page.locator("#field-delta_qp").locator("xpath=..")
        assert field.inner_text().count("from -51 to 51") == 1
        page.screenshot(path=str(tmp_path / "console.png"), full_page=True)
        page.fill("#field-delta_qp", "-8")
        page.click("#save-template")
        expect(page.locator("#editor")).to_be_hidden()
        expect(page.locator('[data-rule-for="delta_qp"]')).to_be_attached()
        assert not errors, errors
    finally:
        pusher.kill()
        pusher.wait(10)
        context.close()


def test_healthz_says_where_to_push(relay: RunningRelay) -> None:
    health = httpx.get(f"{relay.http_url}/healthz").json()
    assert health["rtmp_port"] == relay.relay.rtmp_port and health["push_auth"] is False

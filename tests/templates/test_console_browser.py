"""The /console page in Debian's headless Chromium (Playwright driving /usr/bin/chromium).

Creates, edits and deletes a template through the page, sees the server's rule message next
to a bad field, watches the countdowns run out, and lists a live stream from the real hub.
Screenshots go to the test's tmp_path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from app.api.streams import streams_router
from app.hub import Hub, StreamKey
from app.templates.rules import DESCRIPTION_RULE, NAME_RULE
from app.templates.store import TemplateStore
from tests.support.browser import CHROMIUM, chromium
from tests.templates.conftest import build_app, live_server

TOKEN = "console-token"
DELAY = 3.0

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed"),
]


@pytest.fixture
def browser() -> Iterator[object]:
    with chromium() as launched:
        yield launched


def _relay_app(store: TemplateStore, hub: Hub | None) -> FastAPI:
    app = build_app(store, api_token=TOKEN)
    if hub is not None:
        app.include_router(streams_router(hub, roi=None, dependencies=[]))
    return app


def test_console_creates_edits_and_deletes(browser: object, sqlite_url: str, tmp_path: Path):
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    store = TemplateStore(sqlite_url, activation_delay=DELAY)
    hub = Hub()
    hub.open_publisher(StreamKey("live", "show1"), {"roirecognition": "roiface1"}, "127.0.0.1:1")
    errors: list[str] = []
    try:
        with live_server(_relay_app(store, hub)) as base:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("dialog", lambda dialog: dialog.accept())
            page.goto(f"{base}/console")

            # The API wants a token: the page says so, then remembers the one given.
            expect(page.locator("#message")).to_contain_text("missing bearer token")
            page.fill("#api-token", TOKEN)
            page.click("#token-form button")
            expect(page.locator("#templates-empty")).to_be_visible()
            row = page.locator('tr[data-stream="live/show1"]')
            expect(row).to_contain_text("roiface1")
            expect(row).to_contain_text("waiting for the ROI stage")
            expect(row.locator("a")).to_have_attribute("href", "/play/live/show1")

            # The form shows the rules and models as the server's OpenAPI document words them.
            page.click("#new-template")
            expect(page.locator('[data-rule-for="name"]')).to_contain_text(NAME_RULE)
            expect(page.locator('[data-rule-for="description"]')).to_have_text(DESCRIPTION_RULE)
            expect(page.locator("#field-model option")).to_have_text(
                ["General", "HonorOfKings", "NBA2K", "LiveShows"]
            )
            expect(page.locator("#field-delta_qp")).to_have_attribute("placeholder", "-6")

            # A bad name and a bad description: the server's rules, next to their fields.
            page.fill("#field-name", "face_1!")
            page.fill("#field-description", "v1.2/host")
            page.click("#save-template")
            expect(page.locator("#error-name")).to_have_text(NAME_RULE)
            expect(page.locator("#error-description")).to_have_text(DESCRIPTION_RULE)
            expect(page.locator("#field-name")).to_have_attribute("aria-invalid", "true")
            page.screenshot(path=str(tmp_path / "console-rules.png"), full_page=True)
            assert store.list() == []

            # Create: pending, with a countdown, until the delay has passed.
            page.fill("#field-name", "face1")
            page.fill("#field-description", "主播 host face")
            page.select_option("#field-model", "LiveShows")
            page.click("#save-template")
            template = page.locator('tr[data-name="roiface1"]')
            expect(template.locator(".badge.pending")).to_have_text("pending")
            expect(template.locator(".countdown")).to_contain_text("in 0:0")
            expect(page.locator("#editor")).to_be_hidden()
            # The page reloads by itself when the countdown runs out.
            expect(template.locator(".badge.active")).to_have_text("active", timeout=10_000)

            # Edit: the version in force stays shown while the edit waits for its turn.
            template.locator("button.edit").click()
            expect(page.locator("#field-name")).to_be_disabled()
            expect(page.locator("#field-name")).to_have_value("face1")
            page.fill("#field-delta_qp", "-99")
            page.click("#save-template")
            expect(page.locator("#error-delta_qp")).to_contain_text("from -51 to 51")
            page.fill("#field-delta_qp", "-12")
            page.fill("#field-bitrate_kbps", "2500")
            page.click("#save-template")
            pending = template.locator("td.pending")
            expect(pending).to_contain_text("ΔQP -6 → -12")
            expect(pending).to_contain_text("bitrate publisher's → 2500 kbps")
            expect(template.locator("td.num").first).to_have_text("-6")
            page.screenshot(path=str(tmp_path / "console.png"), full_page=True)
            in_force = store.in_force("roiface1")
            assert in_force is not None and in_force.settings.delta_qp == -6
            expect(pending).to_be_empty(timeout=10_000)
            expect(template.locator("td.num").first).to_have_text("-12")
            assert store.in_force("roiface1").settings.delta_qp == -12  # type: ignore[union-attr]

            # The token survives a reload (localStorage).
            page.reload()
            expect(page.locator("#api-token")).to_have_value(TOKEN)
            expect(template).to_be_visible()

            # Delete, after the confirmation dialog.
            template.locator("button.delete").click()
            expect(template).to_have_count(0)
            expect(page.locator("#message")).to_have_text("roiface1 deleted.")
            assert store.find("roiface1") is None
            page.close()
    finally:
        store.close()
    assert errors == []
    assert (tmp_path / "console.png").stat().st_size > 10_000


def test_console_copes_without_a_streams_endpoint(browser: object, sqlite_url: str):
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    store = TemplateStore(sqlite_url, activation_delay=DELAY)
    try:
        with live_server(_relay_app(store, hub=None)) as base:
            page = browser.new_page()
            page.goto(f"{base}/console")
            page.evaluate("token => localStorage.setItem('roi-relay.api-token', token)", TOKEN)
            page.reload()
            expect(page.locator("#streams-empty")).to_have_text(
                "This relay does not report live streams yet."
            )
            expect(page.locator("#templates-empty")).to_be_visible()
            page.close()
    finally:
        store.close()

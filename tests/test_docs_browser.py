"""/docs and /redoc render in headless Chromium with every request outside the relay refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
def offline_page(relay: RunningRelay) -> Iterator[tuple[object, list[str]]]:
    """A page that can reach the relay and nothing else; yields it with the refused URLs."""
    refused: list[str] = []

    def only_the_relay(route: object) -> None:
        url = route.request.url  # type: ignore[attr-defined]
        if url.startswith(relay.http_url + "/"):
            route.continue_()  # type: ignore[attr-defined]
        else:
            refused.append(url)
            route.abort()  # type: ignore[attr-defined]

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.route("**/*", only_the_relay)
        yield page, refused


def test_docs_render_the_operations_offline(
    relay: RunningRelay, offline_page: tuple[object, list[str]], tmp_path: Path
) -> None:
    from playwright.sync_api import Page, expect

    page, refused = offline_page
    assert isinstance(page, Page)
    page.goto(f"{relay.http_url}/docs")
    operations = page.locator(".opblock-summary-path")
    expect(operations.first).to_be_visible(timeout=15_000)
    paths = set(operations.all_inner_texts())
    assert {"/api/v1/roi-templates", "/api/v1/streams/{app}/{stream}/roi"} <= {
        p.replace("\u200b", "") for p in paths
    }
    expect(page.locator(".info .title")).to_contain_text("roi-relay")
    page.screenshot(path=str(tmp_path / "docs.png"), full_page=False)
    assert refused == [], f"/docs asked the network for {refused}"


def test_redoc_renders_offline(
    relay: RunningRelay, offline_page: tuple[object, list[str]], tmp_path: Path
) -> None:
    from playwright.sync_api import Page, expect

    page, refused = offline_page
    assert isinstance(page, Page)
    page.goto(f"{relay.http_url}/redoc")
    expect(page.get_by_text("/api/v1/roi-templates").first).to_be_attached(timeout=20_000)
    expect(page.locator("h1").first).to_contain_text("roi-relay")
    page.screenshot(path=str(tmp_path / "redoc.png"))
    # ReDoc's sidebar footer links Redocly's logo from their CDN: a decorative image only.
    assert [u for u in refused if not u.endswith("/logo-mini.svg")] == []


def test_docs_pages_name_no_cdn(relay: RunningRelay) -> None:
    for path in ("/docs", "/redoc"):
        html = httpx.get(relay.http_url + path).text
        assert "cdn.jsdelivr.net" not in html and "fonts.googleapis" not in html
        assert "/docs-assets/" in html
    css = httpx.get(relay.http_url + "/docs-assets/swagger-ui.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]

"""A model the operator drops into ROI_RELAY_MODELS_DIR is a model like the built-in ones:
templates name it over REST and in the console, and a push that uses it gets its regions."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.support.av_client import face_push, finish_client, start_client
from tests.support.browser import CHROMIUM, chromium

pytestmark = pytest.mark.slow

SALIENT_MANIFEST = """\
name = "Salient"
description = "The most salient object (colour contrast), nothing learned"

[[detector]]
kind = "saliency"
label = "salient"
max_boxes = 1
"""


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "operator-models" / "salient"
    folder.mkdir(parents=True)
    (folder / "manifest.toml").write_text(SALIENT_MANIFEST)
    return folder.parent


def _wait_active(api: httpx.Client, name: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = api.get(f"/api/v1/roi-templates/{name}").json()
        if shown["status"] == "active" and shown["pending"] is None:
            return shown
        time.sleep(0.1)
    raise AssertionError(f"{name} never came into force: {shown}")


def test_operator_model_template_over_rest_and_a_push(relay_factory, models_dir: Path) -> None:
    relay = relay_factory(template_activation_delay=1, models_dir=models_dir)
    with httpx.Client(base_url=relay.http_url, timeout=10) as api:
        models = api.get("/api/v1/models").json()
        assert {"name": "Salient", "builtin": False} in [
            {"name": m["name"], "builtin": m["builtin"]} for m in models
        ]
        enum = api.get("/openapi.json").json()["components"]["schemas"]["TemplateCreate"]
        assert "Salient" in enum["properties"]["model"]["enum"]

        created = api.post("/api/v1/roi-templates", json={"name": "sal1", "model": "salient"})
        assert created.status_code == 201, created.text
        assert (created.json()["model"], created.json()["status"]) == ("Salient", "pending")
        _wait_active(api, "roisal1")
        edited = api.patch("/api/v1/roi-templates/roisal1", json={"delta_qp": -10})
        assert edited.status_code == 200, edited.text
        assert edited.json()["pending"]["model"] == "Salient"
        assert _wait_active(api, "roisal1")["delta_qp"] == -10

        pusher = face_push(f"{relay.rtmp_url}/live/sal?roirecognition=roisal1", 5)
        relay.stream_info("live", "sal")
        time.sleep(0.5)
        player = start_client("play", f"{relay.http_url}/live/sal.flv", "--sei")
        time.sleep(2)
        roi = relay.stream_info("live", "sal")["roi"]
        got = finish_client(player)
        finish_client(pusher)
        assert roi["applied"] is True and roi["model"] == "Salient", roi
        documents = [json.loads(d) for d in got["sei"] if d]
        assert documents, got
        salient = [r for d in documents for r in d["regions"] if r["label"] == "salient"]
        assert len(salient) >= 0.7 * len(documents), documents[-3:]
        assert all(r["qp"] == -10 for r in salient)
        assert {d["model"] for d in documents} == {"Salient"}

        assert api.delete("/api/v1/roi-templates/roisal1").status_code == 204
        assert api.get("/api/v1/roi-templates/roisal1").status_code == 404


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed")
def test_operator_model_in_the_console(relay_factory, models_dir: Path, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    relay = relay_factory(template_activation_delay=1, models_dir=models_dir)
    errors: list[str] = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("dialog", lambda dialog: dialog.accept())
        page.goto(f"{relay.http_url}/console")
        page.click("#new-template")
        expect(page.locator("#field-model option")).to_have_text(
            ["General", "HonorOfKings", "NBA2K", "LiveShows", "Salient"]
        )
        page.fill("#field-name", "sal2")
        page.select_option("#field-model", "Salient")
        page.click("#save-template")
        row = page.locator('tr[data-name="roisal2"]')
        expect(row).to_contain_text("Salient")
        expect(row.locator(".badge.active")).to_have_text("active", timeout=10_000)

        row.locator("button.edit").click()
        page.fill("#field-delta_qp", "-9")
        page.click("#save-template")
        expect(row.locator("td.num").first).to_have_text("-9", timeout=10_000)
        page.screenshot(path=str(tmp_path / "console-operator-model.png"), full_page=True)

        row.locator("button.delete").click()
        expect(row).to_have_count(0)

        # A name given with the prefix: saved as asked, with the console saying what it is.
        page.click("#new-template")
        page.fill("#field-name", "roiface1")
        page.click("#save-template")
        expect(page.locator("#message.warn")).to_contain_text("create it as 'face1'")
        page.locator('tr[data-name="roiroiface1"] button.delete').click()
        expect(page.locator('tr[data-name="roiroiface1"]')).to_have_count(0)
        page.close()
    assert errors == []
    assert httpx.get(f"{relay.http_url}/api/v1/roi-templates", timeout=5).json() == []

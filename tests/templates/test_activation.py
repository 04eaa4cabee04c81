"""Activation on real time with short delays: REST over real uvicorn, restarts, notifications."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.templates.rules import TemplateCreate, TemplatePatch
from app.templates.store import ChangeKind, TemplateChange, TemplateStore
from tests.templates.conftest import build_app, live_server

URL = "/api/v1/roi-templates"


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until true; returns the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """Settings as the server reads them, with ROI_RELAY_TEMPLATE_ACTIVATION_DELAY=1."""
    monkeypatch.setenv("ROI_RELAY_TEMPLATE_ACTIVATION_DELAY", "1")
    monkeypatch.setenv("ROI_RELAY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("ROI_RELAY_DATABASE_URL", raising=False)
    return Settings()


def _open_store(settings: Settings) -> TemplateStore:
    return TemplateStore(settings.resolved_database_url, settings.template_activation_delay)


@pytest.mark.slow
def test_pending_active_edit_restart_delete_on_real_time(settings: Settings) -> None:
    assert settings.template_activation_delay == 1.0
    store = _open_store(settings)
    with live_server(build_app(store)) as base, httpx.Client(base_url=base) as http:
        created = http.post(URL, json={"name": "face1", "model": "LiveShows"})
        assert created.status_code == 201
        body = created.json()
        assert body["status"] == "pending"
        assert 0.5 < body["effective_in_s"] <= 1.0
        assert store.in_force("roiface1") is None

        took = _wait_for(
            lambda: http.get(f"{URL}/roiface1").json()["status"] == "active", 5, "activation"
        )
        assert took > 0.3  # it really waited for the delay
        assert store.in_force("roiface1").settings.model == "LiveShows"  # type: ignore[union-attr]

        edited = http.patch(f"{URL}/roiface1", json={"delta_qp": -12, "max_regions": 3})
        shown = edited.json()
        assert (shown["status"], shown["delta_qp"], shown["version"]) == ("active", -6, 1)
        assert shown["pending"]["delta_qp"] == -12
        pending_effective_at = shown["pending"]["effective_at"]
        assert store.in_force("roiface1").settings.delta_qp == -6  # type: ignore[union-attr]
    store.close()

    # Restart: a new store and server on the same SQLite file keep the version in force and
    # the pending edit with its own effective_at.
    store = _open_store(Settings())
    with live_server(build_app(store)) as base, httpx.Client(base_url=base) as http:
        after = http.get(f"{URL}/roiface1").json()
        newest = after["pending"] or after  # the edit may have come into force meanwhile
        assert newest["effective_at"] == pending_effective_at
        assert (newest["version"], newest["delta_qp"], newest["max_regions"]) == (2, -12, 3)
        _wait_for(lambda: http.get(f"{URL}/roiface1").json()["pending"] is None, 5, "the edit")
        assert store.in_force("roiface1").settings.delta_qp == -12  # type: ignore[union-attr]

        assert http.delete(f"{URL}/roiface1").status_code == 204
        assert http.get(f"{URL}/roiface1").status_code == 404
        assert store.in_force("roiface1") is None
    store.close()

    store = _open_store(Settings())
    try:
        assert store.list() == []
    finally:
        store.close()


@pytest.mark.slow
def test_edit_saved_just_before_a_restart_comes_into_force_after_it(settings: Settings) -> None:
    store = _open_store(settings)
    store.create(TemplateCreate(name="game1", model="NBA2K"))
    store.close()
    store = _open_store(settings)
    try:
        assert store.get("roigame1").status == "pending"
        _wait_for(lambda: store.get("roigame1").status == "active", 5, "activation")
        assert store.in_force("roigame1").settings.model == "NBA2K"  # type: ignore[union-attr]
    finally:
        store.close()


async def _next(queue: asyncio.Queue[TemplateChange], timeout: float = 5) -> TemplateChange:
    return await asyncio.wait_for(queue.get(), timeout)


@pytest.mark.slow
async def test_watcher_timer_reports_activation(sqlite_url: str) -> None:
    # Polling is slowed down to 30 s: only the timer can report activation in time.
    store = TemplateStore(sqlite_url, activation_delay=1, poll_interval=30)
    changes: asyncio.Queue[TemplateChange] = asyncio.Queue()
    store.subscribe(changes.put_nowait)
    await store.start_watching()
    try:
        start = time.monotonic()
        await asyncio.to_thread(store.create, TemplateCreate(name="face1"))
        created = await _next(changes)
        assert (created.kind, created.in_force) == (ChangeKind.CREATED, None)
        activated = await _next(changes)
        waited = time.monotonic() - start
        assert activated.kind == ChangeKind.ACTIVATED
        assert activated.in_force is not None and activated.in_force.version == 1
        assert 0.95 < waited < 4
        assert datetime.now(UTC) >= activated.in_force.effective_at

        await asyncio.to_thread(store.edit, "roiface1", TemplatePatch(model="LiveShows"))
        edited = await _next(changes)
        assert edited.kind == ChangeKind.EDITED
        assert edited.pending is not None and edited.pending.settings.model == "LiveShows"
        took_effect = await _next(changes)
        assert took_effect.kind == ChangeKind.ACTIVATED
        assert (
            took_effect.in_force is not None and took_effect.in_force.settings.model == "LiveShows"
        )

        await asyncio.to_thread(store.delete, "roiface1")
        assert (await _next(changes)).kind == ChangeKind.DELETED
        assert changes.empty()
    finally:
        await store.stop_watching()
        store.close()


@pytest.mark.slow
async def test_changes_made_by_another_node_arrive_by_polling(database_url: str) -> None:
    node_a = TemplateStore(database_url, activation_delay=0.3, poll_interval=0.2)
    node_b = TemplateStore(database_url, activation_delay=0.3, poll_interval=0.2)
    seen_by_b: asyncio.Queue[TemplateChange] = asyncio.Queue()
    node_b.subscribe(seen_by_b.put_nowait)
    await node_b.start_watching()
    try:
        await asyncio.to_thread(node_a.create, TemplateCreate(name="shared1"))
        created = await _next(seen_by_b)
        assert created.kind == ChangeKind.CREATED
        if created.in_force is None:  # node B may look only after it took effect
            assert (await _next(seen_by_b)).kind == ChangeKind.ACTIVATED
        assert await asyncio.to_thread(node_b.in_force, "roishared1") is not None

        await asyncio.to_thread(node_a.edit, "roishared1", TemplatePatch(delta_qp=-20))
        edited = await _next(seen_by_b)
        assert edited.kind in (ChangeKind.EDITED, ChangeKind.ACTIVATED)
        if edited.kind == ChangeKind.EDITED:  # node B may look only after it took effect
            edited = await _next(seen_by_b)
        assert edited.kind == ChangeKind.ACTIVATED
        assert edited.in_force is not None and edited.in_force.settings.delta_qp == -20

        await asyncio.to_thread(node_a.delete, "roishared1")
        assert (await _next(seen_by_b)).kind == ChangeKind.DELETED
    finally:
        await node_b.stop_watching()
        node_a.close()
        node_b.close()

"""TemplateStore on a real SQLite file and, when ROI_RELAY_TEST_POSTGRES_URL is set, PostgreSQL.

Activation is driven by a settable clock here; test_activation.py runs the same paths on
real time with a one-second delay.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from app.database import normalize_database_url
from app.templates.rules import TemplateCreate, TemplatePatch
from app.templates.schema import SCHEMA_VERSION
from app.templates.store import (
    ChangeKind,
    TemplateChange,
    TemplateExistsError,
    TemplateNotFoundError,
    TemplateStore,
)
from tests.templates.conftest import FakeClock

DELAY = 300.0


@pytest.fixture
def store(database_url: str, clock: FakeClock) -> Iterator[TemplateStore]:
    opened = TemplateStore(database_url, activation_delay=DELAY, clock=clock)
    yield opened
    opened.close()


def _create(store: TemplateStore, name: str = "face1", **fields: object) -> None:
    store.create(TemplateCreate.model_validate({"name": name, **fields}))


def _edit(store: TemplateStore, name: str, **fields: object) -> None:
    store.edit(name, TemplatePatch.model_validate(fields))


def test_created_template_is_pending_until_the_delay_has_passed(
    store: TemplateStore, clock: FakeClock
) -> None:
    created_at = clock.now
    state = store.create(TemplateCreate(name="face1", model="LiveShows"))
    assert state.name == "roiface1"
    assert state.status == "pending"
    assert state.in_force is None
    assert state.pending is not None
    assert state.pending.effective_at == created_at + timedelta(seconds=DELAY)
    assert state.created_at == state.updated_at == created_at
    assert store.in_force("roiface1") is None

    clock.advance(DELAY - 0.001)
    assert store.get("roiface1").status == "pending"
    clock.advance(0.001)  # effective_at itself counts as in force
    in_force = store.in_force("roiface1")
    assert in_force is not None
    assert (in_force.version, in_force.settings.model, in_force.settings.delta_qp) == (
        1,
        "LiveShows",
        -6,
    )
    assert store.get("roiface1").status == "active"
    assert store.pending("roiface1") is None


def test_edit_is_pending_while_the_previous_version_stays_in_force(
    store: TemplateStore, clock: FakeClock
) -> None:
    _create(store, "face1", delta_qp=-4, bitrate_kbps=2000)
    clock.advance(DELAY)
    clock.advance(60)
    edited_at = clock.now
    state = store.edit("roiface1", TemplatePatch(delta_qp=-12, description="主播 face"))
    assert state.status == "active"
    assert state.in_force is not None and state.pending is not None
    assert (state.in_force.version, state.in_force.settings.delta_qp) == (1, -4)
    assert (state.pending.version, state.pending.settings.delta_qp) == (2, -12)
    assert state.pending.settings.description == "主播 face"
    assert state.pending.settings.bitrate_kbps == 2000  # untouched fields carry over
    assert state.pending.effective_at == edited_at + timedelta(seconds=DELAY)
    assert state.updated_at == edited_at

    clock.advance(DELAY - 1)
    assert store.in_force("roiface1").settings.delta_qp == -4  # type: ignore[union-attr]
    clock.advance(1)
    now_in_force = store.in_force("roiface1")
    assert now_in_force is not None and now_in_force.version == 2
    assert now_in_force.settings.delta_qp == -12
    assert store.pending("roiface1") is None


def test_a_second_edit_supersedes_the_pending_one(store: TemplateStore, clock: FakeClock) -> None:
    _create(store)
    clock.advance(DELAY)
    _edit(store, "roiface1", model="NBA2K")
    clock.advance(100)
    _edit(store, "roiface1", delta_qp=-9)
    state = store.get("roiface1")
    assert state.pending is not None
    assert (
        state.pending.version,
        state.pending.settings.model,
        state.pending.settings.delta_qp,
    ) == (
        3,
        "NBA2K",  # built on the newest version, not on the one in force
        -9,
    )
    # When the first edit would have come into force, nothing changes: it was superseded.
    clock.advance(DELAY - 100)
    assert store.in_force("roiface1").version == 1  # type: ignore[union-attr]
    clock.advance(100)
    assert store.in_force("roiface1").version == 3  # type: ignore[union-attr]


def test_editing_a_template_never_in_force_restarts_its_delay(
    store: TemplateStore, clock: FakeClock
) -> None:
    _create(store)
    clock.advance(200)
    _edit(store, "roiface1", max_regions=2)
    state = store.get("roiface1")
    assert state.status == "pending" and state.in_force is None
    assert state.pending is not None and state.pending.settings.max_regions == 2
    clock.advance(DELAY - 1)
    assert store.get("roiface1").status == "pending"
    clock.advance(1)
    assert store.in_force("roiface1").settings.max_regions == 2  # type: ignore[union-attr]


def test_patch_back_to_the_version_in_force_withdraws_the_pending_edit(
    store: TemplateStore, clock: FakeClock
) -> None:
    _create(store, delta_qp=-6)
    clock.advance(DELAY)
    _edit(store, "roiface1", delta_qp=-20)
    assert store.pending("roiface1") is not None
    _edit(store, "roiface1", delta_qp=-6)
    assert store.pending("roiface1") is None
    assert store.in_force("roiface1").settings.delta_qp == -6  # type: ignore[union-attr]


def test_patch_that_changes_nothing_saves_nothing(store: TemplateStore, clock: FakeClock) -> None:
    _create(store, delta_qp=-6)
    clock.advance(DELAY)
    before = store.get("roiface1")
    clock.advance(5)
    _edit(store, "roiface1", delta_qp=-6)
    _edit(store, "roiface1")
    after = store.get("roiface1")
    assert after.pending is None
    assert after.updated_at == before.updated_at
    assert after.in_force == before.in_force


def test_bitrate_null_in_a_patch_goes_back_to_the_publishers_bitrate(
    store: TemplateStore, clock: FakeClock
) -> None:
    _create(store, bitrate_kbps=1500)
    clock.advance(DELAY)
    _edit(store, "roiface1", bitrate_kbps=None)
    pending = store.pending("roiface1")
    assert pending is not None and pending.settings.bitrate_kbps is None
    assert store.in_force("roiface1").settings.bitrate_kbps == 1500  # type: ignore[union-attr]


def test_delete_takes_effect_at_once(store: TemplateStore, clock: FakeClock) -> None:
    _create(store)
    clock.advance(DELAY)
    _edit(store, "roiface1", delta_qp=-1)
    store.delete("roiface1")
    assert store.find("roiface1") is None
    assert store.in_force("roiface1") is None
    assert store.list() == []
    with pytest.raises(TemplateNotFoundError):
        store.delete("roiface1")
    with pytest.raises(TemplateNotFoundError):
        store.get("roiface1")
    # The name is free again, and a new template starts its own delay.
    _create(store)
    assert store.get("roiface1").status == "pending"


def test_names_are_unique(store: TemplateStore) -> None:
    _create(store, "face1")
    with pytest.raises(TemplateExistsError, match="roiface1"):
        _create(store, "face1", model="NBA2K")
    _create(store, "Face1")  # names are case-sensitive, as push URLs are
    assert [s.name for s in store.list()] == ["roiFace1", "roiface1"]


@pytest.mark.parametrize("name", ["roinope", "face1", "roi\x00", "roi" + "a" * 5000, "ROIa", ""])
def test_unknown_names(store: TemplateStore, name: str) -> None:
    assert store.find(name) is None
    assert store.in_force(name) is None
    assert store.pending(name) is None
    with pytest.raises(TemplateNotFoundError):
        store.edit(name, TemplatePatch(delta_qp=1))
    with pytest.raises(TemplateNotFoundError):
        store.delete(name)


def test_unknown_names_next_to_known_ones(store: TemplateStore) -> None:
    _create(store, "nope1")
    assert store.find("roinope") is None
    assert store.in_force("roinope") is None
    assert store.pending("roinope") is None
    with pytest.raises(TemplateNotFoundError):
        store.edit("roinope", TemplatePatch(delta_qp=1))


def test_timestamps_round_trip_as_aware_utc(store: TemplateStore, clock: FakeClock) -> None:
    clock.advance(0.123456)
    _create(store)
    state = store.get("roiface1")
    assert state.created_at == clock.now
    assert state.created_at.utcoffset() == timedelta(0)
    assert state.pending is not None and state.pending.saved_at == clock.now


def test_restart_keeps_versions_and_timers(database_url: str, clock: FakeClock) -> None:
    first = TemplateStore(database_url, activation_delay=DELAY, clock=clock)
    _create(first, "face1", model="LiveShows", description="直播 host")
    _create(first, "game1", model="HonorOfKings")
    clock.advance(DELAY)
    _edit(first, "roiface1", delta_qp=-10)
    before = first.list()
    first.close()

    second = TemplateStore(database_url, activation_delay=DELAY, clock=clock)
    try:
        assert second.list() == before
        assert second.schema_version() == SCHEMA_VERSION
        clock.advance(DELAY)
        assert second.in_force("roiface1").settings.delta_qp == -10  # type: ignore[union-attr]
        assert second.in_force("roigame1").settings.model == "HonorOfKings"  # type: ignore[union-attr]
    finally:
        second.close()


def test_reopening_with_a_newer_schema_is_refused(database_url: str) -> None:
    TemplateStore(database_url, activation_delay=1).close()
    engine = create_engine(normalize_database_url(database_url))
    with engine.begin() as conn:
        conn.execute(text("UPDATE roi_templates_schema SET version = 999"))
    engine.dispose()
    with pytest.raises(RuntimeError, match="newer than this relay"):
        TemplateStore(database_url, activation_delay=1)


def test_concurrent_creates_of_one_name_let_exactly_one_win(database_url: str) -> None:
    store = TemplateStore(database_url, activation_delay=0)
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            _create(store, "race", delta_qp=-i)
            outcomes.append("created")
        except TemplateExistsError:
            outcomes.append("taken")

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert sorted(outcomes) == ["created"] + ["taken"] * 7
        assert len(store.list()) == 1
    finally:
        store.close()


def test_concurrent_edits_and_reads_do_not_fail(database_url: str) -> None:
    store = TemplateStore(database_url, activation_delay=0)
    for i in range(4):
        _create(store, f"t{i}")
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for round_ in range(15):
                _edit(store, f"roit{i % 4}", delta_qp=-(round_ % 40) - 1, max_regions=1 + i % 6)
                store.list()
                store.in_force(f"roit{(i + 1) % 4}")
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        for state in store.list():
            assert state.in_force is not None
            assert state.pending is None  # delay 0: every saved version is in force at once
    finally:
        store.close()


def test_sqlite_file_is_in_wal_mode(sqlite_url: str) -> None:
    store = TemplateStore(sqlite_url, activation_delay=1)
    store.close()
    engine = create_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(ValueError, match="give a file path"):
        TemplateStore("sqlite://", activation_delay=1)


def test_store_creates_the_data_dir(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a' / 'b' / 'roi-relay.db'}"
    TemplateStore(url, activation_delay=1).close()
    assert (tmp_path / "a" / "b" / "roi-relay.db").is_file()


def test_postgres_urls_use_psycopg3() -> None:
    assert normalize_database_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_database_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_database_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_database_url("sqlite:///x.db") == "sqlite:///x.db"


def test_clock_must_be_aware(sqlite_url: str) -> None:
    from datetime import datetime

    store = TemplateStore(sqlite_url, activation_delay=1, clock=lambda: datetime(2026, 1, 1))
    try:
        with pytest.raises(ValueError, match="aware"):
            store.list()
    finally:
        store.close()


# -- change notification --------------------------------------------------------------------


async def _changes(seen: list[TemplateChange], count: int) -> list[TemplateChange]:
    """Wait until ``count`` changes have been delivered (by the watcher or a refresh)."""
    async with asyncio.timeout(5):
        while len(seen) < count:
            await asyncio.sleep(0.01)
    return seen[:count]


async def test_changes_are_notified_for_create_edit_activate_delete(
    store: TemplateStore, clock: FakeClock
) -> None:
    seen: list[TemplateChange] = []
    unsubscribe = store.subscribe(seen.append)
    await store.start_watching()
    try:
        # Writes wake the watcher at once; no refresh() call is needed for them.
        await asyncio.to_thread(_create, store, "face1")
        [created] = await _changes(seen, 1)
        assert (created.name, created.kind, created.in_force) == (
            "roiface1",
            ChangeKind.CREATED,
            None,
        )

        # The clock is fake, so the watcher's timer cannot see it move: look explicitly.
        clock.advance(DELAY)
        await store.refresh()
        activated = (await _changes(seen, 2))[1]
        assert activated.kind == ChangeKind.ACTIVATED
        assert activated.in_force is not None and activated.in_force.version == 1

        await asyncio.to_thread(_edit, store, "roiface1", delta_qp=-30)
        edited = (await _changes(seen, 3))[2]
        assert edited.kind == ChangeKind.EDITED
        assert edited.in_force is not None and edited.in_force.settings.delta_qp == -6
        assert edited.pending is not None and edited.pending.settings.delta_qp == -30

        await asyncio.to_thread(store.delete, "roiface1")
        deleted = (await _changes(seen, 4))[3]
        assert (deleted.kind, deleted.in_force, deleted.pending) == (ChangeKind.DELETED, None, None)

        # Delete and re-create between two looks still counts as a change: version ids are
        # never reused, so the new version 1 differs from the old one.
        await asyncio.to_thread(_create, store, "face2")
        first = (await _changes(seen, 5))[4]
        assert first.kind == ChangeKind.CREATED
        await store.stop_watching()
        await asyncio.to_thread(store.delete, "roiface2")
        await asyncio.to_thread(_create, store, "face2")
        await store.start_watching()  # a fresh watcher takes the present as its baseline
        assert await store.refresh() == []
    finally:
        await store.stop_watching()
    unsubscribe()
    await asyncio.to_thread(_create, store, "face3")
    assert len(seen) == 5  # unsubscribed, and no watcher running


async def test_a_delete_and_recreate_between_two_looks_is_a_change(
    store: TemplateStore,
) -> None:
    await store.start_watching()
    await store.stop_watching()  # keep the baseline, but no watcher racing the refresh below
    seen: list[TemplateChange] = []
    store.subscribe(seen.append)
    await asyncio.to_thread(_create, store, "face2")
    [first] = await store.refresh()
    await asyncio.to_thread(store.delete, "roiface2")
    await asyncio.to_thread(_create, store, "face2")
    [recreated] = await store.refresh()
    assert recreated.kind == ChangeKind.EDITED
    assert first.pending is not None and recreated.pending is not None
    assert recreated.pending.version == first.pending.version == 1
    assert recreated.pending.id != first.pending.id
    assert seen == [first, recreated]


async def test_a_failing_subscriber_does_not_stop_the_others(
    store: TemplateStore,
) -> None:
    seen: list[str] = []

    def broken(change: TemplateChange) -> None:
        raise RuntimeError("subscriber bug")

    store.subscribe(broken)
    store.subscribe(lambda change: seen.append(change.name))
    await store.start_watching()
    try:
        await asyncio.to_thread(_create, store, "face1")
        await store.refresh()
    finally:
        await store.stop_watching()
    assert seen == ["roiface1"]


async def test_refresh_needs_the_watcher(store: TemplateStore) -> None:
    with pytest.raises(RuntimeError, match="start_watching"):
        await store.refresh()

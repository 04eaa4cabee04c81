"""ROI templates on SQLAlchemy 2 (SQLite file by default, PostgreSQL for several relay nodes).

A template is a name and its versions. A version comes into force at its ``effective_at``
(saved + activation delay); the version in force is the newest one whose ``effective_at`` has
passed, so activation needs no write and every node sharing the database agrees on it. An
edit makes a new pending version on top of the newest one and drops any older pending one:
a template has at most one version in force and one pending. Delete is immediate.

The relay asks :meth:`TemplateStore.in_force` and subscribes to :class:`TemplateChange`
events, which a watcher task emits on create/edit/delete here, when a pending version comes
into force (a timer), and for changes other nodes made (a periodic poll).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from app.database import migrate, normalize_database_url, open_engine, writer
from app.templates.rules import (
    PatchBase,
    TemplateCreate,
    TemplateSettings,
    is_stored_name,
)
from app.templates.schema import (
    MIGRATIONS,
    SETTINGS_COLUMNS,
    schema_version_table,
    templates_table,
    versions_table,
)

log = logging.getLogger("app.templates")

Clock = Callable[[], datetime]
Status = Literal["pending", "active"]


def utc_now() -> datetime:
    return datetime.now(UTC)


class TemplateNotFoundError(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no ROI template named {name!r}")
        self.name = name


class TemplateExistsError(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"an ROI template named {name!r} already exists")
        self.name = name


@dataclass(frozen=True, slots=True)
class TemplateVersion:
    """One saved version of a template: what the relay applies while it is in force."""

    name: str  # the stored name, e.g. "roiface1"
    version: int  # 1, 2, ... per template
    id: int  # unique over all templates and versions, never reused
    settings: TemplateSettings
    saved_at: datetime
    effective_at: datetime


@dataclass(frozen=True, slots=True)
class TemplateState:
    """A template as of ``as_of``: the version in force (if any) and the one pending (if any).

    At least one of the two is set. A template never yet in force has only ``pending``.
    """

    name: str
    created_at: datetime
    updated_at: datetime
    in_force: TemplateVersion | None
    pending: TemplateVersion | None
    as_of: datetime

    @property
    def status(self) -> Status:
        return "active" if self.in_force is not None else "pending"

    @property
    def shown(self) -> TemplateVersion:
        """The version that represents the template: in force, else the first pending one."""
        shown = self.in_force or self.pending
        assert shown is not None, "a template always has a version"
        return shown

    @property
    def next_effective_at(self) -> datetime | None:
        return self.pending.effective_at if self.pending is not None else None


class ChangeKind(StrEnum):
    CREATED = "created"
    EDITED = "edited"  # a new pending version, or a pending edit withdrawn
    ACTIVATED = "activated"  # a pending version came into force
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class TemplateChange:
    name: str
    kind: ChangeKind
    in_force: TemplateVersion | None
    pending: TemplateVersion | None


ChangeCallback = Callable[[TemplateChange], object]


class TemplateStore:
    """Thread-safe store of ROI templates, with activation and change notification.

    ``activation_delay`` is the seconds from a save until the saved version is in force.
    ``clock`` returns aware datetimes (injectable for tests). The sync methods do blocking
    database I/O: call them from worker threads (FastAPI sync endpoints, ``asyncio.to_thread``)
    or use the ``*_async`` variants from the event loop.
    """

    def __init__(
        self,
        url: str,
        activation_delay: float,
        clock: Clock = utc_now,
        poll_interval: float = 2.0,
    ) -> None:
        if activation_delay < 0:
            raise ValueError("activation_delay must be >= 0 seconds")
        if poll_interval <= 0:
            raise ValueError("poll_interval must be > 0 seconds")
        self.url = normalize_database_url(url)
        self.activation_delay = timedelta(seconds=activation_delay)
        self.poll_interval = poll_interval
        self._clock = clock
        self._engine = open_engine(self.url)
        self._writer = writer(self._engine)
        migrate(self._writer, "template", MIGRATIONS, schema_version_table)
        self._subscribers: list[ChangeCallback] = []
        self._watch_task: asyncio.Task[None] | None = None
        self._watch_loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._scan_lock: asyncio.Lock | None = None
        self._known: dict[str, tuple[int | None, int | None]] | None = None
        self._next_due: datetime | None = None

    # -- schema ----------------------------------------------------------------------------

    def schema_version(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(select(schema_version_table.c.version)).scalar_one())

    def close(self) -> None:
        self._engine.dispose()

    # -- time ------------------------------------------------------------------------------

    def now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the template store's clock must return aware datetimes")
        return now

    # -- reads -----------------------------------------------------------------------------

    def list(self, now: datetime | None = None) -> list[TemplateState]:
        """Every template, by name."""
        as_of = now or self.now()
        with self._engine.connect() as conn:
            return list(self._load(conn, None, as_of))

    def find(self, name: str, now: datetime | None = None) -> TemplateState | None:
        as_of = now or self.now()
        if not is_stored_name(name):
            # Cannot exist; and arbitrary text (a NUL byte, say) never reaches the database.
            return None
        with self._engine.connect() as conn:
            return next(iter(self._load(conn, name, as_of)), None)

    def get(self, name: str, now: datetime | None = None) -> TemplateState:
        state = self.find(name, now)
        if state is None:
            raise TemplateNotFoundError(name)
        return state

    def in_force(self, name: str, now: datetime | None = None) -> TemplateVersion | None:
        """The version of template ``name`` (stored name) the relay applies now, if any."""
        state = self.find(name, now)
        return state.in_force if state is not None else None

    def pending(self, name: str, now: datetime | None = None) -> TemplateVersion | None:
        """The saved version of ``name`` waiting for its ``effective_at``, if any."""
        state = self.find(name, now)
        return state.pending if state is not None else None

    async def find_async(self, name: str) -> TemplateState | None:
        return await asyncio.to_thread(self.find, name)

    async def in_force_async(self, name: str) -> TemplateVersion | None:
        return await asyncio.to_thread(self.in_force, name)

    # -- writes ----------------------------------------------------------------------------

    def create(self, spec: TemplateCreate) -> TemplateState:
        name = spec.stored_name
        now = self.now()
        try:
            with self._writer.begin() as conn:
                conn.execute(
                    insert(templates_table).values(name=name, created_at=now, updated_at=now)
                )
                self._insert_version(conn, name, 1, spec.settings(), now)
                state = next(iter(self._load(conn, name, now)))
        except IntegrityError as exc:
            raise TemplateExistsError(name) from exc
        self._poke()
        return state

    def edit(self, name: str, patch: PatchBase) -> TemplateState:
        """Save ``patch`` on top of the newest version; it comes into force after the delay.

        Whatever was in force stays in force until then. A patch that changes nothing is a
        no-op; one that brings the fields back to the version in force withdraws the pending
        edit.
        """
        now = self.now()
        if not is_stored_name(name):
            raise TemplateNotFoundError(name)
        with self._writer.begin() as conn:
            locked = conn.execute(
                select(templates_table.c.name)
                .where(templates_table.c.name == name)
                .with_for_update()
            ).first()
            if locked is None:
                raise TemplateNotFoundError(name)
            before = next(iter(self._load(conn, name, now)))
            newest = before.pending or before.in_force
            assert newest is not None
            wanted = patch.apply(newest.settings)
            if wanted == newest.settings:
                return before
            keep = before.in_force.id if before.in_force is not None else None
            # Older versions are history nobody reads, and a superseded pending version must
            # never come into force.
            conn.execute(
                delete(versions_table).where(
                    versions_table.c.template_name == name, versions_table.c.id != keep
                )
                if keep is not None
                else delete(versions_table).where(versions_table.c.template_name == name)
            )
            if before.in_force is None or wanted != before.in_force.settings:
                last = conn.execute(
                    select(func.max(versions_table.c.version)).where(
                        versions_table.c.template_name == name
                    )
                ).scalar_one_or_none()
                number = max(last or 0, newest.version) + 1
                self._insert_version(conn, name, number, wanted, now)
            conn.execute(
                update(templates_table).where(templates_table.c.name == name).values(updated_at=now)
            )
            state = next(iter(self._load(conn, name, now)))
        self._poke()
        return state

    def delete(self, name: str) -> None:
        if not is_stored_name(name):
            raise TemplateNotFoundError(name)
        with self._writer.begin() as conn:
            conn.execute(delete(versions_table).where(versions_table.c.template_name == name))
            gone = conn.execute(
                delete(templates_table).where(templates_table.c.name == name)
            ).rowcount
        if not gone:
            raise TemplateNotFoundError(name)
        self._poke()

    def _insert_version(
        self, conn: Connection, name: str, number: int, settings: TemplateSettings, now: datetime
    ) -> None:
        conn.execute(
            insert(versions_table).values(
                template_name=name,
                version=number,
                **settings.model_dump(),
                saved_at=now,
                effective_at=now + self.activation_delay,
            )
        )

    def _load(self, conn: Connection, name: str | None, as_of: datetime) -> Iterator[TemplateState]:
        query = (
            select(templates_table, versions_table)
            .join(versions_table, versions_table.c.template_name == templates_table.c.name)
            .order_by(templates_table.c.name, versions_table.c.version)
        )
        if name is not None:
            query = query.where(templates_table.c.name == name)
        rows = conn.execute(query).mappings().all()
        start = 0
        for end in range(1, len(rows) + 1):
            if end == len(rows) or rows[end]["name"] != rows[start]["name"]:
                yield _resolve(rows[start:end], as_of)
                start = end

    # -- change notification ---------------------------------------------------------------

    def subscribe(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback(change)`` on the watcher's event loop for every change.

        Changes are seen once :meth:`start_watching` runs. Returns the unsubscribe function.
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    async def start_watching(self) -> None:
        """Start the watcher task on the running loop (idempotent)."""
        if self._watch_task is not None and not self._watch_task.done():
            return
        self._watch_loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._scan_lock = asyncio.Lock()
        self._known = await asyncio.to_thread(self._fingerprint)
        self._watch_task = asyncio.create_task(self._watch(), name="roi-template-watcher")

    async def stop_watching(self) -> None:
        task, self._watch_task = self._watch_task, None
        self._watch_loop = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def refresh(self) -> builtins.list[TemplateChange]:
        """Compare the database with what the watcher last saw and notify the differences.

        The watcher calls this on every wake-up; tests with a fake clock call it directly.
        """
        if self._scan_lock is None or self._known is None:
            raise RuntimeError("call start_watching() first")
        async with self._scan_lock:
            states = await asyncio.to_thread(self.list)
            changes = list(_diff(self._known, states))
            self._known = {s.name: _ids(s) for s in states}
            self._next_due = _next_due(states)
            # Inside the lock, so that subscribers see changes in the order they were found.
            for change in changes:
                for callback in list(self._subscribers):
                    try:
                        callback(change)
                    except Exception:
                        log.exception("template change subscriber %r failed", callback)
        return changes

    def _fingerprint(self) -> dict[str, tuple[int | None, int | None]]:
        states = self.list()
        self._next_due = _next_due(states)
        return {s.name: _ids(s) for s in states}

    def _poke(self) -> None:
        loop, wake = self._watch_loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(wake.set)

    async def _watch(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            try:
                await self.refresh()
            except Exception:
                log.exception("reading the template database failed; retrying")
            timeout = self.poll_interval
            due = self._next_due
            if due is not None:
                # A hair past the due time, so the next scan sees the version in force.
                until_due = (due - self.now()).total_seconds() + 0.001
                timeout = min(timeout, max(until_due, 0.005))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)


def _resolve(rows: Sequence[RowMapping], as_of: datetime) -> TemplateState:
    """The state of one template from its joined rows, ascending by version."""
    versions = [
        TemplateVersion(
            name=row["name"],
            version=row["version"],
            id=row["id"],
            settings=TemplateSettings(**{field: row[field] for field in SETTINGS_COLUMNS}),
            saved_at=row["saved_at"],
            effective_at=row["effective_at"],
        )
        for row in rows
    ]
    in_force = None
    for candidate in versions:  # the newest version whose time has come wins
        if candidate.effective_at <= as_of:
            in_force = candidate
    newest = versions[-1]
    pending = newest if in_force is None or newest.version > in_force.version else None
    return TemplateState(
        name=newest.name,
        created_at=rows[0]["created_at"],
        updated_at=rows[0]["updated_at"],
        in_force=in_force,
        pending=pending,
        as_of=as_of,
    )


def _ids(state: TemplateState) -> tuple[int | None, int | None]:
    return (
        state.in_force.id if state.in_force is not None else None,
        state.pending.id if state.pending is not None else None,
    )


def _next_due(states: Iterable[TemplateState]) -> datetime | None:
    return min((s.next_effective_at for s in states if s.next_effective_at), default=None)


def _diff(
    known: dict[str, tuple[int | None, int | None]], states: Iterable[TemplateState]
) -> Iterator[TemplateChange]:
    seen: set[str] = set()
    for state in states:
        seen.add(state.name)
        before = known.get(state.name)
        now_ids = _ids(state)
        if before == now_ids:
            continue
        if before is None:
            kind = ChangeKind.CREATED
        elif before[0] != now_ids[0]:
            kind = ChangeKind.ACTIVATED
        else:
            kind = ChangeKind.EDITED
        yield TemplateChange(state.name, kind, state.in_force, state.pending)
    for name in known.keys() - seen:
        yield TemplateChange(name, ChangeKind.DELETED, None, None)

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
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Dialect, RowMapping, make_url
from sqlalchemy.exc import IntegrityError

from app.templates.rules import (
    PatchBase,
    TemplateCreate,
    TemplateSettings,
    is_stored_name,
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


class _UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC out, stored naive UTC (same on SQLite and PostgreSQL)."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


_metadata = MetaData()
_schema_version = Table(
    "roi_templates_schema",
    _metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
)
_templates = Table(
    "roi_templates",
    _metadata,
    Column("name", String(32), primary_key=True),
    Column("created_at", _UtcDateTime, nullable=False),
    Column("updated_at", _UtcDateTime, nullable=False),
)
_versions = Table(
    "roi_template_versions",
    _metadata,
    # AUTOINCREMENT on SQLite so that an id is never reused: the watcher tells a deleted and
    # re-created template apart by its version ids.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "template_name",
        String(32),
        ForeignKey("roi_templates.name", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("version", Integer, nullable=False),
    Column("description", Text, nullable=False),
    Column("model", String(32), nullable=False),
    Column("delta_qp", Integer, nullable=False),
    Column("max_regions", Integer, nullable=False),
    Column("bitrate_kbps", Integer, nullable=True),
    Column("saved_at", _UtcDateTime, nullable=False),
    Column("effective_at", _UtcDateTime, nullable=False),
    UniqueConstraint("template_name", "version"),
    sqlite_autoincrement=True,
)


# The version table has one column per settings field, by the same name.
SETTINGS_COLUMNS: tuple[str, ...] = tuple(TemplateSettings.model_fields)
assert set(SETTINGS_COLUMNS) <= set(_versions.c.keys()), "a settings field without a column"


def _migration_1(conn: Connection) -> None:
    _metadata.create_all(conn, tables=[_templates, _versions], checkfirst=True)


# Append only: migration N takes the schema from version N-1 to N, and must be idempotent
# (a crash between the DDL and the version bump reruns it).
_MIGRATIONS: tuple[Callable[[Connection], None], ...] = (_migration_1,)
SCHEMA_VERSION = len(_MIGRATIONS)

# Any constant works; it only has to be the same on every node sharing the database.
_PG_MIGRATION_LOCK = 0x524F4954  # "ROIT"


def normalize_database_url(url: str) -> str:
    """Route PostgreSQL URLs to psycopg 3, the driver the project installs."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


def _sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        raise ValueError(
            "an in-memory SQLite database is private to one connection; give a file path"
        )
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own transaction handling is off: the "begin" hook below issues BEGIN,
        # so that writers can take the write lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A deferred transaction that reads and then writes fails at once with SQLITE_BUSY
        # when another writer committed in between (WAL snapshots cannot be upgraded);
        # BEGIN IMMEDIATE waits for the write lock instead.
        immediate = conn.get_execution_options().get("roi_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


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
        backend = make_url(self.url).get_backend_name()
        if backend == "sqlite":
            self._engine = _sqlite_engine(self.url)
        else:
            self._engine = create_engine(self.url, pool_pre_ping=True)
        self._is_postgres = backend == "postgresql"
        self._writer = self._engine.execution_options(roi_write=True)
        self._migrate()
        self._subscribers: list[ChangeCallback] = []
        self._watch_task: asyncio.Task[None] | None = None
        self._watch_loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._scan_lock: asyncio.Lock | None = None
        self._known: dict[str, tuple[int | None, int | None]] | None = None
        self._next_due: datetime | None = None

    # -- schema ----------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self._writer.begin() as conn:
            if self._is_postgres:
                # Nodes starting together must not run the same DDL at once.
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
                )
            _metadata.create_all(conn, tables=[_schema_version], checkfirst=True)
            current = conn.execute(select(_schema_version.c.version)).scalar_one_or_none()
            if current is not None and current > SCHEMA_VERSION:
                raise RuntimeError(
                    f"the template database has schema version {current}, newer than this "
                    f"relay's {SCHEMA_VERSION}: upgrade the relay"
                )
            for number in range((current or 0) + 1, SCHEMA_VERSION + 1):
                _MIGRATIONS[number - 1](conn)
                log.info("template database migrated to schema version %d", number)
            if current is None:
                conn.execute(insert(_schema_version).values(id=1, version=SCHEMA_VERSION))
            elif current < SCHEMA_VERSION:
                conn.execute(update(_schema_version).values(version=SCHEMA_VERSION))

    def schema_version(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(select(_schema_version.c.version)).scalar_one())

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
                conn.execute(insert(_templates).values(name=name, created_at=now, updated_at=now))
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
                select(_templates.c.name).where(_templates.c.name == name).with_for_update()
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
                delete(_versions).where(_versions.c.template_name == name, _versions.c.id != keep)
                if keep is not None
                else delete(_versions).where(_versions.c.template_name == name)
            )
            if before.in_force is None or wanted != before.in_force.settings:
                last = conn.execute(
                    select(func.max(_versions.c.version)).where(_versions.c.template_name == name)
                ).scalar_one_or_none()
                number = max(last or 0, newest.version) + 1
                self._insert_version(conn, name, number, wanted, now)
            conn.execute(update(_templates).where(_templates.c.name == name).values(updated_at=now))
            state = next(iter(self._load(conn, name, now)))
        self._poke()
        return state

    def delete(self, name: str) -> None:
        if not is_stored_name(name):
            raise TemplateNotFoundError(name)
        with self._writer.begin() as conn:
            conn.execute(delete(_versions).where(_versions.c.template_name == name))
            gone = conn.execute(delete(_templates).where(_templates.c.name == name)).rowcount
        if not gone:
            raise TemplateNotFoundError(name)
        self._poke()

    def _insert_version(
        self, conn: Connection, name: str, number: int, settings: TemplateSettings, now: datetime
    ) -> None:
        conn.execute(
            insert(_versions).values(
                template_name=name,
                version=number,
                **settings.model_dump(),
                saved_at=now,
                effective_at=now + self.activation_delay,
            )
        )

    def _load(self, conn: Connection, name: str | None, as_of: datetime) -> Iterator[TemplateState]:
        query = (
            select(_templates, _versions)
            .join(_versions, _versions.c.template_name == _templates.c.name)
            .order_by(_templates.c.name, _versions.c.version)
        )
        if name is not None:
            query = query.where(_templates.c.name == name)
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

"""The relay's database: one SQLAlchemy engine per URL (a SQLite file by default, PostgreSQL
for several nodes), aware-UTC timestamps, and append-only schema migrations.

Each part of the relay that keeps state (the templates today) owns its tables and migration
list and calls :func:`migrate` with them; this module knows no tables.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    Table,
    TypeDecorator,
    create_engine,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Dialect, make_url

log = logging.getLogger("app.database")

Migration = Callable[[Connection], None]


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC out, stored naive UTC (same on SQLite and PostgreSQL)."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


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


def open_engine(url: str) -> Engine:
    """An engine for ``url`` (already normalised): SQLite with WAL and write locks taken up
    front, anything else with connections checked before use."""
    if make_url(url).get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    return create_engine(url, pool_pre_ping=True)


def writer(engine: Engine) -> Engine:
    """The same engine for transactions that write (on SQLite they take the lock at BEGIN)."""
    return engine.execution_options(roi_write=True)


# Any constant works; it only has to be the same on every node sharing the database.
_PG_MIGRATION_LOCK = 0x524F4954  # "ROIT"


def migrate(
    engine: Engine, what: str, migrations: Sequence[Migration], version_table: Table
) -> None:
    """Bring ``what``'s tables to ``len(migrations)``, recording it in ``version_table``.

    Migration N takes the schema from version N-1 to N and must be idempotent (a crash between
    the DDL and the version bump reruns it). ``version_table`` has columns ``id`` and
    ``version``.
    """
    latest = len(migrations)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Nodes starting together must not run the same DDL at once.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        version_table.create(conn, checkfirst=True)
        current = conn.execute(select(version_table.c.version)).scalar_one_or_none()
        if current is not None and current > latest:
            raise RuntimeError(
                f"the {what} database has schema version {current}, newer than this "
                f"relay's {latest}: upgrade the relay"
            )
        for number in range((current or 0) + 1, latest + 1):
            migrations[number - 1](conn)
            log.info("%s database migrated to schema version %d", what, number)
        if current is None:
            conn.execute(insert(version_table).values(id=1, version=latest))
        elif current < latest:
            conn.execute(update(version_table).values(version=latest))

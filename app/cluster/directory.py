"""Which node holds which live stream: rows in the database the templates already use.

Blocking calls (SQLAlchemy); :mod:`app.cluster.node` runs them in a thread. The database is
the coordinator: a stream's primary key refuses a second holder, a write transaction
(``BEGIN IMMEDIATE`` on SQLite, row locks on PostgreSQL) makes "take over a dead node's row"
atomic, and a node is alive while its heartbeat is younger than the expiry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Select,
    and_,
    create_engine,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from app.cluster.schema import MIGRATIONS, nodes_table, schema_version_table, streams_table
from app.database import migrate, normalize_database_url, open_engine, writer
from app.hub import StreamKey

log = logging.getLogger("app.cluster")


@dataclass(frozen=True, slots=True)
class NodeAddress:
    node_id: str
    http_url: str  # e.g. http://10.0.0.5:8080 (no trailing slash)
    rtmp_url: str  # e.g. rtmp://10.0.0.5:1935


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    key: StreamKey
    node: NodeAddress
    started_at: datetime
    heartbeat_at: datetime | None  # the holder's last heartbeat

    def alive(self, expiry: timedelta) -> bool:
        return self.heartbeat_at is not None and self.heartbeat_at >= _now() - expiry


def _now() -> datetime:
    return datetime.now(UTC)


class StreamDirectory:
    """The shared directory as seen by one node (``me``)."""

    def __init__(self, url: str, me: NodeAddress, expiry_seconds: float) -> None:
        self.me = me
        self.expiry = timedelta(seconds=expiry_seconds)
        url = normalize_database_url(url)
        if make_url(url).get_backend_name() == "postgresql":
            # A stopped server must fail a heartbeat in seconds, not hang the thread.
            self.engine: Engine = create_engine(
                url, pool_pre_ping=True, connect_args={"connect_timeout": 2}
            )
        else:
            self.engine = open_engine(url)
        self._writer = writer(self.engine)

    def migrate(self) -> None:
        migrate(self.engine, "cluster", MIGRATIONS, schema_version_table)

    def close(self) -> None:
        self.engine.dispose()

    def _alive_since(self) -> datetime:
        return _now() - self.expiry

    def heartbeat(self) -> list[DirectoryEntry]:
        """Marks this node alive (registering it if needed), deletes dead nodes and their
        streams, and answers every live stream of the cluster."""
        now = _now()
        with self._writer.begin() as conn:
            updated = conn.execute(
                update(nodes_table)
                .where(nodes_table.c.node_id == self.me.node_id)
                .values(heartbeat_at=now, http_url=self.me.http_url, rtmp_url=self.me.rtmp_url)
            ).rowcount
            if not updated:
                conn.execute(
                    insert(nodes_table).values(
                        node_id=self.me.node_id,
                        http_url=self.me.http_url,
                        rtmp_url=self.me.rtmp_url,
                        started_at=now,
                        heartbeat_at=now,
                    )
                )
            dead = select(nodes_table.c.node_id).where(
                nodes_table.c.heartbeat_at < self._alive_since()
            )
            gone = conn.execute(delete(streams_table).where(streams_table.c.node_id.in_(dead)))
            if gone.rowcount:
                log.info("directory: %d stream(s) of dead nodes expired", gone.rowcount)
            conn.execute(
                delete(nodes_table).where(nodes_table.c.heartbeat_at < self._alive_since())
            )
        return self.entries()

    def claim(self, key: StreamKey) -> DirectoryEntry | None:
        """Registers ``key`` as held here; None on success, else the live holder's entry.

        A row left by a dead node (or by this node) is taken over in the same transaction.
        """
        with self._writer.begin() as conn:
            holder = self._lookup(conn, key, alive_only=False)
            if holder is not None:
                if holder.node.node_id != self.me.node_id and self._is_alive(conn, holder):
                    return holder
                conn.execute(delete(streams_table).where(self._key_is(key)))
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(streams_table).values(
                            app=key.app, name=key.name, node_id=self.me.node_id, started_at=_now()
                        )
                    )
            except IntegrityError:
                # Another node inserted between our read and our write (PostgreSQL's
                # unique index decides; SQLite's write lock makes this unreachable there).
                return self._lookup(conn, key, alive_only=False)
        return None

    def release(self, key: StreamKey) -> None:
        with self._writer.begin() as conn:
            conn.execute(
                delete(streams_table).where(
                    self._key_is(key), streams_table.c.node_id == self.me.node_id
                )
            )

    def leave(self) -> None:
        """This node stops: its streams and its row go (others need not wait for expiry)."""
        with self._writer.begin() as conn:
            conn.execute(delete(streams_table).where(streams_table.c.node_id == self.me.node_id))
            conn.execute(delete(nodes_table).where(nodes_table.c.node_id == self.me.node_id))

    def lookup(self, key: StreamKey) -> DirectoryEntry | None:
        with self.engine.connect() as conn:
            return self._lookup(conn, key, alive_only=True)

    def entries(self) -> list[DirectoryEntry]:
        """Every stream held by a live node."""
        query = self._joined().where(nodes_table.c.heartbeat_at >= self._alive_since())
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(streams_table.c.app, streams_table.c.name))
            return [self._entry(row) for row in rows]

    def nodes(self) -> list[NodeAddress]:
        query = select(nodes_table).where(nodes_table.c.heartbeat_at >= self._alive_since())
        with self.engine.connect() as conn:
            return [
                NodeAddress(r.node_id, r.http_url, r.rtmp_url)
                for r in conn.execute(query.order_by(nodes_table.c.node_id))
            ]

    # --------------------------------------------------------------- helpers

    @staticmethod
    def _key_is(key: StreamKey) -> ColumnElement[bool]:
        return and_(streams_table.c.app == key.app, streams_table.c.name == key.name)

    @staticmethod
    def _joined() -> Select[Any]:
        return select(
            streams_table.c.app,
            streams_table.c.name,
            streams_table.c.started_at,
            streams_table.c.node_id,
            nodes_table.c.http_url,
            nodes_table.c.rtmp_url,
            nodes_table.c.heartbeat_at,
        ).select_from(
            streams_table.outerjoin(nodes_table, streams_table.c.node_id == nodes_table.c.node_id)
        )

    @staticmethod
    def _entry(row: Row[Any]) -> DirectoryEntry:
        return DirectoryEntry(
            StreamKey(row.app, row.name),
            NodeAddress(row.node_id, row.http_url or "", row.rtmp_url or ""),
            row.started_at,
            row.heartbeat_at,
        )

    def _lookup(
        self, conn: Connection, key: StreamKey, *, alive_only: bool
    ) -> DirectoryEntry | None:
        query = self._joined().where(self._key_is(key))
        if alive_only:
            query = query.where(nodes_table.c.heartbeat_at >= self._alive_since())
        row = conn.execute(query).first()
        return None if row is None else self._entry(row)

    def _is_alive(self, conn: Connection, entry: DirectoryEntry) -> bool:
        beat = conn.execute(
            select(nodes_table.c.heartbeat_at).where(nodes_table.c.node_id == entry.node.node_id)
        ).scalar_one_or_none()
        return beat is not None and beat >= self._alive_since()


__all__ = ["DirectoryEntry", "NodeAddress", "StreamDirectory"]

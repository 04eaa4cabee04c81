"""The stream directory's tables and migrations (the engine and runner are app/database.py's).

A stream row's primary key is its ``app/name``: the database's unique constraint is what
refuses a second publisher of the same stream on any node. A node's liveness is its row's
``heartbeat_at``; streams of a node whose heartbeat is older than the expiry are dead.
"""

from __future__ import annotations

from sqlalchemy import Column, Connection, Integer, MetaData, String, Table

from app.database import Migration, UtcDateTime

metadata = MetaData()
schema_version_table = Table(
    "roi_cluster_schema",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
)
nodes_table = Table(
    "roi_cluster_nodes",
    metadata,
    Column("node_id", String(128), primary_key=True),
    Column("http_url", String(256), nullable=False),
    Column("rtmp_url", String(256), nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("heartbeat_at", UtcDateTime, nullable=False, index=True),
)
streams_table = Table(
    "roi_cluster_streams",
    metadata,
    Column("app", String(128), primary_key=True),
    Column("name", String(256), primary_key=True),
    Column("node_id", String(128), nullable=False, index=True),
    Column("started_at", UtcDateTime, nullable=False),
)


def _migration_1(conn: Connection) -> None:
    metadata.create_all(conn, tables=[nodes_table, streams_table], checkfirst=True)


# Append only (see app.database.migrate).
MIGRATIONS: tuple[Migration, ...] = (_migration_1,)

"""The template tables and their migrations (the engine and migration runner are
app/database.py's)."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Connection,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from app.database import Migration, UtcDateTime
from app.templates.rules import TemplateSettings

metadata = MetaData()
schema_version_table = Table(
    "roi_templates_schema",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
)
templates_table = Table(
    "roi_templates",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)
versions_table = Table(
    "roi_template_versions",
    metadata,
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
    Column("saved_at", UtcDateTime, nullable=False),
    Column("effective_at", UtcDateTime, nullable=False),
    UniqueConstraint("template_name", "version"),
    sqlite_autoincrement=True,
)

# The version table has one column per settings field, by the same name.
SETTINGS_COLUMNS: tuple[str, ...] = tuple(TemplateSettings.model_fields)
assert set(SETTINGS_COLUMNS) <= set(versions_table.c.keys()), "a settings field without a column"


def _migration_1(conn: Connection) -> None:
    metadata.create_all(conn, tables=[templates_table, versions_table], checkfirst=True)


# Append only (see app.database.migrate).
MIGRATIONS: tuple[Migration, ...] = (_migration_1,)
SCHEMA_VERSION = len(MIGRATIONS)

"""Fixtures for the ROI template tests: databases, a settable clock, an app, a live server."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from app.api.security import bearer_auth
from app.api.templates import document_models, models_router, mount_console, templates_router
from app.database import normalize_database_url
from app.roi.registry import ModelCatalog
from app.templates.store import TemplateStore

POSTGRES_ENV = "ROI_RELAY_TEST_POSTGRES_URL"


class FakeClock:
    """A clock that stands still until told to move."""

    def __init__(self, start: datetime = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@contextlib.contextmanager
def fresh_postgres_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server at ``admin_url``, dropped afterwards."""
    import psycopg

    url = make_url(normalize_database_url(admin_url))
    name = f"roi_test_{uuid.uuid4().hex[:12]}"
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each store test runs on a real SQLite file and, when one is given, on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'roi-relay.db'}"
        return
    admin_url = os.environ.get(POSTGRES_ENV)
    if not admin_url:
        pytest.skip(f"{POSTGRES_ENV} is not set (see .ci/postgres.sh)")
    with fresh_postgres_database(admin_url) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'roi-relay.db'}"


def build_app(
    store: TemplateStore, api_token: str = "", catalog: ModelCatalog | None = None
) -> FastAPI:
    """What the composition root does with this package, and nothing else."""
    app = FastAPI(title="roi-relay templates (test)")
    models = catalog or ModelCatalog()
    app.include_router(templates_router(store, models, [bearer_auth(api_token)]))
    app.include_router(models_router(models, [bearer_auth(api_token)]))
    document_models(app, models)
    mount_console(app)
    return app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """``app`` on real uvicorn in a thread; yields its base URL and stops it afterwards."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.nodes import ROOT, Node


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", ["sqlite", "postgres"], scope="module")


@pytest.fixture(scope="module")
def database_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'cluster.db'}"
        return
    url = os.environ.get("ROI_RELAY_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("ROI_RELAY_TEST_POSTGRES_URL is not set (.ci/postgres.sh starts one)")
    from sqlalchemy import create_engine, text

    from app.database import normalize_database_url

    # A clean directory: earlier runs' rows would only expire, but start from nothing.
    engine = create_engine(normalize_database_url(url))
    with engine.begin() as conn:
        for table in ("roi_cluster_streams", "roi_cluster_nodes"):
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        conn.execute(text("DROP TABLE IF EXISTS roi_cluster_schema"))
    engine.dispose()
    yield url


@pytest.fixture(scope="module")
def cluster(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Node]]:
    """Three nodes, A, B and C (redirect mode), on one database."""
    tmp = tmp_path_factory.mktemp("nodes")
    nodes = {name: Node(name, tmp, database_url) for name in ("A", "B")}
    # C answers HTTP players with a redirect to the holder; RTMP players it still pulls for.
    nodes["C"] = Node("C", tmp, database_url, ROI_RELAY_EDGE_MODE="redirect")
    try:
        for node in nodes.values():
            node.wait_ready(nodes=1)
        nodes["A"].wait_ready(nodes=3)
        yield nodes
    finally:
        for node in nodes.values():
            node.stop()


def pg_stop() -> None:
    """Stops the .ci/postgres.sh server, keeping its data (``pg_start`` brings it back)."""
    pgdir = os.environ.get("ROI_RELAY_PG_DIR", "/tmp/roi-relay-pg")
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    assert binaries, "no PostgreSQL server binaries"
    command = [str(binaries[-1] / "pg_ctl"), "-D", pgdir, "-w", "-m", "fast", "stop"]
    if os.getuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    subprocess.run(command, check=True, capture_output=True, timeout=60)


def pg_start() -> None:
    subprocess.run(
        [str(ROOT / ".ci" / "postgres.sh")], check=True, capture_output=True, timeout=120
    )

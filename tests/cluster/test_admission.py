"""The one-publisher-per-stream rule across nodes, decided by the directory's unique key at
admission: two ClusterNodes in one process on one real SQLite file, heartbeats far apart so
that neither node's snapshot knows what the other just published."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.cluster import node as node_module
from app.cluster.directory import NodeAddress
from app.cluster.node import ClusterNode
from app.config import Settings
from app.hub import Hub, StreamKey

KEY = StreamKey("live", "cam")


def _node(name: str, database: Path) -> ClusterNode:
    settings = Settings(
        database_url=f"sqlite:///{database}",
        cluster=True,
        heartbeat_seconds=3600,  # only the start-up beat: snapshots stay as they were
        node_expiry_seconds=3600,
    )
    address = NodeAddress(name, f"http://{name}.invalid", f"rtmp://{name}.invalid")
    return ClusterNode(Hub(), settings, address)


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[tuple[ClusterNode, ClusterNode]]:
    a, b = _node("A", tmp_path / "cluster.db"), _node("B", tmp_path / "cluster.db")
    await a.start()
    await b.start()
    try:
        yield a, b
    finally:
        await a.stop()
        await b.stop()


def _holders(node: ClusterNode) -> list[str]:
    return [e.node.node_id for e in node.directory.entries() if e.key == KEY]


async def test_a_publish_admitted_on_one_node_is_refused_on_another_before_any_heartbeat(
    nodes: tuple[ClusterNode, ClusterNode],
) -> None:
    a, b = nodes
    assert await a.admit_publish(KEY) is None
    stream = a.hub.open_publisher(KEY, {}, "127.0.0.1:1")
    assert KEY not in b.snapshot  # B has not read the directory since
    refusal = await b.admit_publish(KEY)
    assert refusal == "stream live/cam already has a publisher on node A"
    assert b.refused == {"busy-elsewhere": 1}
    assert _holders(a) == ["A"]

    stream.publisher.close()
    await asyncio.sleep(0.2)  # the release runs in a thread
    assert _holders(a) == []
    assert await b.admit_publish(KEY) is None
    assert _holders(a) == ["B"]


async def test_simultaneous_publishes_on_two_nodes_admit_exactly_one(
    nodes: tuple[ClusterNode, ClusterNode],
) -> None:
    a, b = nodes
    answers = await asyncio.gather(a.admit_publish(KEY), b.admit_publish(KEY))
    admitted = [n for n, answer in zip("AB", answers, strict=True) if answer is None]
    assert len(admitted) == 1
    refused = next(answer for answer in answers if answer is not None)
    assert refused.endswith(f"on node {admitted[0]}")
    assert _holders(a) == admitted


async def test_a_claim_whose_publisher_never_opened_is_given_back(
    nodes: tuple[ClusterNode, ClusterNode], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = nodes
    monkeypatch.setattr(node_module, "UNUSED_CLAIM_SECONDS", 0.2)
    assert await a.admit_publish(KEY) is None  # and the publisher goes away unanswered
    assert _holders(a) == ["A"]
    await asyncio.sleep(0.6)
    assert _holders(a) == []
    assert await b.admit_publish(KEY) is None


async def test_a_takeover_on_the_same_node_keeps_the_claim(
    nodes: tuple[ClusterNode, ClusterNode], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = nodes
    monkeypatch.setattr(node_module, "UNUSED_CLAIM_SECONDS", 0.2)
    assert await a.admit_publish(KEY) is None
    a.hub.open_publisher(KEY, {}, "127.0.0.1:1")
    # A second publish here passes the directory (this node holds the key); the hub decides.
    assert await a.admit_publish(KEY) is None
    await asyncio.sleep(0.6)  # the second claim is never "used": the row must stay
    assert _holders(a) == ["A"]

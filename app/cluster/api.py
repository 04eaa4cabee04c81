"""``/api/v1/cluster``: the stream directory and the live nodes, cluster-wide."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Protocol

from fastapi import APIRouter, params
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError

from app.api.security import UNAUTHORIZED_RESPONSE
from app.cluster.node import ClusterNode
from app.hub import Hub


class _HasNode(Protocol):
    hub: Hub
    node: ClusterNode | None


class ClusterStream(BaseModel):
    app: str
    stream: str
    node_id: str = Field(description="The node holding the stream (its publisher is there)")
    http_url: str = Field(description="That node's internal HTTP address")
    rtmp_url: str = Field(description="That node's internal RTMP address")
    started_at: datetime
    here: bool = Field(description="Held by the node that answered")
    pulled_here: bool = Field(description="Served by the answering node through an edge pull")


class ClusterStreams(BaseModel):
    streams: list[ClusterStream]
    directory_available: bool = Field(description="False while the database is unreachable")


class ClusterNodeInfo(BaseModel):
    node_id: str
    http_url: str
    rtmp_url: str


class ClusterNodes(BaseModel):
    nodes: list[ClusterNodeInfo]
    directory_available: bool


def cluster_router(cluster: _HasNode, dependencies: list[params.Depends]) -> APIRouter:
    router = APIRouter(
        prefix="/api/v1/cluster",
        tags=["cluster"],
        dependencies=dependencies,
        responses=UNAUTHORIZED_RESPONSE if dependencies else None,
    )

    def node() -> ClusterNode:
        assert cluster.node is not None, "the cluster starts before HTTP serves"
        return cluster.node

    @router.get("/streams", summary="Every live stream of the cluster with its node")
    async def streams() -> ClusterStreams:
        me = node()
        entries = await me.entries()
        return ClusterStreams(
            streams=[
                ClusterStream(
                    app=e.key.app,
                    stream=e.key.name,
                    node_id=e.node.node_id,
                    http_url=e.node.http_url,
                    rtmp_url=e.node.rtmp_url,
                    started_at=e.started_at,
                    here=e.node.node_id == me.me.node_id,
                    pulled_here=e.node.node_id != me.me.node_id
                    and cluster.hub.get(e.key) is not None,
                )
                for e in entries
            ],
            directory_available=me.available,
        )

    @router.get("/nodes", summary="The live nodes (workers) of the cluster")
    async def nodes() -> ClusterNodes:
        me = node()
        found: list[Any]
        try:
            found = await asyncio.to_thread(me.directory.nodes)
        except SQLAlchemyError:
            found = []
        return ClusterNodes(
            nodes=[
                ClusterNodeInfo(node_id=n.node_id, http_url=n.http_url, rtmp_url=n.rtmp_url)
                for n in found
            ],
            directory_available=me.available,
        )

    return router


__all__ = ["cluster_router"]

"""The cluster's parts put together for the composition root (app/server.py)."""

from __future__ import annotations

import socket

from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Receive, Scope, Send

from app.cluster.directory import NodeAddress
from app.cluster.edge import EdgePuller
from app.cluster.http import ClusterGateway
from app.cluster.metrics import ClusterCollector
from app.cluster.node import ClusterNode, advertised_host, default_node_id
from app.config import Settings
from app.hub import Hub, Stream
from app.rtmp.server import RtmpServer


def listening_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        # Several worker processes on one port: the kernel spreads connections over them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class Cluster:
    """A node of the cluster: directory, heartbeats, edge pulls, the HTTP gateway and (for
    ``--workers`` children) this process's own internal listeners."""

    def __init__(self, hub: Hub, settings: Settings) -> None:
        self.hub = hub
        self.settings = settings
        self.node: ClusterNode | None = None
        self.puller: EdgePuller | None = None
        self.gateway: ClusterGateway | None = None
        self._rtmp: RtmpServer | None = None
        self._internal_rtmp: RtmpServer | None = None

    def is_pulled(self, stream: Stream) -> bool:
        return self.node is not None and stream.key in self.node.pulled

    def wire(self, app: ASGIApp, rtmp: RtmpServer, registry: CollectorRegistry) -> ASGIApp:
        self._rtmp = rtmp
        self._app = app
        self._registry = registry
        return self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # ASGI in front of the relay's app; an object with async __call__, which is how
        # uvicorn tells ASGI 3 from ASGI 2.
        assert self.gateway is not None, "the cluster starts before HTTP serves"
        await self.gateway(scope, receive, send)

    async def start(self, rtmp_port: int, http_port: int) -> list[socket.socket]:
        """Starts the node once the public ports are known; answers extra HTTP sockets."""
        settings = self.settings
        sockets: list[socket.socket] = []
        host = advertised_host(settings)
        if settings.internal_host:
            counters = self._rtmp.counters if self._rtmp else None
            internal = RtmpServer(self.hub, settings, counters=counters)
            await internal.start(settings.internal_host, 0)
            self._internal_rtmp = internal
            rtmp_port = internal.port
            sock = listening_socket(settings.internal_host, 0)
            http_port = sock.getsockname()[1]
            sockets.append(sock)
        http_url = settings.node_url.rstrip("/") or f"http://{host}:{http_port}"
        rtmp_url = settings.node_rtmp_url.rstrip("/") or f"rtmp://{host}:{rtmp_port}"
        address = NodeAddress(settings.node_id or default_node_id(), http_url, rtmp_url)
        self.node = node = ClusterNode(self.hub, settings, address)
        self.puller = EdgePuller(self.hub, node)
        self.gateway = ClusterGateway(self.hub, node, self.puller, self._app)
        for server in (self._rtmp, self._internal_rtmp):
            if server is not None:
                server.publish_admission = node.admit_publish
                server.remote_stream = self.puller.stream
        self._registry.register(ClusterCollector(node, self.puller))
        await node.start()
        return sockets

    async def stop(self) -> None:
        if self._internal_rtmp is not None:
            await self._internal_rtmp.close()
        if self.puller is not None:
            await self.puller.close()
        if self.gateway is not None:
            await self.gateway.close()
        if self.node is not None:
            await self.node.stop()


__all__ = ["Cluster", "listening_socket"]

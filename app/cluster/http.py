"""The HTTP side of the cluster, in front of the relay's ASGI app.

* A player asking for a stream this node does not have, held by another node: in ``pull``
  mode the edge pull starts (or is joined) and the request goes on to the local output; in
  ``redirect`` mode an HTTP player gets a redirect to the origin (the ROI WebSocket always
  pulls: browsers do not follow redirects on WebSockets). HLS is the exception in ``pull``
  mode: playlists and segments are passed through from the origin, whose segmenter is the
  stream's only one.
* The stream API's per-stream calls (read, kick, ROI override) for a stream held by another
  node (another worker, another machine) are forwarded to that node, so they act where the
  stream lives. A forwarded request carries a header that stops a second hop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re

import httpx
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Receive, Scope, Send

from app.cluster.directory import NodeAddress
from app.cluster.edge import PULL_REMOTE, EdgePuller
from app.cluster.metrics import merge_expositions, worker_group
from app.cluster.node import ClusterNode
from app.hub import Hub, StreamKey

log = logging.getLogger("app.cluster")


# Requests that start playback of one stream (segments and WHEP sessions follow from them).
_PLAY = re.compile(r"^/([^/]+)/([^/]+?)(\.flv|\.m3u8|/whep|/roi)$")
_HLS = re.compile(r"^/([^/]+)/([^/]+?)(?:\.m3u8|/hls/.*)$")
_STREAM_API = re.compile(r"^/api/v1/streams/([^/]+)/([^/]+?)(/roi)?$")
FORWARDED = b"x-roi-relay-forwarded"
_HOP_HEADERS = {b"host", b"content-length", b"connection", b"transfer-encoding"}


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ClusterGateway:
    def __init__(self, hub: Hub, node: ClusterNode, puller: EdgePuller, app: ASGIApp) -> None:
        self.hub = hub
        self.node = node
        self.puller = puller
        self.app = app
        self.redirect = node.settings.edge_mode == "redirect"
        self._client = httpx.AsyncClient(timeout=10.0)
        self.forwarded = 0
        self.redirected = 0
        # ``--workers``: /metrics answers for every worker of this machine.
        self.group = worker_group(node.me.node_id)

    async def close(self) -> None:
        await self._client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        forwarded = any(name == FORWARDED for name, _ in scope.get("headers", []))
        if scope["type"] == "http" and not forwarded and self.group:
            if path == "/metrics":
                await self._worker_metrics(send)
                return
            if path == "/api/v1/streams" and scope.get("method") == "GET":
                await self._worker_streams(scope, send)
                return
        api = _STREAM_API.match(path) if scope["type"] == "http" else None
        if api is not None:
            key = StreamKey(api[1], api[2])
            # An edge's pulled copy is not where the stream lives: ask the holder.
            held_here = self.hub.get(key) is not None and key not in self.node.pulled
            if not held_here and not forwarded:
                holder = await self.node.holder(key)
                if holder is not None:
                    await self._forward(holder.node.http_url, scope, receive, send)
                    return
            await self.app(scope, receive, send)
            return
        hls = _HLS.match(path) if scope["type"] == "http" else None
        if hls is not None and not forwarded:
            # One segmenter per stream, at its origin: segment numbers and HLS sessions are
            # the origin's, so a player whose requests reach different nodes or workers
            # sees one playlist. An edge passes HLS through (an HTTP cache in front of the
            # nodes can keep the segments).
            key = StreamKey(hls[1], hls[2])
            if self.hub.get(key) is None or key in self.node.pulled:
                holder = await self.node.holder(key, recent=True)
                if holder is not None:
                    if self.redirect:
                        await self._redirect(holder.node.http_url, scope, send)
                    else:
                        await self._forward(holder.node.http_url, scope, receive, send)
                    return
        play = _PLAY.match(path)
        method = scope.get("method", "GET")
        starts_playback = play is not None and (
            scope["type"] == "websocket"
            or method in (("POST",) if play[3] == "/whep" else ("GET", "HEAD"))
        )
        if (
            play is not None
            and starts_playback
            and self.hub.get(StreamKey(play[1], play[2])) is None
        ):
            key = StreamKey(play[1], play[2])
            if self.redirect and scope["type"] == "http":
                holder = await self.node.holder(key)
                if holder is not None:
                    await self._redirect(holder.node.http_url, scope, send)
                    return
            else:
                await self.puller.stream(key)
        await self.app(scope, receive, send)

    async def _siblings(self) -> list[NodeAddress]:
        """This machine's workers (``--workers``), this one included."""
        try:
            nodes = await asyncio.to_thread(self.node.directory.nodes)
        except SQLAlchemyError:
            nodes = [self.node.me]  # the directory is down: at least this worker's figures
        return [n for n in nodes if worker_group(n.node_id) == self.group] or [self.node.me]

    async def _worker_streams(self, scope: Scope, send: Send) -> None:
        """``GET /api/v1/streams`` for the whole machine: each worker's own streams, with the
        players of the other workers' edge copies counted where the stream is held."""
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() == b"authorization"]
        headers.append((FORWARDED, b"1"))
        siblings = await self._siblings()
        try:
            replies = await asyncio.gather(
                *(
                    self._client.get(f"{n.http_url}/api/v1/streams", headers=headers)
                    for n in siblings
                )
            )
        except httpx.HTTPError as exc:
            detail = json.dumps({"detail": f"a worker did not answer: {exc}"})
            await _answer(send, 502, detail.encode(), [(b"content-type", b"application/json")])
            return
        for reply in replies:
            if reply.status_code != 200:  # e.g. 401: the same answer for the whole machine
                await _answer(
                    send, reply.status_code, reply.content, [(b"content-type", b"application/json")]
                )
                return
        streams = [s for reply in replies for s in reply.json()]
        held = {
            (s["app"], s["stream"]): s for s in streams if not s["remote"].startswith(PULL_REMOTE)
        }
        for copy in streams:
            origin = held.get((copy["app"], copy["stream"]))
            if copy["remote"].startswith(PULL_REMOTE) and origin is not None:
                origin["players"] += copy["players"] - 1  # the pull itself is one origin player
        body = json.dumps(sorted(held.values(), key=lambda s: (s["app"], s["stream"])))
        await _answer(send, 200, body.encode(), [(b"content-type", b"application/json")])

    async def _worker_metrics(self, send: Send) -> None:
        siblings = await self._siblings()

        async def scrape(base: str) -> str | None:
            try:
                reply = await self._client.get(f"{base}/metrics", headers={FORWARDED.decode(): "1"})
            except httpx.HTTPError as exc:
                log.info("worker metrics from %s: %s", base, exc)
                return None
            return reply.text if reply.status_code == 200 else None

        texts = await asyncio.gather(*(scrape(n.http_url) for n in siblings))
        body = merge_expositions(
            {n.node_id: t for n, t in zip(siblings, texts, strict=True) if t is not None}
        )
        await _answer(send, 200, body, [(b"content-type", CONTENT_TYPE_LATEST.encode())])

    async def _redirect(self, base: str, scope: Scope, send: Send) -> None:
        query = scope.get("query_string", b"").decode("latin-1")
        location = base + scope["path"] + (f"?{query}" if query else "")
        # 307 keeps WHEP's POST a POST; a GET player is fine with either.
        status = 302 if scope.get("method") in ("GET", "HEAD") else 307
        self.redirected += 1
        await _answer(send, status, b"", [(b"location", location.encode())])

    async def _forward(self, base: str, scope: Scope, receive: Receive, send: Send) -> None:
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() not in _HOP_HEADERS]
        headers.append((FORWARDED, b"1"))
        query = scope.get("query_string", b"").decode("latin-1")
        url = base + scope["path"] + (f"?{query}" if query else "")
        self.forwarded += 1
        try:
            answer = await self._client.request(
                scope["method"], url, content=bytes(body), headers=headers
            )
        except httpx.HTTPError as exc:
            log.warning(
                "forwarding %s %s to %s failed: %s", scope["method"], scope["path"], base, exc
            )
            detail = json.dumps({"detail": f"the node holding the stream did not answer: {exc}"})
            await _answer(send, 502, detail.encode(), [(b"content-type", b"application/json")])
            return
        kept = [
            (k.encode(), v.encode())
            for k, v in answer.headers.items()
            if k.encode().lower() not in _HOP_HEADERS and k.lower() != "content-encoding"
        ]
        await _answer(send, answer.status_code, answer.content, kept)


__all__ = ["ClusterGateway"]

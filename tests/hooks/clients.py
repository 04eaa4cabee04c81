"""One way to try a play (or a publish) over each transport, answering allowed or not.

Real clients: the RTMP client from tests/rtmp/client.py over a socket, httpx for HTTP-FLV and
HLS, an aiortc offer for WHEP, the websockets client for the ROI feed.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import httpx
from aiortc import RTCPeerConnection
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from tests.support.rtmp_client import SocketClient

PLAY_PROTOCOLS = ["rtmp", "http-flv", "hls", "whep", "roi-ws"]
RTMP_PLAY_ANSWERS = {"NetStream.Play.Reset", "NetStream.Play.Start"}


@functools.cache
def whep_offer() -> str:
    async def make() -> str:
        pc = RTCPeerConnection()
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    return asyncio.run(make())


def rtmp_statuses(port: int, command: str, name: str, timeout: float = 10) -> list[str]:
    """The onStatus codes after ``publish``/``play`` of ``name`` (query included)."""
    client = SocketClient(port, timeout=timeout)
    try:
        client.handshake_and_connect()
        client.send(client.proto.command("createStream", None))
        client.wait_for(lambda: sum(c[0] == "_result" for c in client.proto.commands()) == 2)
        args: tuple[Any, ...] = (name, "live") if command == "publish" else (name,)
        client.send(client.proto.command(command, None, *args, stream_id=1))
        client.wait_for(
            lambda: any(
                s["code"].startswith(("NetStream.Play.", "NetStream.Publish."))
                for s in client.proto.statuses()
            ),
            timeout=timeout,
        )
        return [s["code"] for s in client.proto.statuses()]
    finally:
        client.close()


def try_play(
    protocol: str, relay: Any, app: str, stream: str, query: str, timeout: float = 10
) -> tuple[bool, str]:
    """(allowed, what the transport answered)."""
    http = relay.http_url
    suffix = f"?{query}" if query else ""
    if protocol == "rtmp":
        codes = rtmp_statuses(relay.relay.rtmp_port, "play", f"{stream}{suffix}", timeout)
        return bool(RTMP_PLAY_ANSWERS & set(codes)), ",".join(codes)
    if protocol == "http-flv":
        with httpx.stream("GET", f"{http}/{app}/{stream}.flv{suffix}", timeout=timeout) as reply:
            if reply.status_code == 200:
                next(reply.iter_bytes())
            return reply.status_code == 200, str(reply.status_code)
    if protocol == "hls":
        reply = httpx.get(f"{http}/{app}/{stream}.m3u8{suffix}", timeout=timeout)
        return reply.status_code == 200, str(reply.status_code)
    if protocol == "whep":
        reply = httpx.post(
            f"{http}/{app}/{stream}/whep{suffix}",
            content=whep_offer(),
            headers={"content-type": "application/sdp"},
            timeout=timeout,
        )
        if reply.status_code == 201:
            httpx.delete(f"{http}{reply.headers['location']}", timeout=timeout)
        return reply.status_code == 201, str(reply.status_code)
    if protocol == "roi-ws":
        ws_url = http.replace("http://", "ws://") + f"/{app}/{stream}/roi{suffix}"
        with ws_connect(ws_url, open_timeout=timeout) as ws:
            try:
                ws.recv(timeout=0.5)
            except TimeoutError:
                return True, "open"  # accepted; no ROI on this stream, so nothing to read
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else 0
                return False, str(code)
            return True, "message"
    raise AssertionError(protocol)

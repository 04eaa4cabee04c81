"""RTMPS: the TLS layer in front of the plain RTMP connection.

The listener accepts TCP itself and completes each TLS handshake with
``loop.connect_accepted_socket(ssl=...)``, which raises when the handshake fails, so a
failure (a port scanner, a plain-RTMP client on the RTMPS port, a bad certificate on the
client side) is caught here: one log line, that connection closed, nothing else touched.
``create_server(ssl=...)`` would swallow such failures silently outside debug mode, and
upgrading an accepted connection with ``start_tls`` loses a ClientHello that arrives before
the upgrade (uvloop starts reading as soon as ``connection_made`` returns).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("app.rtmp")

TLS_HANDSHAKE_TIMEOUT = 10.0
LISTEN_BACKLOG = 100


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context from PEM files; raises OSError/ssl.SSLError naming what is wrong."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    return context


class TlsListener:
    """A listening socket whose connections reach the protocol ``make_protocol`` builds (an
    RtmpConnection) once their TLS handshake is done."""

    def __init__(
        self,
        sock: socket.socket,
        context: ssl.SSLContext,
        make_protocol: Callable[[], asyncio.Protocol],
    ) -> None:
        self.port = int(sock.getsockname()[1])
        self._sock = sock
        self._context = context
        self._make_protocol = make_protocol
        self._handshakes: set[asyncio.Task[None]] = set()
        self._accepting = asyncio.get_running_loop().create_task(self._accept())

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        context: ssl.SSLContext,
        make_protocol: Callable[[], asyncio.Protocol],
        *,
        reuse_port: bool = False,
    ) -> TlsListener:
        loop = asyncio.get_running_loop()
        family, kind, proto, _, address = (
            await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return cls(sock, context, make_protocol)

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(self._sock)
            except OSError as exc:  # out of descriptors, say: the listener itself is fine
                log.warning("RTMPS accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            task = loop.create_task(self._handshake(conn, peer))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, conn: socket.socket, peer: object) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                self._make_protocol,
                conn,
                ssl=self._context,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
            )
        except (OSError, ssl.SSLError, ConnectionError, TimeoutError) as exc:
            where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
            log.warning("%s: RTMPS connection closed: TLS handshake failed: %s", where, exc)
            conn.close()

    async def close(self) -> None:
        self._accepting.cancel()
        tasks = [self._accepting, *self._handshakes]
        for task in self._handshakes:
            task.cancel()
        self._sock.close()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


__all__ = ["TLS_HANDSHAKE_TIMEOUT", "TlsListener", "server_context"]

"""RTMPS: the TLS layer in front of the plain RTMP connection.

The listener accepts TCP itself and upgrades each connection with ``loop.start_tls``, so a
failed handshake (a port scanner, a plain-RTMP client on the RTMPS port, a bad certificate on
the client side) is caught here: one log line, that connection closed, nothing else touched.
``create_server(ssl=...)`` would swallow such failures silently outside debug mode.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import cast

log = logging.getLogger("app.rtmp")

TLS_HANDSHAKE_TIMEOUT = 10.0


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context from PEM files; raises OSError/ssl.SSLError naming what is wrong."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    return context


class TlsAcceptor(asyncio.Protocol):
    """Holds a fresh TCP connection until its TLS handshake is done, then hands the TLS
    transport to the protocol ``make_protocol`` builds (an RtmpConnection).

    ``start_tls`` delivers decrypted bytes to the protocol it was given as soon as the
    handshake completes, before the awaiting coroutine resumes; this acceptor is that protocol
    until then and keeps what arrives, so the RTMP connection starts with nothing lost.
    """

    def __init__(
        self,
        context: ssl.SSLContext,
        make_protocol: Callable[[], asyncio.Protocol],
        tasks: set[asyncio.Task[None]],
    ) -> None:
        self.context = context
        self.make_protocol = make_protocol
        self.tasks = tasks
        self._early = bytearray()
        self._early_eof = False
        self._lost: tuple[Exception | None] | None = None
        self._target: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not asyncio.Transport subclasses: no isinstance).
        transport = cast(asyncio.Transport, transport)
        # Nothing may be read before start_tls takes over the socket (it resumes reading).
        transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self._upgrade(transport))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def data_received(self, data: bytes) -> None:
        self._early += data

    def eof_received(self) -> bool:
        self._early_eof = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = (exc,)

    async def _upgrade(self, transport: asyncio.Transport) -> None:
        peer = transport.get_extra_info("peername")
        loop = asyncio.get_running_loop()
        try:
            tls_transport = await loop.start_tls(
                transport,
                self,
                self.context,
                server_side=True,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
            )
        except (OSError, ssl.SSLError, ConnectionError, TimeoutError) as exc:
            where = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
            log.warning("%s: RTMPS connection closed: TLS handshake failed: %s", where, exc)
            transport.abort()
            return
        if tls_transport is None:  # the peer went away as the handshake ended
            transport.abort()
            return
        target = self.make_protocol()
        tls_transport.set_protocol(target)
        target.connection_made(tls_transport)
        if self._early:
            target.data_received(bytes(self._early))
            self._early.clear()
        if self._early_eof:
            target.eof_received()
        if self._lost is not None:
            target.connection_lost(self._lost[0])


__all__ = ["TLS_HANDSHAKE_TIMEOUT", "TlsAcceptor", "server_context"]

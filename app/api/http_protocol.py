"""roi-relay's HTTP/1.1 protocol: uvicorn's httptools protocol with two additions.

* A deadline for the request headers (from the connection's start, and again after each
  response on a kept-alive connection) and a cap on their size: a client that trickles or
  never finishes its headers is closed instead of holding a connection (and its buffers) for
  ever. uvicorn's own keep-alive timer is cancelled by any byte received, so it does not
  bound this.
* The :data:`~app.outputs.flv.CHUNKED_BODY` scope extension: an endless chunked response
  (HTTP-FLV) writes each body chunk straight to the transport, its parts gathered by the
  transport rather than joined, while uvicorn's response state says that is what ``send``
  would do now.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from app.outputs.flv import CHUNKED_BODY, WriteChunk

log = logging.getLogger("app.api.http_protocol")


def chunk_writer(cycle: RequestResponseCycle) -> WriteChunk:
    """:data:`~app.outputs.flv.WriteChunk` for one uvicorn request/response cycle."""

    def write_chunk(parts: Sequence[bytes]) -> bool:
        if (
            not cycle.response_started
            or cycle.response_complete
            or not cycle.chunked_encoding
            or cycle.disconnected
            or cycle.flow.write_paused
            or cycle.transport.is_closing()
        ):
            return False
        size = sum(map(len, parts))
        if size:
            cycle.transport.writelines([b"%x\r\n" % size, *parts, b"\r\n"])
        return True

    return write_chunk


def http_protocol(header_timeout: float, max_header_bytes: int) -> type[asyncio.Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)``."""

    class RelayHttpProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _header_bytes = 0
        _awaiting_headers = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._await_headers()

        def data_received(self, data: bytes) -> None:
            was_awaiting = self._awaiting_headers
            super().data_received(data)
            # Counted after parsing: bytes that completed the headers may carry body too.
            if was_awaiting and self._awaiting_headers:
                self._header_bytes += len(data)
                if self._header_bytes > max_header_bytes and not self.transport.is_closing():
                    self._refuse(b"431 Request Header Fields Too Large")

        def on_headers_complete(self) -> None:
            self._headers_done()
            super().on_headers_complete()
            cycle = self.cycle
            # Not for an upgrade (WebSocket), for which uvicorn makes no cycle.
            if cycle is not None and cycle.scope is self.scope:
                extensions = self.scope.setdefault("extensions", {})
                extensions[CHUNKED_BODY] = {"write": chunk_writer(cycle)}

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._await_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._headers_done()
            super().connection_lost(exc)

        def _await_headers(self) -> None:
            self._headers_done()
            self._awaiting_headers = True
            self._header_bytes = 0
            self._header_timer = self.loop.call_later(header_timeout, self._headers_late)

        def _headers_done(self) -> None:
            self._awaiting_headers = False
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if self._awaiting_headers and not self.transport.is_closing():
                log.info(
                    "HTTP client %s: headers not complete in %.0f s", self.client, header_timeout
                )
                self._refuse(b"408 Request Timeout")

        def _refuse(self, status: bytes) -> None:
            self._headers_done()
            self.transport.write(
                b"HTTP/1.1 " + status + b"\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
            )
            self.transport.close()

    return RelayHttpProtocol

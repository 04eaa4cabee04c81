"""A plain HTTP/1.1 client on a socket (h11): what a player reading an endless body sees."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import h11


def open_get(
    port: int, path: str, method: str = "GET", small_buffer: bool = False
) -> tuple[socket.socket, h11.Connection]:
    """The request sent; with ``small_buffer`` the receive buffer is 4 KiB, so that a server
    writing to a client that does not read backs up at once."""
    sock = socket.socket()
    if small_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    http = h11.Connection(h11.CLIENT)
    request = h11.Request(method=method, target=path, headers=[("Host", "x")])
    sock.sendall(http.send(request) + http.send(h11.EndOfMessage()))
    return sock, http


def response_events(sock: socket.socket, http: h11.Connection) -> Iterator[h11.Response | h11.Data]:
    """The response head, then its body's pieces, until the end of the message."""
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            http.receive_data(sock.recv(65536))
        elif isinstance(event, h11.Response | h11.Data):
            yield event
        elif isinstance(event, h11.EndOfMessage):
            return

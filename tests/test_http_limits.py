"""What one HTTP client can make the relay hold (issue 17, 8 and 10): bodies over the limit are
413 without being read whole, unfinished headers are closed, a client leaving in the middle of
its WHEP offer is a clean close."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.relay_harness import RunningRelay


@pytest.fixture
def limited(relay_factory) -> RunningRelay:
    return relay_factory(http_header_timeout=1.0, http_max_header_bytes=8192)


def _connect(relay: RunningRelay) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", relay.relay.http_port), timeout=5)
    return sock


def _read_all(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def _status(reply: bytes) -> int:
    assert reply.startswith(b"HTTP/1.1 "), reply[:100]
    return int(reply.split(b" ", 2)[1])


def test_a_declared_oversized_body_is_413_before_it_is_sent(limited: RunningRelay) -> None:
    sock = _connect(limited)
    try:
        sock.sendall(
            b"POST /api/v1/roi-templates HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 200000000\r\n\r\n"
        )
        reply = _read_all(sock, 5)  # nothing of the 200 MB is sent: the answer comes anyway
    finally:
        sock.close()
    assert _status(reply) == 413
    assert b"larger than 1048576 bytes" in reply


def _chunks(total: int) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        sent += 65536
        yield b" " * 65536


def test_a_chunked_body_is_cut_off_at_the_limit(limited: RunningRelay) -> None:
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        for chunk in _chunks(64 * 1024 * 1024):
            sent += len(chunk)
            yield chunk

    with httpx.Client(base_url=limited.http_url, timeout=10) as http:
        try:
            reply = http.put(
                "/api/v1/streams/live/x/roi",
                content=body(),
                headers={"content-type": "application/json"},
            )
            assert reply.status_code == 413
        except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
            pass  # the server answered and closed while the client was still sending
        assert sent < 16 * 1024 * 1024, f"{sent} bytes were taken in before the 413"
        # The relay serves on.
        assert http.get("/healthz").status_code == 200


def test_whep_offers_have_their_own_smaller_limit(limited: RunningRelay) -> None:
    with httpx.Client(base_url=limited.http_url, timeout=10) as http:
        big = b"v=0\r\n" + b"a=x:" + b"y" * (70 * 1024) + b"\r\n"
        reply = http.post(
            "/live/none/whep", content=big, headers={"content-type": "application/sdp"}
        )
        assert reply.status_code == 413
        small = http.post(
            "/live/none/whep", content=b"v=0\r\n", headers={"content-type": "application/sdp"}
        )
        assert small.status_code == 404  # within the limit: on to the route (not live)
        # A template body of 70 KiB is within the API's 1 MiB and gets its 422.
        reply = http.post(
            "/api/v1/roi-templates",
            content=b'{"name": "' + b"n" * (70 * 1024) + b'"}',
            headers={"content-type": "application/json"},
        )
        assert reply.status_code == 422


def test_connections_that_never_finish_their_headers_are_closed(limited: RunningRelay) -> None:
    silent = [_connect(limited) for _ in range(20)]
    trickling = [_connect(limited) for _ in range(20)]
    for sock in trickling:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    try:
        # Trickle a header byte every 0.2 s: each byte would re-arm an idle timer.
        deadline = started + 4
        while time.monotonic() < deadline:
            for sock in trickling:
                try:
                    sock.sendall(b"X")
                except OSError:
                    pass
            time.sleep(0.2)
        for sock in silent + trickling:
            reply = _read_all(sock, 1)
            if reply:
                assert _status(reply) == 408
        # All closed: a read now returns EOF at once.
        for sock in silent + trickling:
            sock.settimeout(0.5)
            try:
                assert sock.recv(1) == b""
            except ConnectionResetError:
                pass
    finally:
        for sock in silent + trickling:
            sock.close()
    # A client that finishes its headers in time is served on a kept-alive connection.
    with httpx.Client(base_url=limited.http_url, timeout=5) as http:
        for _ in range(3):
            assert http.get("/healthz").status_code == 200
            time.sleep(0.6)


def test_oversized_headers_are_431(limited: RunningRelay) -> None:
    sock = _connect(limited)
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        for _ in range(20):
            try:
                sock.sendall(b"X-Filler: " + b"f" * 1000 + b"\r\n")
            except OSError:
                break
        reply = _read_all(sock, 3)
    finally:
        sock.close()
    assert _status(reply) == 431


def test_a_client_leaving_in_the_middle_of_its_whep_offer_is_a_clean_close(
    relay: RunningRelay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for _ in range(5):
        sock = _connect(relay)
        sock.sendall(
            b"POST /live/cam/whep HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n"
            b"Content-Length: 4000\r\n\r\nv=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"
        )
        time.sleep(0.1)
        sock.close()
    time.sleep(0.5)
    with httpx.Client(base_url=relay.http_url, timeout=5) as http:
        assert http.get("/healthz").status_code == 200
    assert "Exception in ASGI application" not in caplog.text
    assert "Traceback" not in caplog.text

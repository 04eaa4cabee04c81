"""Server handshake: plain and digest (FP9) C1, and what it refuses."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest

from app.rtmp.handshake import (
    FMS_KEY_FULL,
    FMS_KEY_SHORT,
    FP_KEY_SHORT,
    HANDSHAKE_SIZE,
    ClientHandshake,
    HandshakeError,
    ServerHandshake,
    digest_offset,
    find_digest,
)


def run_handshake(client: ClientHandshake, server: ServerHandshake, tail: bytes = b"") -> bytes:
    assert server.receive_data(client.data_to_send()) == b""
    assert client.receive_data(server.data_to_send()) == b""
    assert client.complete
    rest = server.receive_data(client.data_to_send() + tail)
    assert server.complete
    return rest


def test_plain_handshake_echoes_c1_and_returns_what_follows_c2() -> None:
    client, server = ClientHandshake(), ServerHandshake()
    c0c1 = client.data_to_send()
    server.receive_data(c0c1)
    reply = server.data_to_send()
    assert len(reply) == 1 + 2 * HANDSHAKE_SIZE
    assert reply[0] == 3
    assert reply[1 + 4 : 1 + 8] == b"\0\0\0\0"  # plain S1
    assert reply[1 + HANDSHAKE_SIZE :] == c0c1[1:]  # S2 echoes C1
    client.receive_data(reply)
    assert server.receive_data(client.data_to_send() + b"first chunk") == b"first chunk"
    assert server.info is not None and server.info.digest_scheme is None


@pytest.mark.parametrize("scheme", [0, 1])
def test_digest_c1_gets_digest_s1_and_signed_s2(scheme: int) -> None:
    # ClientHandshake(digest=True) is strict like librtmp's FP9 mode: it raises unless S1
    # carries an FMS-key digest and S2 is signed with a key derived from its own C1 digest.
    client, server = ClientHandshake(digest=True, scheme=scheme), ServerHandshake()
    assert run_handshake(client, server, b"x") == b"x"
    assert server.info is not None and server.info.digest_scheme == scheme
    assert client.server_digest_scheme == scheme


def test_digest_response_verified_independently() -> None:
    # Build an FFmpeg-style C1 by hand (version 9.0.124.2, digest at scheme 0) and check S1
    # and S2 with hashlib/hmac directly rather than through the module's helpers.
    c1 = bytearray(b"\0\0\0\0" + bytes([0x80, 0, 7, 2]) + os.urandom(HANDSHAKE_SIZE - 8))
    offset = sum(c1[8:12]) % 728 + 12
    digest = hmac.new(FP_KEY_SHORT, bytes(c1[:offset] + c1[offset + 32 :]), hashlib.sha256)
    c1[offset : offset + 32] = digest.digest()
    server = ServerHandshake()
    server.receive_data(b"\x03" + bytes(c1))
    reply = server.data_to_send()
    s1, s2 = reply[1 : 1 + HANDSHAKE_SIZE], reply[1 + HANDSHAKE_SIZE :]
    assert s1[4] != 0  # a server version: FFmpeg only verifies when S1[4] >= 3
    found = find_digest(s1, FMS_KEY_SHORT)
    assert found is not None and found[0] == 0
    key = hmac.new(FMS_KEY_FULL, bytes(c1[offset : offset + 32]), hashlib.sha256).digest()
    expected = hmac.new(key, s2[:-32], hashlib.sha256).digest()
    assert s2[-32:] == expected


def test_nonzero_version_without_valid_digest_falls_back_to_plain_echo() -> None:
    c1 = b"\0\0\0\0" + b"\x01\x02\x03\x04" + os.urandom(HANDSHAKE_SIZE - 8)
    server = ServerHandshake()
    server.receive_data(b"\x03" + c1)
    reply = server.data_to_send()
    assert reply[1 + HANDSHAKE_SIZE :] == c1


def test_byte_by_byte_feeding() -> None:
    client, server = ClientHandshake(digest=True), ServerHandshake()
    for b in client.data_to_send():
        server.receive_data(bytes([b]))
    for b in server.data_to_send():
        client.receive_data(bytes([b]))
    c2 = client.data_to_send()
    for b in c2[:-1]:
        assert server.receive_data(bytes([b])) == b""
    assert not server.complete
    server.receive_data(c2[-1:])
    assert server.complete


@pytest.mark.parametrize(
    ("first", "message"),
    [
        (b"GET / HTTP/1.1\r\n", "not an RTMP handshake"),
        (b"\x16\x03\x01", "not an RTMP handshake"),  # a TLS ClientHello
        (b"\x06", "RTMPE"),
        (b"\x00", "not an RTMP handshake"),
    ],
)
def test_wrong_version_is_refused_at_once(first: bytes, message: str) -> None:
    with pytest.raises(HandshakeError, match=message):
        ServerHandshake().receive_data(first)


def test_strict_digest_client_refuses_a_server_that_only_echoes() -> None:
    client = ClientHandshake(digest=True)
    c0c1 = client.data_to_send()
    fake_reply = b"\x03" + os.urandom(HANDSHAKE_SIZE) + c0c1[1:]
    with pytest.raises(HandshakeError):
        client.receive_data(fake_reply)


def test_digest_offset_is_within_the_block() -> None:
    for fill in (0, 255):
        block = bytes([fill]) * HANDSHAKE_SIZE
        for scheme in (0, 1):
            assert 0 <= digest_offset(block, scheme) <= HANDSHAKE_SIZE - 32

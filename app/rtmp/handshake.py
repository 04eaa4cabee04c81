"""RTMP handshake, sans-IO: C0/C1/C2 in, S0/S1/S2 out (and the client side for tests and bench).

Two flavours exist in the wild. The plain one (RTMP 1.0 spec) has four zero bytes at C1[4:8]
and the peer simply echoes C1 as S2. The "digest" one (Adobe Flash Player 9+ / FMS 3, sent by
librtmp/OBS and FFmpeg) puts a version there and hides an HMAC-SHA256 digest inside C1 at an
offset derived from C1's own bytes (scheme 0: base 8, scheme 1: base 772). Strict clients
(librtmp with FP9 handshake, FFmpeg when playing) check that S1 carries a digest made with the
FMS key and that S2 ends with a signature keyed by the client's digest, so the server answers
in kind whenever it can verify the client's digest, and falls back to the plain echo otherwise.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass

RTMP_VERSION = 3
HANDSHAKE_SIZE = 1536
DIGEST_SIZE = 32

# The public key material of the FP9 handshake: a text prefix plus 32 constant bytes.
_KEY_TAIL = bytes.fromhex("f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
_FP_TEXT = b"Genuine Adobe Flash Player 001"
_FMS_TEXT = b"Genuine Adobe Flash Media Server 001"
FP_KEY_SHORT = _FP_TEXT  # signs the client's C1 digest
FP_KEY_FULL = _FP_TEXT + _KEY_TAIL  # derives the key of the client's C2 signature
FMS_KEY_SHORT = _FMS_TEXT  # signs the server's S1 digest
FMS_KEY_FULL = _FMS_TEXT + _KEY_TAIL  # derives the key of the server's S2 signature

# Versions written at S1[4:8] / C1[4:8] in digest mode (non-zero marks the FP9 scheme).
SERVER_VERSION = bytes([0x0D, 0x0E, 0x0A, 0x0D])
CLIENT_VERSION = bytes([0x80, 0x00, 0x07, 0x02])

# (base of the 4 offset bytes, base of the digest area) for scheme 0 and scheme 1.
_SCHEMES = ((8, 12), (772, 776))
_OFFSET_MODULO = 728


class HandshakeError(Exception):
    """The peer sent something that is not an RTMP handshake this side can answer."""


def digest_offset(block: bytes | bytearray, scheme: int) -> int:
    """Where the 32-byte digest sits in a 1536-byte C1/S1 block for the given scheme."""
    offset_base, digest_base = _SCHEMES[scheme]
    return sum(block[offset_base : offset_base + 4]) % _OFFSET_MODULO + digest_base


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _digest_of(block: bytes, offset: int, key: bytes) -> bytes:
    return _hmac(key, block[:offset] + block[offset + DIGEST_SIZE :])


def find_digest(block: bytes, key: bytes) -> tuple[int, bytes] | None:
    """Returns (scheme, digest) when the block carries a valid digest under ``key``."""
    for scheme in (0, 1):
        offset = digest_offset(block, scheme)
        digest = block[offset : offset + DIGEST_SIZE]
        if hmac.compare_digest(_digest_of(block, offset, key), digest):
            return scheme, digest
    return None


def make_digest_block(timestamp: int, version: bytes, key: bytes, scheme: int) -> bytes:
    """A random 1536-byte block with a valid digest for ``scheme`` under ``key``."""
    block = bytearray(struct.pack(">I", timestamp & 0xFFFFFFFF) + version)
    block += os.urandom(HANDSHAKE_SIZE - 8)
    offset = digest_offset(block, scheme)
    block[offset : offset + DIGEST_SIZE] = _digest_of(bytes(block), offset, key)
    return bytes(block)


def make_signature_block(peer_digest: bytes, full_key: bytes) -> bytes:
    """S2/C2 of the digest handshake: random bytes signed with a key derived from the peer's
    digest, signature in the last 32 bytes."""
    body = os.urandom(HANDSHAKE_SIZE - DIGEST_SIZE)
    return body + _hmac(_hmac(full_key, peer_digest), body)


def signature_valid(block: bytes, own_digest: bytes, full_key: bytes) -> bool:
    body = block[: HANDSHAKE_SIZE - DIGEST_SIZE]
    expected = _hmac(_hmac(full_key, own_digest), body)
    return hmac.compare_digest(expected, block[HANDSHAKE_SIZE - DIGEST_SIZE :])


def _check_version(version: int) -> None:
    if version == RTMP_VERSION:
        return
    if version in (6, 8, 9):
        raise HandshakeError(f"encrypted RTMP (RTMPE, version byte {version}) is not supported")
    raise HandshakeError(f"not an RTMP handshake: version byte {version:#04x}, expected 0x03")


@dataclass(frozen=True, slots=True)
class HandshakeInfo:
    """What the handshake learned about the peer (for logs)."""

    digest_scheme: int | None  # None: plain handshake
    peer_version: bytes


class ServerHandshake:
    """Server side. Feed received bytes; send what ``data_to_send`` returns; once ``complete``,
    ``receive_data`` has returned the bytes that followed C2 (the first chunks)."""

    def __init__(self, *, epoch_ms: int = 0) -> None:
        self._buffer = bytearray()
        self._out = bytearray()
        self._epoch_ms = epoch_ms
        self._stage = 0  # 0: waiting for C0+C1, 1: waiting for C2, 2: complete
        self.info: HandshakeInfo | None = None

    @property
    def complete(self) -> bool:
        return self._stage == 2

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> bytes:
        """Consumes handshake bytes and returns whatever came after C2 (empty until then).
        Raises HandshakeError on bytes that are not an RTMP handshake."""
        if self._stage == 2:
            return data
        self._buffer += data
        if self._stage == 0:
            if self._buffer:
                _check_version(self._buffer[0])
            if len(self._buffer) < 1 + HANDSHAKE_SIZE:
                return b""
            c1 = bytes(self._buffer[1 : 1 + HANDSHAKE_SIZE])
            del self._buffer[: 1 + HANDSHAKE_SIZE]
            self._answer_c1(c1)
            self._stage = 1
        if self._stage == 1:
            if len(self._buffer) < HANDSHAKE_SIZE:
                return b""
            # C2 is not checked: clients differ in what they echo, and nothing depends on it.
            del self._buffer[:HANDSHAKE_SIZE]
            self._stage = 2
            rest = bytes(self._buffer)
            self._buffer.clear()
            return rest
        return b""

    def _answer_c1(self, c1: bytes) -> None:
        peer_version = c1[4:8]
        found = find_digest(c1, FP_KEY_SHORT) if peer_version != b"\0\0\0\0" else None
        if found is None:
            self.info = HandshakeInfo(None, peer_version)
            s1 = struct.pack(">I", self._epoch_ms & 0xFFFFFFFF) + b"\0\0\0\0"
            s1 += os.urandom(HANDSHAKE_SIZE - 8)
            s2 = c1  # plain handshake: S2 echoes C1
        else:
            scheme, client_digest = found
            self.info = HandshakeInfo(scheme, peer_version)
            s1 = make_digest_block(self._epoch_ms, SERVER_VERSION, FMS_KEY_SHORT, scheme)
            s2 = make_signature_block(client_digest, FMS_KEY_FULL)
        self._out += bytes([RTMP_VERSION]) + s1 + s2


class ClientHandshake:
    """Client side, for tests and benchmarks. With ``digest=True`` it behaves like a strict
    FP9 client: it refuses a server whose S1 digest or S2 signature does not verify."""

    def __init__(self, *, digest: bool = False, scheme: int = 0, strict: bool = True) -> None:
        self._digest = digest
        self._strict = strict
        self._buffer = bytearray()
        if digest:
            self._c1 = make_digest_block(0, CLIENT_VERSION, FP_KEY_SHORT, scheme)
            offset = digest_offset(self._c1, scheme)
            self._c1_digest = self._c1[offset : offset + DIGEST_SIZE]
        else:
            self._c1 = b"\0" * 8 + os.urandom(HANDSHAKE_SIZE - 8)
            self._c1_digest = b""
        self._out = bytearray(bytes([RTMP_VERSION]) + self._c1)
        self._complete = False
        self.server_digest_scheme: int | None = None

    @property
    def complete(self) -> bool:
        return self._complete

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> bytes:
        if self._complete:
            return data
        self._buffer += data
        if self._buffer:
            _check_version(self._buffer[0])
        if len(self._buffer) < 1 + 2 * HANDSHAKE_SIZE:
            return b""
        s1 = bytes(self._buffer[1 : 1 + HANDSHAKE_SIZE])
        s2 = bytes(self._buffer[1 + HANDSHAKE_SIZE : 1 + 2 * HANDSHAKE_SIZE])
        rest = bytes(self._buffer[1 + 2 * HANDSHAKE_SIZE :])
        self._buffer.clear()
        if self._digest:
            found = find_digest(s1, FMS_KEY_SHORT)
            if found is None:
                if self._strict:
                    raise HandshakeError("server S1 carries no valid FMS digest")
                self._out += s1
            else:
                self.server_digest_scheme, server_digest = found
                if self._strict and not signature_valid(s2, self._c1_digest, FMS_KEY_FULL):
                    raise HandshakeError("server S2 signature does not match our C1 digest")
                self._out += make_signature_block(server_digest, FP_KEY_FULL)
        else:
            if self._strict and s2[8:] != self._c1[8:]:
                raise HandshakeError("server S2 does not echo our C1")
            self._out += s1
        self._complete = True
        return rest

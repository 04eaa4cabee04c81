"""Push authentication (Tencent-compatible), the one place for that rule.

``txTime`` is the expiry as a hexadecimal Unix time; ``txSecret = md5(key + StreamName +
txTime)`` in hex, where txTime is hashed exactly as it is written in the URL (so ``5F5E1000``
and ``5f5e1000`` give different secrets) and StreamName is the bare stream name, without app
or query. Either the primary or the backup key may sign (so keys can be rotated); with no key
configured, push authentication is off.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

BAD_AUTH = "NetStream.Publish.BadAuth"
MAX_TX_TIME_DIGITS = 16  # a 64-bit time; anything longer is not a time
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True, slots=True)
class PushKeys:
    primary: str = ""
    backup: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.primary or self.backup)


@dataclass(frozen=True, slots=True)
class PushVerdict:
    ok: bool
    reason: str
    status_code: str | None = None  # RTMP onStatus code to refuse with; None when ok


def push_secret(key: str, stream_name: str, tx_time: str) -> str:
    return hashlib.md5((key + stream_name + tx_time).encode("utf-8")).hexdigest()


def sign_push(key: str, stream_name: str, expires_at: float) -> dict[str, str]:
    """The query parameters that authorise pushing ``stream_name`` until ``expires_at``."""
    tx_time = format(int(expires_at), "X")
    return {"txSecret": push_secret(key, stream_name, tx_time), "txTime": tx_time}


def _refuse(reason: str) -> PushVerdict:
    return PushVerdict(False, reason, BAD_AUTH)


def check_push(
    stream_name: str, query: Mapping[str, str], keys: PushKeys, now: float
) -> PushVerdict:
    if not keys.enabled:
        return PushVerdict(True, "push authentication is off")
    tx_secret = query.get("txSecret", "")
    tx_time = query.get("txTime", "")
    if not tx_secret or not tx_time:
        return _refuse("txSecret and txTime are required")
    if len(tx_time) > MAX_TX_TIME_DIGITS or not all(ch in _HEX_DIGITS for ch in tx_time):
        return _refuse("txTime is not a hexadecimal Unix time")
    expires_at = int(tx_time, 16)
    given = tx_secret.lower().encode("utf-8")
    matches = [
        hmac.compare_digest(push_secret(key, stream_name, tx_time).encode("ascii"), given)
        for key in (keys.primary, keys.backup)
        if key
    ]
    if not any(matches):
        return _refuse("txSecret does not match the push key")
    if now > expires_at:
        return _refuse("txTime has passed: the push URL expired")
    return PushVerdict(True, "signature valid")

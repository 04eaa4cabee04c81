"""Push and play authentication (Tencent-compatible), the one place for that rule.

``txTime`` is the expiry as a hexadecimal Unix time; ``txSecret = md5(key + StreamName +
txTime)`` in hex, where txTime is hashed exactly as it is written in the URL (so ``5F5E1000``
and ``5f5e1000`` give different secrets) and StreamName is the bare stream name, without app
or query. Either the primary or the backup key may sign (so keys can be rotated); with no key
configured, push authentication is off. Play authentication is the same rule with the play keys
(ROI_RELAY_PLAY_KEY / ROI_RELAY_PLAY_BACKUP_KEY) on every play path.

Who may publish or play is asked once per connection through an :data:`Admit` function: the
composition root hands one to every publish/play entry point (RTMP, HTTP-FLV, HLS, WHEP, the
ROI WebSocket), so the entry points only ask and answer with their protocol's own refusal.
The default, :func:`signatures_only`, checks the signatures; app/hooks adds the operator's
auth hook and the play events.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

BAD_AUTH = "NetStream.Publish.BadAuth"
PLAY_FAILED = "NetStream.Play.Failed"
# Query parameters that are secrets: kept for the auth hook, removed from event callbacks.
SECRET_PARAMS = frozenset({"txSecret", "txTime"})
MAX_TX_TIME_DIGITS = 16  # a 64-bit time; anything longer is not a time
# How far ahead an expiry may be. A decimal Unix time read as hex lands centuries ahead, so
# without a horizon such a URL would never expire.
DEFAULT_MAX_TTL = 7 * 24 * 3600.0
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
    stream_name: str,
    query: Mapping[str, str],
    keys: PushKeys,
    now: float,
    *,
    kind: str = "push",
    max_ttl: float = DEFAULT_MAX_TTL,
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
        return _refuse(f"txSecret does not match the {kind} key")
    if now > expires_at:
        return _refuse(f"txTime has passed: the {kind} URL expired")
    if expires_at - now > max_ttl:
        return _refuse(
            f"txTime {tx_time} expires {expires_at - now:.0f} s from now, beyond the "
            f"{max_ttl:.0f} s horizon: txTime is a hexadecimal Unix time (a decimal time "
            "reads as a date centuries ahead)"
        )
    return PushVerdict(True, "signature valid")


def check_play(
    stream_name: str,
    query: Mapping[str, str],
    keys: PushKeys,
    now: float,
    *,
    max_ttl: float = DEFAULT_MAX_TTL,
) -> PushVerdict:
    """The push rule with the play keys; a refusal carries RTMP's play refusal code."""
    verdict = check_push(stream_name, query, keys, now, kind="play", max_ttl=max_ttl)
    if verdict.ok:
        return verdict if keys.enabled else PushVerdict(True, "play authentication is off")
    return PushVerdict(False, verdict.reason, PLAY_FAILED)


def public_query(query: Mapping[str, str]) -> dict[str, str]:
    """The query without its secrets (what may be shown or sent to third parties)."""
    return {k: v for k, v in query.items() if k not in SECRET_PARAMS}


Action = Literal["publish", "play"]


@dataclass(frozen=True, slots=True)
class AccessRequest:
    """One publish or play, as an entry point sees it."""

    action: Action
    protocol: str  # rtmp, http-flv, hls, whep, roi-ws
    app: str
    stream: str
    query: Mapping[str, str]
    client_ip: str


def _nothing() -> None:
    return None


@dataclass(frozen=True, slots=True)
class Access:
    """The answer: allowed or not (and why); a template the operator chose for a push;
    ``ended`` is called by the entry point once the play or publish is over."""

    ok: bool
    reason: str
    template: str | None = None
    ended: Callable[[], None] = field(default=_nothing, compare=False)


Admit = Callable[[AccessRequest], Awaitable[Access]]


@dataclass(frozen=True, slots=True)
class Gate:
    """The signature rule for both directions."""

    push: PushKeys = PushKeys()
    play: PushKeys = PushKeys()
    max_ttl: float = DEFAULT_MAX_TTL  # how far ahead a txTime may lie

    def check(self, request: AccessRequest, now: float) -> PushVerdict:
        if request.action == "publish":
            return check_push(request.stream, request.query, self.push, now, max_ttl=self.max_ttl)
        return check_play(request.stream, request.query, self.play, now, max_ttl=self.max_ttl)


def signatures_only(gate: Gate, clock: Callable[[], float]) -> Admit:
    """An :data:`Admit` that checks the signatures and nothing else."""

    async def admit(request: AccessRequest) -> Access:
        verdict = gate.check(request, clock())
        return Access(verdict.ok, verdict.reason)

    return admit


async def admit_all(request: AccessRequest) -> Access:
    """For parts built without an admission (unit tests of one output)."""
    return Access(True, "open")

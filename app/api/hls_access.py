"""HLS viewer sessions: play admission once per playback session, not once per fetch.

With play authentication on (a play key or the auth hook), the playlist URL a player opens
(``/{app}/{stream}.m3u8?txSecret=..&txTime=..``) is admitted like any other play and answers
with a one-variant multivariant playlist whose media playlist URL carries a session token;
the media playlist's segment URLs carry it too. Playlist refreshes and segment fetches only
look the token up: neither the signature check nor the hook runs again, so a CDN or player
fetching N segments costs one admission. A token names one stream (useless for another) and
ends after ``idle_timeout`` seconds without a fetch, which is also when the play stop event
of that viewer is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from app.api.access import play_request
from app.auth import Access, Admit
from app.hub import StreamKey

SESSION_PARAM = "session"
# Beyond this many open viewer sessions a new one is refused (503) instead of admitted: each
# costs an admission (and a hook call), and a client could open them in a loop.
MAX_SESSIONS = 10_000


@dataclass
class ViewerSession:
    key: StreamKey
    access: Access
    last_seen: float = field(default_factory=time.monotonic)


class HlsViewers:
    def __init__(
        self, admit: Admit, idle_timeout: float = 60.0, max_sessions: int = MAX_SESSIONS
    ) -> None:
        self.admit = admit
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.sessions: dict[str, ViewerSession] = {}
        self.admissions = 0  # how many times the check (and hook) ran: once per session
        self._sweeper: asyncio.Task[None] | None = None

    async def open(
        self, app: str, stream: str, connection: HTTPConnection
    ) -> tuple[str | None, Access]:
        """Admits a new viewer; (token, access) when allowed, (None, access) when not."""
        self.admissions += 1
        access = await self.admit(play_request("hls", app, stream, connection))
        if not access.ok:
            return None, access
        token = secrets.token_urlsafe(16)
        self.sessions[token] = ViewerSession(StreamKey(app, stream), access)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())
        return token, access

    @property
    def full(self) -> bool:
        self.sweep()
        return len(self.sessions) >= self.max_sessions

    def valid(self, token: str | None, key: StreamKey) -> bool:
        """True for a live session of this stream (and counts the fetch as activity)."""
        self.sweep()
        session = self.sessions.get(token or "")
        if session is None or session.key != key:
            return False
        session.last_seen = time.monotonic()
        return True

    def end(self, token: str) -> None:
        session = self.sessions.pop(token, None)
        if session is not None:
            session.access.ended()

    def sweep(self) -> None:
        now = time.monotonic()
        for token, session in list(self.sessions.items()):
            if now - session.last_seen > self.idle_timeout:
                self.end(token)

    async def _sweep_forever(self) -> None:
        while self.sessions:
            await asyncio.sleep(max(self.idle_timeout / 4, 0.05))
            self.sweep()

    async def close(self) -> None:
        for token in list(self.sessions):
            self.end(token)
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper


def multivariant(media_uri: str, bandwidth: int) -> str:
    return (
        f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-STREAM-INF:BANDWIDTH={max(bandwidth, 1)}\n{media_uri}\n"
    )

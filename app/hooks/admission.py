"""Admission: the one decision every publish and play goes through.

The signature rule (app/auth.py) first: a bad or expired signature refuses and the hook is not
asked. Then the operator's auth hook, when configured. An admitted play emits its play start
event at once and its play stop when the entry point calls ``Access.ended``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from app.auth import Access, AccessRequest, Gate
from app.hooks.auth_hook import AuthHook
from app.hooks.events import StreamEvents

log = logging.getLogger("app.hooks")


class Admission:
    """An :data:`app.auth.Admit`: ``await admission(request) -> Access``."""

    def __init__(
        self,
        gate: Gate,
        hook: AuthHook | None = None,
        events: StreamEvents | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.gate = gate
        self.hook = hook
        self.events = events
        self.clock = clock

    async def __call__(self, request: AccessRequest) -> Access:
        signature = self.gate.check(request, self.clock())
        if not signature.ok:
            return Access(False, signature.reason)
        template = None
        reason = signature.reason
        if self.hook is not None:
            answer = await self.hook.ask(request, signature)
            if not answer.ok:
                return Access(False, answer.reason)
            template, reason = answer.template, answer.reason
        if request.action == "play" and self.events is not None:
            ended = self.events.play_started(
                request.app, request.stream, request.protocol, request.client_ip, request.query
            )
            return Access(True, reason, template, ended)
        return Access(True, reason, template)

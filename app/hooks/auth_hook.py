"""The blocking publish/play hook (SRS ``on_publish``/``on_play`` style).

Each publish and each play is POSTed as JSON to ROI_RELAY_AUTH_HOOK_URL and allowed only on a
2xx answer whose JSON body has ``"code": 0``; ``"template"`` in that answer names the ROI
template for a push. The call is awaited in the asking connection's own task, so a slow or
dead hook holds that connection only. A timeout or an unreachable hook refuses, unless
ROI_RELAY_AUTH_HOOK_FAIL_OPEN is set; an explicit refusal (any other answer) always refuses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx

from app.auth import AccessRequest, PushVerdict

log = logging.getLogger("app.hooks")

MAX_TEMPLATE_CHARS = 64


@dataclass(frozen=True, slots=True)
class HookAnswer:
    ok: bool
    reason: str
    template: str | None = None


@dataclass
class HookCounters:
    allowed: int = 0
    refused: int = 0
    unavailable: int = 0  # timeouts and connection errors (allowed or not per fail-open)


class AuthHook:
    def __init__(
        self,
        url: str,
        timeout: float = 3.0,
        fail_open: bool = False,
        counters: HookCounters | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.fail_open = fail_open
        self.counters = counters or HookCounters()
        # No cap on concurrent asks: a pool limit would make a slow hook's in-flight asks
        # hold up other connections' asks (each is still bounded by the timeout).
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
        )

    @staticmethod
    def body(request: AccessRequest, signature: PushVerdict) -> dict[str, object]:
        return {
            "action": request.action,
            "protocol": request.protocol,
            "app": request.app,
            "stream": request.stream,
            "query": dict(request.query),  # secrets kept: the hook may check them itself
            "client_ip": request.client_ip,
            "signature": {"ok": signature.ok, "reason": signature.reason},
        }

    async def ask(self, request: AccessRequest, signature: PushVerdict) -> HookAnswer:
        try:
            reply = await self._client.post(
                self.url, json=self.body(request, signature), timeout=self.timeout
            )
        except httpx.TimeoutException:
            return self._unavailable(request, f"auth hook did not answer within {self.timeout:g} s")
        except httpx.HTTPError as exc:
            return self._unavailable(request, f"auth hook unreachable ({type(exc).__name__})")
        answer = self._read(reply)
        if answer.ok:
            self.counters.allowed += 1
        else:
            self.counters.refused += 1
        return answer

    @staticmethod
    def _read(reply: httpx.Response) -> HookAnswer:
        if not 200 <= reply.status_code < 300:
            return HookAnswer(False, f"auth hook answered HTTP {reply.status_code}")
        try:
            document = reply.json()
        except ValueError:
            return HookAnswer(False, "auth hook answer is not JSON")
        if not isinstance(document, dict) or document.get("code") != 0:
            code = document.get("code") if isinstance(document, dict) else None
            return HookAnswer(False, f"auth hook refused (code {code!r})")
        template = document.get("template")
        if template is not None and (
            not isinstance(template, str) or not 0 < len(template) <= MAX_TEMPLATE_CHARS
        ):
            return HookAnswer(False, "auth hook answer: template must be a short string")
        return HookAnswer(True, "allowed by the auth hook", template)

    def _unavailable(self, request: AccessRequest, why: str) -> HookAnswer:
        self.counters.unavailable += 1
        verdict = "allowed (fail-open)" if self.fail_open else "refused"
        log.warning(
            "%s %s/%s from %s: %s: %s",
            request.action,
            request.app,
            request.stream,
            request.client_ip,
            why,
            verdict,
        )
        return HookAnswer(self.fail_open, f"{why}: {verdict}")

    async def close(self) -> None:
        await self._client.aclose()

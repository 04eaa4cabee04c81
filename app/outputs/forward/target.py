"""Forwarding destinations: ``rtmp://`` / ``rtmps://`` URLs and the rules that pick them.

A URL ``rtmp://host[:port]/app/name[?query]`` publishes ``name?query`` to application
``app`` (YouTube's ``rtmp://a.rtmp.youtube.com/live2/KEY``, Twitch's ``.../app/KEY``).
``{app}`` and ``{stream}`` in a URL stand for the forwarded stream's names.

``ROI_RELAY_FORWARD`` holds rules separated by spaces, each ``pattern=url[,url...]``, the
pattern a glob over ``app/stream``: ``live/*=rtmp://backup:1935/live/{stream}``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.hub import StreamKey

DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443}
MAX_URL_LENGTH = 2048


class TargetError(ValueError):
    """A forwarding URL or rule that cannot be used; the message names what is wrong."""


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    tls: bool
    host: str
    port: int
    app: str
    name: str  # stream name with its query

    @property
    def tc_url(self) -> str:
        scheme = "rtmps" if self.tls else "rtmp"
        return f"{scheme}://{self.host}:{self.port}/{self.app}"

    @property
    def redacted(self) -> str:
        """The URL without its stream key (what logs and the API show)."""
        scheme = "rtmps" if self.tls else "rtmp"
        return f"{scheme}://{self.host}:{self.port}/{self.app}/{self.name.split('?')[0][:4]}…"


def parse_target(url: str) -> Target:
    if len(url) > MAX_URL_LENGTH:
        raise TargetError(f"URL longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetError(f"unreadable URL: {exc}") from exc
    if parts.scheme not in DEFAULT_PORTS:
        raise TargetError(f"scheme must be rtmp or rtmps, not {parts.scheme!r}")
    if not parts.hostname:
        raise TargetError("URL has no host")
    path = parts.path.lstrip("/")
    app, _, name = path.partition("/")
    if not app or not name:
        raise TargetError("URL needs an application and a stream name: rtmp://host/app/name")
    if parts.query:
        name = f"{name}?{parts.query}"
    return Target(
        url=url,
        tls=parts.scheme == "rtmps",
        host=parts.hostname,
        port=port or DEFAULT_PORTS[parts.scheme],
        app=app,
        name=name,
    )


def expand(url: str, key: StreamKey) -> str:
    return url.replace("{app}", key.app).replace("{stream}", key.name)


@dataclass(frozen=True, slots=True)
class ForwardRule:
    pattern: str
    urls: tuple[str, ...]

    def matches(self, key: StreamKey) -> bool:
        return fnmatch.fnmatchcase(str(key), self.pattern)


def parse_rules(text: str) -> list[ForwardRule]:
    """``pattern=url[,url] ...``; raises TargetError naming the bad rule."""
    rules: list[ForwardRule] = []
    for item in text.split():
        pattern, sep, urls = item.partition("=")
        if not sep or not pattern or not urls:
            raise TargetError(f"forward rule {item!r} is not pattern=url[,url]")
        targets = tuple(u for u in urls.split(",") if u)
        for url in targets:
            parse_target(expand(url, StreamKey("app", "stream")))
        rules.append(ForwardRule(pattern, targets))
    return rules


__all__ = ["ForwardRule", "Target", "TargetError", "expand", "parse_rules", "parse_target"]

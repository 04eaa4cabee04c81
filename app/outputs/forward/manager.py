"""Which streams are forwarded where: rules from ``ROI_RELAY_FORWARD`` and per-stream
destinations set over REST, one Forwarder per (live stream, destination)."""

from __future__ import annotations

import logging
import ssl
from typing import Any

from app.config import Settings
from app.hub import Hub, Stream, StreamKey
from app.outputs.forward.forwarder import Forwarder, ForwardStatus, SessionFactory
from app.outputs.forward.target import Target, expand, parse_rules, parse_target

log = logging.getLogger("app.outputs.forward")

MAX_DESTINATIONS_PER_STREAM = 8


class ForwardManager:
    def __init__(self, hub: Hub, settings: Settings, new_session: SessionFactory) -> None:
        self.hub = hub
        self.new_session = new_session
        self.rules = parse_rules(settings.forward)
        self.backoff_initial = settings.forward_backoff_initial
        self.backoff_max = settings.forward_backoff_max
        self._tls_ca = settings.forward_tls_ca
        self._tls: ssl.SSLContext | None = None
        # Destinations added over REST, by stream (kept while the relay runs, live or not).
        self._extra: dict[StreamKey, list[Target]] = {}
        self._forwarders: dict[StreamKey, dict[str, Forwarder]] = {}
        hub.on_stream_opened.append(self._stream_opened)
        hub.on_stream_closed.append(self._stream_closed)

    def tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            cafile = str(self._tls_ca) if self._tls_ca is not None else None
            self._tls = ssl.create_default_context(cafile=cafile)
        return self._tls

    def targets(self, key: StreamKey) -> list[Target]:
        found: dict[str, Target] = {}
        for rule in self.rules:
            if rule.matches(key):
                for url in rule.urls:
                    target = parse_target(expand(url, key))
                    found.setdefault(target.url, target)
        for target in self._extra.get(key, []):
            found.setdefault(target.url, target)
        return list(found.values())

    # ------------------------------------------------------------------ REST

    def add(self, key: StreamKey, url: str) -> Target:
        """Adds a destination (raises TargetError for a bad URL, ValueError when full)."""
        target = parse_target(expand(url, key))
        extra = self._extra.setdefault(key, [])
        if any(t.url == target.url for t in extra):
            return target
        if len(self.targets(key)) >= MAX_DESTINATIONS_PER_STREAM:
            raise ValueError(f"at most {MAX_DESTINATIONS_PER_STREAM} destinations per stream")
        extra.append(target)
        stream = self.hub.get(key)
        if stream is not None:
            self._start(stream, target)
        return target

    async def remove(self, key: StreamKey, url: str | None = None) -> int:
        """Drops REST destinations (all, or the one with this URL); returns how many."""
        extra = self._extra.get(key, [])
        gone = [t for t in extra if url is None or t.url == expand(url, key)]
        self._extra[key] = [t for t in extra if t not in gone]
        running = self._forwarders.get(key, {})
        for target in gone:
            forwarder = running.pop(target.url, None)
            if forwarder is not None:
                await forwarder.stop()
        return len(gone)

    def status(self, key: StreamKey) -> list[dict[str, Any]]:
        running = self._forwarders.get(key, {})
        out = []
        for target in self.targets(key):
            forwarder = running.get(target.url)
            if forwarder is not None:
                out.append(forwarder.refresh().as_dict())
            else:
                out.append(ForwardStatus(url=target.redacted, state="idle").as_dict())
        return out

    def all_forwarders(self) -> list[tuple[StreamKey, Forwarder]]:
        return [(k, f) for k, fs in self._forwarders.items() for f in fs.values()]

    # ------------------------------------------------------------------ hub listeners

    def _stream_opened(self, stream: Stream) -> None:
        for target in self.targets(stream.key):
            self._start(stream, target)

    def _start(self, stream: Stream, target: Target) -> None:
        running = self._forwarders.setdefault(stream.key, {})
        current = running.get(target.url)
        if current is not None and not current.done and current.stream is stream:
            return
        running[target.url] = Forwarder(
            target,
            stream,
            backoff_initial=self.backoff_initial,
            backoff_max=self.backoff_max,
            tls_context=self.tls_context() if target.tls else None,
            new_session=self.new_session,
        )
        log.info("forwarding %s to %s", stream.key, target.redacted)

    def _stream_closed(self, stream: Stream) -> None:
        # Forwarders end on their own once the output ends (after the ROI stage flushes);
        # the status of the last run stays visible until the next publish.
        pass

    async def close(self) -> None:
        for _key, forwarder in self.all_forwarders():
            await forwarder.stop()
        self._forwarders.clear()


__all__ = ["MAX_DESTINATIONS_PER_STREAM", "ForwardManager"]

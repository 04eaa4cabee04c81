"""Event records sent to the operator's callback URL, in the cloud service's format.

Push start/stop carry the fields and meanings of Tencent CSS's push/interruption notification
(``event_type`` 1/0). The relay's own events use numbers of their own (listed in the README):

====== ======== ===============================================================
number kind     event
====== ======== ===============================================================
1      publish  push started (Tencent)
0      publish  push interrupted / stopped (Tencent)
1001   roi      ROI encoding applied to a push
1002   roi      ROI fell back: relayed unchanged (template, model, encoder, reason)
1101   play     a player started (any protocol)
1100   play     a player stopped (with ``play_duration`` in ms)
1201   record   a recording session is finished (the recording output's event)
1202   record   a recording stopped on an error (write error, disk full)
====== ======== ===============================================================

Every body carries ``t`` (decimal Unix expiry of the notification) and ``sign = md5(key + t)``;
both are set again on each delivery attempt (a retry an hour later is not stale).
"""

from __future__ import annotations

import hashlib
import itertools
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode

from app.auth import public_query
from app.hub import Stream

Kind = Literal["publish", "play", "roi", "record"]

PUSH_STARTED = 1
PUSH_STOPPED = 0
ROI_APPLIED = 1001
ROI_FELL_BACK = 1002
PLAY_STARTED = 1101
PLAY_STOPPED = 1100
RECORDING_FINISHED = 1201
RECORDING_FAILED = 1202

KIND_OF: dict[int, Kind] = {
    PUSH_STARTED: "publish",
    PUSH_STOPPED: "publish",
    ROI_APPLIED: "roi",
    ROI_FELL_BACK: "roi",
    PLAY_STARTED: "play",
    PLAY_STOPPED: "play",
    RECORDING_FINISHED: "record",
    RECORDING_FAILED: "record",
}

# Tencent's errcode for a push that ended; 0 = none (a start, or a clean stop).
ERR_NONE = 0


def callback_sign(key: str, t: int) -> str:
    return hashlib.md5((key + str(t)).encode("utf-8")).hexdigest()


def signed(body: Mapping[str, Any], key: str, ttl: float, now: float) -> dict[str, Any]:
    """``body`` with ``t`` = now + ttl (decimal Unix time) and ``sign = md5(key + t)``."""
    t = int(now + ttl)
    return {**body, "t": t, "sign": callback_sign(key, t)}


def stream_param(query: Mapping[str, str]) -> str:
    """The push or play URL's query with its secrets removed, as a query string."""
    return urlencode(public_query(query))


def client_ip(remote: str) -> str:
    """A publisher's ``host:port`` (``1.2.3.4:5678``, ``::1:5678``, ``[::1]:5678``) -> host."""
    host = remote.rsplit(":", 1)[0] if ":" in remote else remote
    return host.strip("[]")


@dataclass(frozen=True, slots=True)
class Origin:
    """Where events come from: ``node`` (this relay) and ``app`` (the push domain)."""

    node: str
    domain: str

    @classmethod
    def local(cls) -> Origin:
        name = socket.gethostname()
        return cls(node=name, domain=name)


Emit = Callable[[dict[str, Any]], None]


class StreamEvents:
    """Turns hub and ROI-stage notifications into event records and hands them to ``emit``.

    ``emit`` must not block (it queues): these listeners run on the event loop inside the
    hub's and the ROI stage's own calls.
    """

    def __init__(self, emit: Emit, origin: Origin, clock: Callable[[], float] = time.time) -> None:
        self.emit = emit
        self.origin = origin
        self.clock = clock
        self._sequence = itertools.count(1)
        self._boot = uuid.uuid4().hex[:8]
        self._pushes: dict[int, tuple[str, float]] = {}  # id(stream) -> (sequence, started)
        self._roi_states: dict[int, tuple[bool, str | None, str | None, str]] = {}

    def next_sequence(self) -> str:
        # Unique across restarts of this node too: the operator joins start and stop by it.
        return f"{self._boot}-{next(self._sequence)}"

    def _common(self, event_type: int, app: str, name: str, ip: str) -> dict[str, Any]:
        return {
            "event_type": event_type,
            "app": self.origin.domain,
            "appname": app,
            "stream_id": name,
            "channel_id": name,
            "event_time": int(self.clock()),
            "node": self.origin.node,
            "user_ip": ip,
        }

    # ------------------------------------------------------------------ publish (hub listeners)

    def stream_opened(self, stream: Stream) -> None:
        sequence = self.next_sequence()
        self._pushes[id(stream)] = (sequence, time.monotonic())
        body = self._common(PUSH_STARTED, stream.key.app, stream.key.name, client_ip(stream.remote))
        body.update(self._push_fields(stream, sequence))
        self.emit(body)

    def stream_closed(self, stream: Stream) -> None:
        self._roi_states.pop(id(stream), None)
        sequence, started = self._pushes.pop(id(stream), (self.next_sequence(), time.monotonic()))
        body = self._common(PUSH_STOPPED, stream.key.app, stream.key.name, client_ip(stream.remote))
        body.update(self._push_fields(stream, sequence))
        # Tencent sends it as a string of milliseconds.
        body["push_duration"] = str(int((time.monotonic() - started) * 1000))
        body["errmsg"] = "push ended"
        self.emit(body)

    @staticmethod
    def _push_fields(stream: Stream, sequence: str) -> dict[str, Any]:
        return {
            "sequence": sequence,
            "stream_param": stream_param(stream.query),
            "errcode": ERR_NONE,
            "errmsg": "",
            "width": stream.codec.width or 0,
            "height": stream.codec.height or 0,
        }

    # ------------------------------------------------------------------ ROI stage

    def roi_changed(
        self,
        stream: Stream,
        applied: bool,
        template: str | None,
        model: str | None,
        encoder: str | None,
        reason: str,
    ) -> None:
        """The ROI stage's notification (an ``on_roi_change`` listener); a repeat of the
        stream's last state (a template change re-evaluating it) is not sent again."""
        state = (applied, template, model, reason)
        if self._roi_states.get(id(stream)) == state:
            return
        self._roi_states[id(stream)] = state
        body = self._common(
            ROI_APPLIED if applied else ROI_FELL_BACK,
            stream.key.app,
            stream.key.name,
            client_ip(stream.remote),
        )
        sequence = self._pushes.get(id(stream), ("", 0.0))[0]
        body.update(
            sequence=sequence,
            template=template or "",
            model=model or "",
            encoder=encoder or "",
            reason=reason,
        )
        self.emit(body)

    # ------------------------------------------------------------------ players (admission)

    def play_started(
        self, app: str, name: str, protocol: str, ip: str, query: Mapping[str, str]
    ) -> Callable[[], None]:
        """Emits the play start; returns what emits the matching stop (once)."""
        sequence = self.next_sequence()
        started = time.monotonic()
        body = self._common(PLAY_STARTED, app, name, ip)
        body.update(sequence=sequence, protocol=protocol, stream_param=stream_param(query))
        self.emit(body)
        done = False

        def stopped() -> None:
            nonlocal done
            if done:
                return
            done = True
            stop = {**body, "event_type": PLAY_STOPPED, "event_time": int(self.clock())}
            stop["play_duration"] = str(int((time.monotonic() - started) * 1000))
            self.emit(stop)

        return stopped

    # ------------------------------------------------------------------ recording output

    def recording_event(self, name: str, payload: Mapping[str, Any]) -> None:
        """The recording output's ``on_event``: ``recording.finished`` and
        ``recording.failed`` become events 1201 and 1202 (others are not sent)."""
        event_type = {
            "recording.finished": RECORDING_FINISHED,
            "recording.failed": RECORDING_FAILED,
        }.get(name)
        if event_type is None:
            return
        app, _, stream = str(payload.get("stream", "")).partition("/")
        body = self._common(event_type, app, stream, "")
        body.update(
            session=payload.get("session") or "",
            reason=payload.get("reason") or payload.get("error") or "",
            segments=int(payload.get("segments") or 0),
            file_size=int(payload.get("bytes") or 0),
            dropped_frames=int(payload.get("dropped_frames") or 0),
        )
        self.emit(body)

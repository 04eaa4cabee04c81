"""Which streams are recorded, and their sessions across publisher reconnects.

A stream is recorded when its ``app/stream`` matches a pattern of ``ROI_RELAY_RECORD``, or
after ``POST /api/v1/streams/{app}/{stream}/record`` (``DELETE`` stops it, overriding the
pattern until the relay restarts). A publisher that reconnects within
``RECONNECT_GRACE_SECONDS`` continues the same session in a new segment; after that the
session is finished and ``recording.finished`` is emitted.
"""

from __future__ import annotations

import asyncio
import datetime
import fnmatch
import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.config import Settings
from app.hub import Hub, Stream, StreamKey
from app.outputs.record import catalog
from app.outputs.record.recorder import RecorderConfig, RecorderStatus, StreamRecorder
from app.outputs.record.retention import Retention
from app.outputs.record.segment import SegmentSummary

log = logging.getLogger("app.outputs.record")

RECONNECT_GRACE_SECONDS = 30.0

# (event name, payload): the callbacks issue delivers these; until then they are logged.
RecordingEvent = Callable[[str, dict[str, Any]], None]


def _new_session_id() -> str:
    now = datetime.datetime.now(datetime.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


class RecordingManager:
    def __init__(
        self,
        hub: Hub,
        settings: Settings,
        on_event: RecordingEvent | None = None,
        reconnect_grace: float = RECONNECT_GRACE_SECONDS,
    ) -> None:
        self.hub = hub
        self.root: Path = settings.resolved_record_dir
        self.file_format = settings.record_format
        self.segment_ms = int(settings.record_segment_seconds * 1000)
        self.min_free_bytes = int(settings.record_min_free_mb * 2**20)
        self.retention = Retention(
            max_ms=int(settings.record_max_hours * 3600_000),
            max_bytes=int(settings.record_max_gb * 2**30),
        )
        self.patterns = [p.strip() for p in settings.record.split(",") if p.strip()]
        self.on_event = on_event
        self.reconnect_grace = reconnect_grace
        self._wanted: dict[StreamKey, bool] = {}  # REST overrides of the patterns
        self._formats: dict[StreamKey, str] = {}  # REST choice of container, per stream
        self._recorders: dict[StreamKey, StreamRecorder] = {}
        self._grace_timers: dict[StreamKey, asyncio.TimerHandle] = {}
        self._stopping: set[StreamRecorder] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        hub.on_stream_opened.append(self._stream_opened)
        hub.on_stream_closed.append(self._stream_closed)

    # ------------------------------------------------------------------ policy

    def wants(self, key: StreamKey) -> bool:
        if key in self._wanted:
            return self._wanted[key]
        return any(fnmatch.fnmatchcase(str(key), p) for p in self.patterns)

    def start(self, key: StreamKey, file_format: str | None = None) -> dict[str, Any] | None:
        """REST start: records now if live, else from the next publish (in ``file_format``,
        mp4 or flv, from the next session on; default the setting)."""
        self._wanted[key] = True
        if file_format is not None:
            self._formats[key] = file_format
        stream = self.hub.get(key)
        if stream is not None:
            recorder = self._recorders.get(key)
            if recorder is None or recorder.stopped:
                self._begin(stream)
        return self.status(key)

    def stop(self, key: StreamKey) -> bool:
        self._wanted[key] = False
        return self._finish(key, "stopped by the operator")

    def status(self, key: StreamKey) -> dict[str, Any] | None:
        recorder = self._recorders.get(key)
        if recorder is None:
            return None
        return recorder.refresh().as_dict()

    def statuses(self) -> list[tuple[StreamKey, RecorderStatus]]:
        return [(key, r.refresh()) for key, r in tuple(self._recorders.items())]

    def stream_section(self, stream: Stream) -> dict[str, Any]:
        status = self.status(stream.key)
        return {"enabled": self.wants(stream.key), **(status or {"state": "off"})}

    # ------------------------------------------------------------------ hub listeners

    def _stream_opened(self, stream: Stream) -> None:
        if not self.wants(stream.key):
            return
        timer = self._grace_timers.pop(stream.key, None)
        if timer is not None:
            timer.cancel()
        recorder = self._recorders.get(stream.key)
        if recorder is not None and not recorder.stopped:
            log.info("recording %s: publisher back, new segment", stream.key)
            recorder.attach(stream)
            return
        self._begin(stream)

    def _stream_closed(self, stream: Stream) -> None:
        recorder = self._recorders.get(stream.key)
        if recorder is None or recorder.stopped:
            return
        loop = asyncio.get_running_loop()
        self._grace_timers[stream.key] = loop.call_later(
            self.reconnect_grace, self._finish, stream.key, "publisher gone"
        )

    # ------------------------------------------------------------------ sessions

    def _begin(self, stream: Stream) -> None:
        if any(
            part in ("", ".", "..") or "/" in part for part in (stream.key.app, stream.key.name)
        ):
            log.error("recording %s refused: not a single path segment per name", stream.key)
            return
        session = _new_session_id()
        config = RecorderConfig(
            session_dir=self.root / stream.key.app / stream.key.name / session,
            file_format=self._formats.get(stream.key, self.file_format),
            segment_ms=self.segment_ms,
            min_free_bytes=self.min_free_bytes,
            retention=self.retention,
        )
        try:
            recorder = StreamRecorder(
                stream.key, session, config, self._segment_done, self._recorder_failed
            )
        except OSError as exc:
            log.error("recording %s cannot start: %s", stream.key, exc)
            self._emit("recording.failed", {"stream": str(stream.key), "error": str(exc)})
            return
        self._recorders[stream.key] = recorder
        recorder.attach(stream)
        log.info("recording %s: session %s in %s", stream.key, session, config.session_dir)
        self._emit("recording.started", {"stream": str(stream.key), "session": session})

    def _finish(self, key: StreamKey, reason: str) -> bool:
        timer = self._grace_timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        recorder = self._recorders.get(key)
        if recorder is None or recorder.stopped:
            return False
        recorder.stop()
        self._stopping.add(recorder)
        task = asyncio.get_running_loop().create_task(self._finished(recorder, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _t: self._stopping.discard(recorder))
        return True

    async def _finished(self, recorder: StreamRecorder, reason: str) -> None:
        await recorder.wait_stopped()
        # The one call site of the "recording finished" event (app/hooks delivers it).
        self._emit(
            "recording.finished",
            {
                "stream": str(recorder.key),
                "session": recorder.status.session,
                "reason": reason,
                **recorder.status.as_dict(),
            },
        )

    def _segment_done(self, summary: SegmentSummary) -> None:
        log.info(
            "recorded %s: %d ms, %d video / %d audio frames, %d bytes",
            summary.path,
            summary.duration_ms,
            summary.video_frames,
            summary.audio_frames,
            summary.bytes,
        )

    def _recorder_failed(self, recorder: StreamRecorder, reason: str) -> None:
        self._emit(
            "recording.failed",
            {"stream": str(recorder.key), "session": recorder.status.session, "error": reason},
        )

    def _emit(self, name: str, payload: dict[str, Any]) -> None:
        log.info("event %s %s", name, payload)
        if self.on_event is not None:
            self.on_event(name, payload)

    # ------------------------------------------------------------------ catalogue

    def open_ids(self) -> frozenset[str]:
        return frozenset(
            r.status.current for r in self._recorders.values() if r.status.current and not r.stopped
        )

    def list(self, app: str | None = None, stream: str | None = None) -> list[dict[str, Any]]:
        open_ids = self.open_ids()
        return [r.as_dict(open_ids) for r in catalog.recordings(self.root, app, stream)]

    def find(self, recording_id: str) -> catalog.Recording | None:
        return catalog.find(self.root, recording_id)

    async def close(self) -> None:
        for key in list(self._recorders):
            self._finish(key, "relay shutting down")
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


__all__ = ["RECONNECT_GRACE_SECONDS", "RecordingManager"]

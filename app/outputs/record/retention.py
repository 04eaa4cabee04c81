"""Retention per stream: at most N hours and N bytes of segments, the oldest deleted first.

Runs in the recording thread after each segment closes. The newest segment is never
deleted (it is the one just written), so a limit smaller than one segment keeps one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from app.outputs.record.catalog import Recording, recordings

log = logging.getLogger("app.outputs.record")


@dataclass(frozen=True, slots=True)
class Retention:
    max_ms: int = 0  # 0: no limit
    max_bytes: int = 0


def _size(recording: Recording) -> int:
    return sum(p.stat().st_size for p in recording.files() if p.exists())


def apply_retention(stream_dir: Path, rule: Retention) -> list[str]:
    """Deletes the oldest segments of one stream (``<root>/<app>/<stream>``) over the limits;
    returns the ids deleted."""
    if not (rule.max_ms or rule.max_bytes):
        return []
    root = stream_dir.parent.parent
    segments = recordings(root, app=stream_dir.parent.name, stream=stream_dir.name)
    sizes = [_size(r) for r in segments]
    durations = [int((r.summary() or {}).get("duration_ms") or 0) for r in segments]
    total_bytes, total_ms = sum(sizes), sum(durations)
    deleted: list[str] = []
    for recording, size, duration in zip(segments[:-1], sizes, durations, strict=False):
        over_bytes = rule.max_bytes and total_bytes > rule.max_bytes
        over_time = rule.max_ms and total_ms > rule.max_ms
        if not (over_bytes or over_time):
            break
        for path in recording.files():
            path.unlink(missing_ok=True)
        total_bytes -= size
        total_ms -= duration
        deleted.append(recording.id)
        session_dir = recording.media.parent
        if not any(session_dir.iterdir()):
            session_dir.rmdir()
    if deleted:
        log.info("retention on %s deleted %s", stream_dir, ", ".join(deleted))
    return deleted


__all__ = ["Retention", "apply_retention"]

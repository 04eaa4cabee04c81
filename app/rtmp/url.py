"""Where a push or play names its stream: app, stream name and query, from the RTMP connect
``app``/``tcUrl`` and the publish/play name.

Clients split one URL differently. FFmpeg and GStreamer put ``live`` in app and
``stream?txSecret=..`` in the name; OBS with the query in its "Server" field sends app
``live?txSecret=..`` and tcUrl ``rtmp://h/live?txSecret=..`` with a bare key; a "Server" of
``rtmp://h/`` with key ``live/stream`` leaves app empty. All of them mean the same stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

MAX_NAME_LENGTH = 256
# In a play's query: another relay (an edge, another worker) pulling the stream to serve its
# own players. Its writes are not merged (ROI_RELAY_WRITE_MERGE_MS): the edge merges for its
# players, and one connection's writes cost nothing worth a second delay.
RELAY_PULL_PARAM = "roi_relay_pull"


class StreamNameError(ValueError):
    """The app/stream names do not make a usable stream key."""


@dataclass(frozen=True, slots=True)
class StreamTarget:
    app: str
    stream: str
    query: dict[str, str]


def _split_query(text: str) -> tuple[str, dict[str, str]]:
    path, sep, query = text.partition("?")
    return path, dict(parse_qsl(query, keep_blank_values=True)) if sep else {}


def _check_segment(value: str, what: str) -> None:
    if not value:
        raise StreamNameError(f"empty {what} name")
    if len(value) > MAX_NAME_LENGTH:
        raise StreamNameError(f"{what} name longer than {MAX_NAME_LENGTH} characters")
    if value in (".", "..") or "/" in value or "\\" in value:
        raise StreamNameError(f"{what} name {value!r} is not a single path segment")
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in value):
        raise StreamNameError(f"{what} name contains control characters")


def parse_stream_target(app: str, tc_url: str, name: str) -> StreamTarget:
    """Resolves the stream a publish/play refers to. Query parameters found in the stream
    name win over those in app, which win over those in tcUrl."""
    query = dict(_split_query(tc_url)[1])
    app_path, app_query = _split_query(app)
    query.update(app_query)
    name_path, name_query = _split_query(name)
    query.update(name_query)

    app_path = app_path.strip("/")
    name_path = name_path.strip("/")
    if "/" in name_path:
        head, _, tail = name_path.rpartition("/")
        if not app_path or head == app_path:
            app_path, name_path = head, tail
    _check_segment(app_path, "app")
    _check_segment(name_path, "stream")
    return StreamTarget(app_path, name_path, query)

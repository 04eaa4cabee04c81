"""Push/play URL parsing: the same stream however the client split the URL."""

from __future__ import annotations

import pytest

from app.rtmp.url import StreamNameError, parse_stream_target

Q = {"txSecret": "abc", "txTime": "65F0", "roirecognition": "roiface1"}
QS = "txSecret=abc&txTime=65F0&roirecognition=roiface1"


@pytest.mark.parametrize(
    ("app", "tc_url", "name"),
    [
        ("live", "rtmp://h:1935/live", f"cam?{QS}"),  # FFmpeg, GStreamer
        (f"live?{QS}", f"rtmp://h/live?{QS}", "cam"),  # OBS: query in the Server field
        ("live", f"rtmp://h/live?{QS}", "cam"),  # query only in tcUrl
        ("", "rtmp://h/", f"live/cam?{QS}"),  # Server rtmp://h/ with key live/cam
        ("live", "rtmp://h/live", f"live/cam?{QS}"),  # app repeated in the key
        ("live/", "rtmp://h/live/", f"/cam?{QS}"),  # stray slashes
    ],
)
def test_every_client_layout_gives_the_same_target(app: str, tc_url: str, name: str) -> None:
    target = parse_stream_target(app, tc_url, name)
    assert (target.app, target.stream, target.query) == ("live", "cam", Q)


def test_name_query_wins_over_app_and_tc_url() -> None:
    target = parse_stream_target("live?a=app&b=app", "rtmp://h/live?a=tc&b=tc&c=tc", "s?a=name")
    assert target.query == {"a": "name", "b": "app", "c": "tc"}


def test_percent_encoding_and_blank_values() -> None:
    target = parse_stream_target("live", "", "s?x=a%2Fb&empty=")
    assert target.query == {"x": "a/b", "empty": ""}


def test_no_query() -> None:
    target = parse_stream_target("live", "rtmp://h/live", "s")
    assert target.query == {} and target.stream == "s"


@pytest.mark.parametrize(
    ("app", "name", "message"),
    [
        ("live", "", "empty stream"),
        ("live", "?txSecret=1", "empty stream"),
        ("", "cam", "empty app"),
        ("live", "other/cam", "single path segment"),
        ("live", "..", "single path segment"),
        ("live", "a\\b", "single path segment"),
        ("live", "cam\x00", "control characters"),
        ("live", "x" * 300, "longer than"),
    ],
)
def test_unusable_names(app: str, name: str, message: str) -> None:
    with pytest.raises(StreamNameError, match=message):
        parse_stream_target(app, "", name)

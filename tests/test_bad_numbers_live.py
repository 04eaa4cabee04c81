"""Non-finite numbers and unencodable strings from clients, on a live relay (issue 17, 4 and 10):
metadata values are dropped where they enter the hub, API answers are 4xx, never 500 or NaN."""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

import httpx
import pytest

from app.hub import sanitized_metadata
from app.rtmp import amf0
from app.rtmp.chunk import MessageType
from tests.support.relay_harness import RunningRelay
from tests.support.rtmp_client import SocketClient


def _strict_json(text: str) -> Any:
    def refuse(name: str) -> None:
        raise AssertionError(f"the response carries {name}: {text[:200]}")

    return json.loads(text, parse_constant=refuse)


def _publish(relay: RunningRelay, name: str) -> SocketClient:
    client = SocketClient(relay.relay.rtmp_port)
    client.handshake_and_connect("live")
    client.send(client.proto.command("createStream", None))
    client.wait_for(lambda: sum(c[0] == "_result" for c in client.proto.commands()) >= 2)
    client.send(client.proto.command("publish", None, name, "live", stream_id=1))
    client.wait_for(
        lambda: any(s.get("code") == "NetStream.Publish.Start" for s in client.proto.statuses())
    )
    return client


def _send_metadata(client: SocketClient, metadata: dict[str, Any]) -> None:
    payload = amf0.encode("@setDataFrame", "onMetaData", amf0.ECMAArray(metadata))
    client.send(client.proto.writer.write(4, MessageType.DATA_AMF0, 1, 0, payload))


def _stream(http: httpx.Client, name: str) -> dict[str, Any]:
    reply = http.get(f"/api/v1/streams/live/{name}")
    assert reply.status_code == 200, reply.text
    return _strict_json(reply.text)


def test_sanitized_metadata_drops_non_finite_and_absurd_values() -> None:
    clean = sanitized_metadata(
        {
            "width": math.inf,
            "height": 480.0,
            "framerate": math.nan,
            "videodatarate": math.inf,
            "audiodatarate": -5.0,
            "fps": 1e300,
            "encoder": "Lavf",
            "stereo": True,
            "nested": {"a": math.nan, "b": 1.0, "c": [math.inf, 2.0]},
        }
    )
    assert clean == {
        "height": 480.0,
        "encoder": "Lavf",
        "stereo": True,
        "nested": {"b": 1.0, "c": [2.0]},
    }


def test_non_finite_metadata_is_dropped_and_the_connection_goes_on(
    relay: RunningRelay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client = _publish(relay, "nan")
    try:
        _send_metadata(
            client,
            {
                "width": math.inf,
                "height": math.inf,
                "framerate": math.nan,
                "videodatarate": math.inf,
                "duration": -math.inf,
            },
        )
        with httpx.Client(base_url=relay.http_url, timeout=5) as http:
            time.sleep(0.3)
            info = _stream(http, "nan")
            assert info["width"] is None and info["height"] is None
            assert info["fps"] is None
            # The same connection is still served: good values that follow are taken.
            _send_metadata(client, {"width": 640.0, "height": 360.0, "framerate": 25.0})
            deadline = time.monotonic() + 5
            while (info := _stream(http, "nan"))["width"] is None:
                assert time.monotonic() < deadline, "the second onMetaData never arrived"
                time.sleep(0.05)
            assert (info["width"], info["height"], info["fps"]) == (640, 360, 25.0)
            listed = http.get("/api/v1/streams")
            assert listed.status_code == 200
            _strict_json(listed.text)
    finally:
        client.close()
    assert "Traceback" not in caplog.text
    assert "Fatal error" not in caplog.text


def test_nan_and_infinity_in_a_rest_body_are_422(relay: RunningRelay) -> None:
    client = _publish(relay, "body")
    try:
        with httpx.Client(base_url=relay.http_url, timeout=5) as http:
            for raw in (b'{"roi": NaN}', b'{"roi": Infinity}', b'{"roi": -Infinity}'):
                reply = http.put(
                    "/api/v1/streams/live/body/roi",
                    content=raw,
                    headers={"content-type": "application/json"},
                )
                assert reply.status_code == 422, reply.text
                detail = _strict_json(reply.text)["detail"]
                assert detail[0]["loc"] == ["body", "roi"]
            # Template bodies too (their own 422 route).
            reply = http.post(
                "/api/v1/roi-templates",
                content=b'{"name": "roi-x", "model": "face", "delta_qp": NaN}',
                headers={"content-type": "application/json"},
            )
            assert reply.status_code == 422, reply.text
            _strict_json(reply.text)
    finally:
        client.close()


def test_a_lone_surrogate_in_the_roi_string_is_422(relay: RunningRelay) -> None:
    client = _publish(relay, "sur")
    try:
        with httpx.Client(base_url=relay.http_url, timeout=5) as http:
            for raw in (b'{"roi": "\\ud800"}', b'{"roi": "0,0-64,64=-5;\\udfff"}'):
                reply = http.put(
                    "/api/v1/streams/live/sur/roi",
                    content=raw,
                    headers={"content-type": "application/json"},
                )
                assert reply.status_code == 422, reply.text
                detail = _strict_json(reply.text)["detail"]
                assert detail[0]["loc"] == ["body", "roi"]
                assert "unicode string" in detail[0]["msg"]
            # Template fields and unknown keys with a surrogate: 422, not 500.
            reply = http.post(
                "/api/v1/roi-templates",
                content=b'{"name": "roi-\\ud800", "model": "face", "\\udc00": 1}',
                headers={"content-type": "application/json"},
            )
            assert reply.status_code == 422, reply.text
            _strict_json(reply.text)
            # A good override still works afterwards.
            good = http.put("/api/v1/streams/live/sur/roi", json={"roi": "0,0-64,64=-5"})
            assert good.status_code == 200, good.text
    finally:
        client.close()

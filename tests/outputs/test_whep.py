"""WHEP: an aiortc player gets the relay's H.264 and each frame's regions on a data channel."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from app.hub import StreamKey
from app.media.packet import MediaPacket
from app.roi.regions import Region, parse_roi_json
from tests.outputs.conftest import PlayerServer
from tests.outputs.media import with_roi
from tests.outputs.whep_client import WhepPlayer
from tests.support.av_client import finish_client, start_client
from tests.support.clips import encode_flv, flv_packets

pytestmark = pytest.mark.slow


def face_at(index: int) -> list[Region]:
    """A region that moves every frame, so each frame's JSON differs from its neighbours'."""
    return [
        Region(
            10 + index % 100,
            20 + 2 * (index % 100),
            90 + index % 100,
            100 + 2 * (index % 100),
            -6,
            "face",
            0.9,
        )
    ]


@pytest.fixture(scope="module")
def roi_clip() -> list[MediaPacket]:
    return with_roi(flv_packets(encode_flv(seconds=6, gop=50)), face_at, 320, 240)


async def test_whep_frames_and_region_messages_match_the_flv_sei(
    player_server: PlayerServer, roi_clip: list[MediaPacket]
) -> None:
    feeder = player_server.feed("live", "cam", roi_clip)
    player_server.wait_live("live", "cam")
    # PyAV in its own process: it holds the GIL while it waits on the network.
    flv = start_client("play", f"{player_server.http_url}/live/cam.flv", "--sei")
    await asyncio.sleep(1.2)  # join mid-GOP: the cached GOP is replayed, then live frames
    player = WhepPlayer(f"{player_server.http_url}/live/cam/whep")
    async with httpx.AsyncClient(timeout=20) as http:
        await player.start(http)
        assert player.location is not None and player.location.startswith("/live/cam/whep/")
        assert "H264" in player.answer and "VP8" not in player.answer
        ended = await player.wait_ended(15)
        gone = await http.delete(player_server.http_url + player.location)
    await player.close()
    feeder.result(5)
    flv_docs = [doc for doc in finish_client(flv, timeout=30)["sei"] if doc is not None]
    assert ended, "the stream's end ends the WebRTC track"
    assert gone.status_code == 404, "the session was closed at the end of the stream"
    assert player_server.whep.sessions == {}

    frames = player.frames
    assert len(frames) >= 120, "about five seconds of frames from joining to the end"
    assert player.audio_frames > 100, "AAC reaches the player as Opus"
    # Every frame carries its regions in SEI, passed through untouched.
    assert all(f.sei_roi is not None for f in frames)
    flv_sei = {parse_roi_json(doc).pts: doc for doc in flv_docs}
    assert len(flv_sei) >= 140, "the HTTP-FLV player saw the stream from its start"
    by_pts = {parse_roi_json(f.sei_roi).pts: f for f in frames if f.sei_roi}
    for pts, frame in by_pts.items():
        assert flv_sei[pts] == frame.sei_roi, "WHEP frames carry the same SEI as HTTP-FLV"
    # Region messages: the same JSON as the frames, one per frame once the channel is open.
    messages = [text for _, text in player.messages]
    assert len(messages) >= len(frames) - 60
    last_shown = max(by_pts)  # a receiver outputs a frame when the next one arrives
    assert {m for m in messages if parse_roi_json(m).pts <= last_shown} <= {
        f.sei_roi for f in frames
    }
    # Aligned by timestamp: RTP time = offset + 90 * pts for every live frame, one offset.
    offsets = Counter(f.rtp_pts - 90 * parse_roi_json(f.sei_roi).pts for f in frames)
    offset, live_frames = offsets.most_common(1)[0]
    assert live_frames >= len(frames) - 60, "only the replayed cached GOP is off the live clock"
    for _, text in player.messages[-50:]:
        pts = parse_roi_json(text).pts
        if pts <= last_shown:
            assert by_pts[pts].rtp_pts == offset + 90 * pts


async def test_whep_refuses_what_it_cannot_serve(player_server: PlayerServer) -> None:
    url = f"{player_server.http_url}/live/none/whep"
    sdp_headers = {"content-type": "application/sdp"}
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.post(url, content="v=0\r\n", headers=sdp_headers)).status_code == 404
        wrong_type = await http.post(url, content="v=0", headers={"content-type": "text/plain"})
        assert wrong_type.status_code == 415 and "Content-Type" in wrong_type.json()["detail"]
        hevc = flv_packets(encode_flv(seconds=3, gop=25, codec="libx265", audio=False))
        player_server.feed("live", "hevc", hevc)
        player_server.wait_live("live", "hevc")
        await asyncio.sleep(0.2)
        h265 = await http.post(
            f"{player_server.http_url}/live/hevc/whep",
            content="v=0\r\nm=video 9",
            headers=sdp_headers,
        )
        assert h265.status_code == 422 and "H.264" in h265.json()["detail"]
        h264 = flv_packets(encode_flv(seconds=3, gop=25))
        player_server.feed("live", "avc", h264)
        player_server.wait_live("live", "avc")
        avc = f"{player_server.http_url}/live/avc/whep"
        garbage = await http.post(avc, content="v=0\r\nm=video nonsense\r\n", headers=sdp_headers)
        assert garbage.status_code == 400 and "SDP" in garbage.json()["detail"]
        not_sdp = await http.post(avc, content="hello", headers=sdp_headers)
        assert not_sdp.status_code == 400
        no_video = await http.post(avc, content="v=0\r\nm=audio 9 x\r\n", headers=sdp_headers)
        assert no_video.status_code == 400 and "m=video" in no_video.json()["detail"]
        assert (await http.delete(f"{avc}/nosuchsession")).status_code == 404
        assert (await http.patch(f"{avc}/nosuchsession")).status_code == 405
        preflight = await http.options(avc)
        assert "Location" in preflight.headers["access-control-expose-headers"]
    assert player_server.whep.sessions == {}
    assert player_server.run(_players(player_server, StreamKey("live", "avc"))) == 0


async def _players(server: PlayerServer, key: StreamKey) -> int:
    stream = server.hub.get(key)
    return stream.output.players if stream is not None else 0


async def test_abandoned_offer_is_dropped_and_players_are_counted_once(roi_clip) -> None:
    server = PlayerServer(whep_connect_timeout=1.0)
    try:
        server.feed("live", "quiet", roi_clip)
        server.wait_live("live", "quiet")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        async with httpx.AsyncClient(timeout=10) as http:
            reply = await http.post(
                f"{server.http_url}/live/quiet/whep",
                content=pc.localDescription.sdp,
                headers={"content-type": "application/sdp"},
            )
        assert reply.status_code == 201
        assert len(server.whep.sessions) == 1
        # The answer is never applied: no ICE, no media; the session goes after the timeout.
        await asyncio.sleep(1.5)
        assert server.whep.sessions == {}
        await pc.close()

        player = WhepPlayer(f"{server.http_url}/live/quiet/whep")
        async with httpx.AsyncClient(timeout=10) as http:
            await player.start(http)
            for _ in range(50):
                if player.frames and player.audio_frames:
                    break
                await asyncio.sleep(0.1)
            assert player.frames and player.audio_frames
            stream = server.hub.get(StreamKey("live", "quiet"))
            assert stream is not None and stream.output.players == 1, "one player, not two"
            gone = await http.delete(server.http_url + str(player.location))
            assert gone.status_code == 200
        await player.close()
        assert server.whep.sessions == {}
    finally:
        server.stop()

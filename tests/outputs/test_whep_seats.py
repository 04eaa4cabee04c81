"""WHEP seats and bad offers (issue 17, 7 and 10): abandoned offers from one address do not
lock other viewers out; offers aiortc cannot take apart are 400, and leave nothing behind."""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from app.hub import StreamKey
from tests.outputs.conftest import PlayerServer
from tests.outputs.whep_client import WhepPlayer
from tests.support.clips import encode_flv, flv_packets

pytestmark = pytest.mark.slow

SDP = {"content-type": "application/sdp"}


async def _offer_sdp(data_channel: bool = True) -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    if data_channel:
        pc.createDataChannel("roi")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _from(address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=10, transport=httpx.AsyncHTTPTransport(local_address=address))


async def test_abandoned_offers_from_one_address_do_not_lock_out_another_viewer() -> None:
    # Long enough for the 64 offers to go in before the first ones expire.
    server = PlayerServer(whep_connect_timeout=8.0)
    try:
        server.feed("live", "seats", flv_packets(encode_flv(seconds=25, gop=25, audio=False)))
        server.wait_live("live", "seats")
        url = f"{server.http_url}/live/seats/whep"
        offer = await _offer_sdp()
        started = time.monotonic()
        async with _from("127.0.0.1") as attacker:
            # All at once: seats are taken before the answers are made.
            replies = await asyncio.gather(
                *(attacker.post(url, content=offer, headers=SDP) for _ in range(64))
            )
        assert time.monotonic() - started < 8.0, "too slow to tell the cap from the deadline"
        codes = sorted(r.status_code for r in replies)
        pending = server.whep.max_pending_per_client
        assert codes == [201] * pending + [429] * (64 - pending), codes
        refused = next(r for r in replies if r.status_code == 429)
        assert "have not connected" in refused.json()["detail"]
        assert int(refused.headers["retry-after"]) >= 1
        assert len(server.whep.sessions) == pending

        # Another address is served while the abandoned offers still hold their seats.
        viewer = WhepPlayer(url, audio=False)
        async with _from("127.0.0.2") as http:
            await viewer.start(http)
            for _ in range(80):
                if len(viewer.frames) >= 10:
                    break
                await asyncio.sleep(0.1)
            assert len(viewer.frames) >= 10, "the second viewer got no video"
            # The abandoned offers go after the connect deadline; the viewer stays.
            for _ in range(150):
                if len(server.whep.sessions) == 1:
                    break
                await asyncio.sleep(0.1)
            assert [s.client for s in server.whep.sessions.values()] == ["127.0.0.2"]
            assert all(s.connected for s in server.whep.sessions.values())
            # ...and the first address may offer again.
            async with _from("127.0.0.1") as attacker:
                again = await attacker.post(url, content=offer, headers=SDP)
            assert again.status_code == 201, again.text
            await http.delete(server.http_url + str(viewer.location))
        await viewer.close()
    finally:
        server.stop()


async def test_offers_aiortc_cannot_take_apart_are_400(player_server: PlayerServer) -> None:
    player_server.feed("live", "bad", flv_packets(encode_flv(seconds=6, gop=25, audio=False)))
    player_server.wait_live("live", "bad")
    url = f"{player_server.http_url}/live/bad/whep"
    offer = await _offer_sdp()
    assert "a=mid:0" in offer
    bad_offers = {
        "5,000-digit mid": offer.replace("a=mid:0", "a=mid:" + "9" * 5000),
        "5,000-digit mid of the data channel": offer.replace("a=mid:1", "a=mid:" + "7" * 5000),
        "NUL in the mid": offer.replace("a=mid:0", "a=mid:0\x00"),
        "NUL in an attribute": offer.replace("a=setup:actpass", "a=setup:act\x00pass"),
        "many media sections": offer + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n" * 20,
    }
    async with httpx.AsyncClient(timeout=10) as http:
        for what, sdp in bad_offers.items():
            reply = await http.post(url, content=sdp.encode(), headers=SDP)
            assert reply.status_code == 400, (what, reply.status_code, reply.text)
            assert "SDP offer" in reply.json()["detail"], what
        # Offers that pass the checks but aiortc refuses (the first makes its pc.close()
        # raise half-way): still 400, and no sockets left open.
        before = _open_fds()
        for mangled in (
            offer.replace("a=mid:0", "a=mid:zz"),
            offer.replace("a=setup:actpass", "a=setup:sideways"),
        ):
            for _ in range(5):
                reply = await http.post(url, content=mangled, headers=SDP)
                assert reply.status_code == 400, reply.text
        await asyncio.sleep(0.5)
        assert _open_fds() <= before + 2, "refused offers left sockets open"
        good = await http.post(url, content=offer, headers=SDP)
        assert good.status_code == 201, good.text
        await http.delete(player_server.http_url + good.headers["location"])
    assert player_server.whep.sessions == {}
    stream = player_server.hub.get(StreamKey("live", "bad"))
    assert stream is not None and stream.output.players == 0

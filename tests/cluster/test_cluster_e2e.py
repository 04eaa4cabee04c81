"""Several relay processes on one database (the SQLite file, or PostgreSQL when
ROI_RELAY_TEST_POSTGRES_URL is set): a stream pushed to one node plays from every node, one
pull per edge, one publisher cluster-wide, and node or database failures end or spare
playback as they should."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets.sync.client

from tests.cluster.nodes import (
    Frames,
    Node,
    play_flv,
    play_rtmp,
    push,
    wait_live,
    wait_registered,
)

pytestmark = pytest.mark.slow


def _common(origin: Frames, edge: Frames) -> list[tuple[int, str, str | None]]:
    """The edge's frames inside the span of the origin's; each must be one of the origin's."""
    span = (origin.frames[0][0], origin.frames[-1][0])
    return [f for f in edge.frames if span[0] <= f[0] <= span[1]]


def test_edges_play_the_origin_frames_and_regions(cluster: dict[str, Node]) -> None:
    a, b, c = cluster["A"], cluster["B"], cluster["C"]
    pusher = push(f"{a.rtmp}/live/cam", 14)
    try:
        wait_live(a, "live", "cam")
        # Set through B: the per-stream API call is forwarded to A, which transcodes.
        reply = httpx.put(
            f"{b.http}/api/v1/streams/live/cam/roi", json={"roi": "16,32-112,160=-8"}, timeout=10
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["regions"] == 1
        time.sleep(2.5)  # the transcoder's output with the regions reaches the GOP cache

        async def watch() -> list[Frames]:
            return list(
                await asyncio.gather(
                    play_flv(f"{a.http}/live/cam.flv", 5, Frames()),
                    play_flv(f"{b.http}/live/cam.flv", 5, Frames()),
                    play_rtmp(f"{c.rtmp}/live/cam", 5, Frames()),
                    play_flv(f"{c.http}/live/cam.flv", 5, Frames()),
                )
            )

        on_a, on_b, rtmp_c, flv_c = asyncio.run(watch())
        with websockets.sync.client.connect(
            f"ws://127.0.0.1:{b.http_port}/live/cam/roi", open_timeout=10
        ) as ws:
            feed = ws.recv(timeout=10)
        # One directory entry, held by A, seen alike from every node.
        for node in (a, b, c):
            entries = [e for e in node.directory() if e["stream"] == "cam"]
            assert [e["node_id"] for e in entries] == ["A"]
        # B's local copy is an edge pull, never transcoded there.
        copy = httpx.get(f"{b.http}/api/v1/streams", timeout=5).json()
        copy = [s for s in copy if s["stream"] == "cam"]
    finally:
        pusher.kill()
        pusher.wait()
    assert len(on_a.frames) >= 50, on_a
    assert not on_b.redirects and flv_c.redirects == [f"{c.http}/live/cam.flv"]
    a_frames = set(on_a.frames)
    for edge in (on_b, rtmp_c, flv_c):
        assert edge.error is None and edge.keyframe_first, edge.error
        inside = _common(on_a, edge)
        assert len(inside) >= 40
        # Byte for byte the origin's frames, ROI SEI included, at the same timestamps.
        assert set(inside) <= a_frames
        assert all(roi is not None and '"16,32-112,160=-8"' in roi for _, _, roi in inside)
    # The edges' feed comes from the SEI read back at the edge: the same regions.
    assert '"roi":"16,32-112,160=-8"' in feed.replace(" ", "")
    assert copy and copy[0]["remote"] == "edge pull from A"
    assert copy[0]["roi"]["applied"] is False


def test_one_pull_per_edge_for_fifty_players(cluster: dict[str, Node]) -> None:
    a, b = cluster["A"], cluster["B"]
    pulls_before = b.metric("roi_relay_cluster_edge_pulls_started_total")
    pusher = push(f"{a.rtmp}/live/many", 12)
    try:
        wait_live(a, "live", "many")

        async def fifty() -> tuple[list[Frames], int]:
            players = [
                asyncio.create_task(play_flv(f"{b.http}/live/many.flv", 5, Frames()))
                for _ in range(50)
            ]
            await asyncio.sleep(3)
            async with httpx.AsyncClient() as client:
                on_a = (await client.get(f"{a.http}/api/v1/streams/live/many", timeout=5)).json()
            return list(await asyncio.gather(*players)), on_a["players"]

        got, players_at_origin = asyncio.run(fifty())
    finally:
        pusher.kill()
        pusher.wait()
    assert b.metric("roi_relay_cluster_edge_pulls_started_total") == pulls_before + 1
    assert players_at_origin == 1  # the origin sees B's one pull, not its 50 players
    for frames in got:
        assert frames.error is None and frames.keyframe_first
        assert len(frames.frames) >= 40


def test_hls_and_kick_through_an_edge(cluster: dict[str, Node]) -> None:
    a, b = cluster["A"], cluster["B"]
    pusher = push(f"{a.rtmp}/live/hls", 30)
    try:
        wait_live(a, "live", "hls")
        playlist = httpx.get(f"{b.http}/live/hls.m3u8", timeout=20)
        assert playlist.status_code == 200, playlist.text
        segment = next(line for line in playlist.text.splitlines() if line.endswith(".ts"))
        # One segmenter, the origin's: a player whose requests land on different nodes
        # (a load balancer, a browser's connection pool over --workers) sees one playlist.
        for _ in range(4):
            time.sleep(1)
            got = httpx.get(f"{b.http}/live/{segment}", timeout=10)
            assert got.status_code == 200 and got.content[:1] == b"G"  # MPEG-TS sync byte
            assert httpx.get(f"{a.http}/live/{segment}", timeout=10).content == got.content
        local_b = httpx.get(f"{b.http}/api/v1/streams", timeout=5).json()
        assert all(s["stream"] != "hls" for s in local_b)  # passed through, not pulled
        # A kick sent to B acts on A, where the publisher is.
        kicked = httpx.delete(f"{b.http}/api/v1/streams/live/hls", timeout=10)
        assert kicked.status_code == 204, kicked.text
        pusher.wait(15)  # dropped long before its 30 s (FFmpeg's exit code then varies)
        gone = httpx.get(f"{a.http}/api/v1/streams/live/hls", timeout=5)
        assert gone.status_code == 404
    finally:
        pusher.kill()
        pusher.wait()


def test_second_publisher_on_another_node_is_refused(cluster: dict[str, Node]) -> None:
    a, b = cluster["A"], cluster["B"]
    first = push(f"{a.rtmp}/live/dup", 10)
    try:
        before = wait_live(a, "live", "dup")
        deadline = time.monotonic() + 5  # B's next heartbeat reads A's entry
        while not any(e["stream"] == "dup" for e in b.directory()):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1.0)
        second = push(f"{b.rtmp}/live/dup", 3)
        _, err = second.communicate(timeout=30)
        assert second.returncode != 0
        assert b"already has a publisher on node A" in err
        after = httpx.get(f"{a.http}/api/v1/streams/live/dup", timeout=5).json()
        assert after["remote"] == before["remote"]
        assert [e["node_id"] for e in b.directory() if e["stream"] == "dup"] == ["A"]
    finally:
        first.kill()
        first.wait()


def test_origin_killed_edges_end_and_the_stream_comes_back_elsewhere(
    cluster: dict[str, Node], database_url: str, tmp_path
) -> None:
    b, c = cluster["B"], cluster["C"]
    origin = Node("D", tmp_path, database_url)
    try:
        origin.wait_ready()
        pusher = push(f"{origin.rtmp}/live/gone", 30)
        wait_live(origin, "live", "gone")

        async def kill_during_playback() -> tuple[list[Frames], float]:
            players = [
                asyncio.create_task(play_flv(f"{b.http}/live/gone.flv", 20, Frames())),
                asyncio.create_task(play_rtmp(f"{c.rtmp}/live/gone", 20, Frames())),
            ]
            await asyncio.sleep(3)
            origin.kill()
            killed_at = time.monotonic()
            return list(await asyncio.gather(*players)), killed_at

        (flv_b, rtmp_c), killed_at = asyncio.run(kill_during_playback())
        pusher.kill()
        pusher.wait()
        for frames in (flv_b, rtmp_c):
            assert len(frames.frames) >= 25  # it played before the kill
            assert frames.ended_cleanly, frames.error
            assert frames.ended_at is not None and frames.ended_at - killed_at < 10
        deadline = time.monotonic() + 10
        while any(e["stream"] == "gone" for e in c.directory()):
            assert time.monotonic() < deadline, "the dead node's entry did not expire"
            time.sleep(0.3)
        # The broadcaster reconnects to B: playable from C again.
        again = push(f"{b.rtmp}/live/gone", 10)
        try:
            wait_live(b, "live", "gone")
            replay = asyncio.run(play_flv(f"{c.http}/live/gone.flv", 3, Frames()))
        finally:
            again.kill()
            again.wait()
        assert replay.error is None and len(replay.frames) >= 25
        assert [e["node_id"] for e in c.directory() if e["stream"] == "gone"] in (["B"], [])
    finally:
        origin.stop()


def test_workers_share_the_public_ports(database_url: str, backend: str, tmp_path) -> None:
    if backend != "sqlite":
        pytest.skip("--workers uses the SQLite file of one machine")
    node = Node("W", tmp_path, f"sqlite:///{tmp_path / 'workers.db'}", workers=2)
    try:
        node.wait_ready(nodes=2)
        workers = httpx.get(f"{node.http}/api/v1/cluster/nodes", timeout=5).json()["nodes"]
        assert sorted(w["node_id"] for w in workers) == ["W-w0", "W-w1"]
        pusher = push(f"{node.rtmp}/live/cores", 12)
        try:
            wait_registered(node)
            holder = node.directory()[0]["node_id"]
            time.sleep(1)

            async def players() -> tuple[list[Frames], list[dict[str, Any]]]:
                playing = [
                    asyncio.create_task(play_flv(f"{node.http}/live/cores.flv", 4, Frames()))
                    for _ in range(12)
                ]
                await asyncio.sleep(2.5)
                async with httpx.AsyncClient(timeout=10) as client:
                    listed = (await client.get(f"{node.http}/api/v1/streams")).json()
                return list(await asyncio.gather(*playing)), listed

            got, listed = asyncio.run(players())
            second = push(f"{node.rtmp}/live/cores", 3)
            _, err = second.communicate(timeout=30)
        finally:
            pusher.kill()
            pusher.wait()
        for frames in got:
            assert frames.error is None and frames.keyframe_first and len(frames.frames) >= 40
        # The machine's stream list: the stream once, with every worker's players.
        assert [(s["stream"], s["players"]) for s in listed] == [("cores", 12)]
        # A second publisher is refused whichever worker it reaches.
        assert second.returncode != 0
        # Players reached both workers: the other one pulled the stream from the holder. The
        # public /metrics answers for both workers, each sample labelled with its worker.
        other = next(w["node_id"] for w in workers if w["node_id"] != holder)
        pulls = "roi_relay_cluster_edge_pulls_started_total"
        assert node.metric(pulls, worker=other) == 1
        assert node.metric(pulls, worker=holder) == 0
        assert node.metric("roi_relay_streams_started_total", worker=holder) == 1
    finally:
        node.stop()


def test_database_outage_spares_local_playback(cluster: dict[str, Node], backend: str) -> None:
    if backend != "postgres":
        pytest.skip("stopping the database mid-stream needs the PostgreSQL server")
    from tests.cluster.conftest import pg_start, pg_stop

    a, b = cluster["A"], cluster["B"]
    pusher = push(f"{a.rtmp}/live/local", 40)
    try:
        wait_live(a, "live", "local")

        async def outage() -> tuple[Frames, Frames, bytes, bytes]:
            local = asyncio.create_task(play_flv(f"{a.http}/live/local.flv", 16, Frames()))
            edge = asyncio.create_task(play_flv(f"{b.http}/live/local.flv", 16, Frames()))
            await asyncio.sleep(2)
            await asyncio.to_thread(pg_stop)
            deadline = time.monotonic() + 10
            while a.metric("roi_relay_cluster_directory_up") != 0:
                assert time.monotonic() < deadline, "the outage was not noticed"
                await asyncio.sleep(0.3)
            refused = push(f"{a.rtmp}/live/during", 3)
            _, during = await asyncio.to_thread(refused.communicate, None, 30)
            await asyncio.sleep(2)
            await asyncio.to_thread(pg_start)
            deadline = time.monotonic() + 20
            while a.metric("roi_relay_cluster_directory_up") != 1:
                assert time.monotonic() < deadline, "the node did not recover"
                await asyncio.sleep(0.3)
            after = push(f"{a.rtmp}/live/after", 6)
            await asyncio.to_thread(wait_live, a, "live", "after")
            after.kill()
            _, after_err = await asyncio.to_thread(after.communicate, None, 30)
            return await local, await edge, during, after_err

        local, edge, during, _ = asyncio.run(outage())
    finally:
        pusher.kill()
        pusher.wait()
    assert b"directory is unreachable" in during
    assert a.metric("roi_relay_cluster_directory_outages_total") >= 1
    for frames in (local, edge):
        assert frames.error is None and not frames.ended_cleanly  # still playing at the end
        stamps = [f[0] for f in frames.frames]
        assert len(stamps) >= 16 * 25 * 0.8
        assert max(b - a for a, b in zip(stamps, stamps[1:], strict=False)) < 1000


def _worker_pid(supervisor: int, node_id: str) -> int:
    """The pid of the ``--workers`` child running as ``node_id``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if parent == supervisor and f"ROI_RELAY_NODE_ID={node_id}".encode() in environ:
            return int(entry.name)
    raise LookupError(node_id)


def test_workers_holder_killed_players_end_and_it_comes_back(backend: str, tmp_path) -> None:
    if backend != "sqlite":
        pytest.skip("--workers uses the SQLite file of one machine")
    node = Node("K", tmp_path, f"sqlite:///{tmp_path / 'workers.db'}", workers=2)
    try:
        node.wait_ready(nodes=2)
        pusher = push(f"{node.rtmp}/live/w", 30)
        wait_registered(node)
        holder = node.directory()[0]
        other = next(n for n in node.workers() if n["node_id"] != holder["node_id"])
        time.sleep(1)

        async def kill_holder() -> tuple[Frames, float]:
            # On the other worker's own address: a player there is served by its edge pull.
            player = asyncio.create_task(play_flv(f"{other['http_url']}/live/w.flv", 20, Frames()))
            await asyncio.sleep(3)
            os.kill(_worker_pid(node.proc.pid, holder["node_id"]), signal.SIGKILL)
            return await player, time.monotonic()

        frames, _ = asyncio.run(kill_holder())
        pusher.kill()
        pusher.wait()
        assert len(frames.frames) >= 25 and frames.ended_cleanly, frames.error
        # The supervisor restarts the dead worker; the broadcaster's new push plays again.
        node.wait_ready(nodes=2)
        deadline = time.monotonic() + 15
        while any(e["stream"] == "w" for e in node.directory()):
            assert time.monotonic() < deadline, "the dead worker's entry did not expire"
            time.sleep(0.3)
        again = push(f"{node.rtmp}/live/w", 8)
        try:
            wait_registered(node)
            time.sleep(1)
            replay = asyncio.run(play_flv(f"{node.http}/live/w.flv", 3, Frames()))
        finally:
            again.kill()
            again.wait()
        assert replay.error is None and len(replay.frames) >= 25
    finally:
        node.stop()


def test_whep_at_an_edge_gets_frames_and_the_origin_regions(cluster: dict[str, Node]) -> None:
    from tests.outputs.whep_client import WhepPlayer

    a, b = cluster["A"], cluster["B"]
    pusher = push(f"{a.rtmp}/live/rtc", 16)
    try:
        wait_live(a, "live", "rtc")
        reply = httpx.put(
            f"{a.http}/api/v1/streams/live/rtc/roi", json={"roi": "16,32-112,160=-8"}, timeout=10
        )
        assert reply.status_code == 200, reply.text
        time.sleep(2.5)

        async def watch() -> WhepPlayer:
            player = WhepPlayer(f"{b.http}/live/rtc/whep", audio=False)
            async with httpx.AsyncClient(timeout=20) as http:
                await player.start(http)
                await asyncio.sleep(5)
            await player.close()
            return player

        player = asyncio.run(watch())
    finally:
        pusher.kill()
        pusher.wait()
    assert player.status == 201
    assert len(player.frames) >= 25
    # Regions on the data channel at the edge: read back from the origin's SEI.
    assert player.messages and all("16,32-112,160=-8" in m for _, m in player.messages)
    assert any(f.sei_roi and "16,32-112,160=-8" in f.sei_roi for f in player.frames)


def test_hls_over_workers_is_one_playlist(backend: str, tmp_path) -> None:
    """Each worker answers HLS with the holder's playlist and segments: a browser whose
    requests reach both workers (new connections are spread by the kernel) sees one stream."""
    if backend != "sqlite":
        pytest.skip("--workers uses the SQLite file of one machine")
    node = Node("H", tmp_path, f"sqlite:///{tmp_path / 'workers.db'}", workers=2)
    try:
        node.wait_ready(nodes=2)
        pusher = push(f"{node.rtmp}/live/h", 20)
        try:
            wait_registered(node)
            workers = [w["http_url"] for w in node.workers()]
            assert len(workers) == 2
            deadline = time.monotonic() + 20
            while True:  # the first segment is cut at the second keyframe
                playlist = httpx.get(f"{workers[0]}/live/h.m3u8", timeout=10)
                segments = [ln for ln in playlist.text.splitlines() if ln.endswith(".ts")]
                if playlist.status_code == 200 and segments:
                    break
                assert time.monotonic() < deadline, playlist.text
                time.sleep(0.5)
            other = httpx.get(f"{workers[1]}/live/h.m3u8", timeout=10)
            assert other.status_code == 200
            assert set(segments) & {ln for ln in other.text.splitlines() if ln.endswith(".ts")}
            for segment in segments:
                first = httpx.get(f"{workers[0]}/live/{segment}", timeout=10)
                second = httpx.get(f"{workers[1]}/live/{segment}", timeout=10)
                assert first.status_code == second.status_code == 200
                assert first.content == second.content and first.content[:1] == b"G"
        finally:
            pusher.kill()
            pusher.wait()
    finally:
        node.stop()

"""The hub: late joiners, slow players, end of stream, switching stages."""

from __future__ import annotations

import asyncio

import pytest

from app.hub import Hub, StreamBusyError, StreamKey
from app.media.flv import TagType
from app.media.packet import MediaPacket, PacketBatch

KEY = StreamKey("live", "s")


def video(ts: int, key: bool = False, seq: bool = False, size: int = 100) -> MediaPacket:
    head = bytes([0x17 if key or seq else 0x27, 0 if seq else 1, 0, 0, 0])
    return MediaPacket.from_tag(TagType.VIDEO, ts, head + b"\x00" * size)


def audio(ts: int, seq: bool = False) -> MediaPacket:
    return MediaPacket.from_tag(TagType.AUDIO, ts, bytes([0xAF, 0 if seq else 1]) + b"\x11" * 10)


def meta() -> MediaPacket:
    return MediaPacket.from_tag(TagType.DATA, 0, b"\x02\x00\x0aonMetaData\x05")


def recording_writer(written: list[tuple[str, int]], name: str):
    """A direct writer that always has room and notes (name, timestamp) per packet."""

    def direct(batch: PacketBatch) -> bool:
        written.extend((name, p.timestamp) for p in batch.packets)
        return True

    return direct


def drain(sub) -> list[MediaPacket]:
    out = []
    while (p := sub.get_nowait()) is not None:
        out.append(p)
    return out


async def test_classification_of_tags() -> None:
    assert video(0, seq=True).sequence_header and not video(0, seq=True).keyframe
    assert video(0, key=True).keyframe
    assert not video(0).keyframe
    assert audio(0, seq=True).sequence_header and not audio(5).sequence_header


async def test_late_player_starts_with_headers_then_keyframe() -> None:
    hub = Hub()
    stream = hub.open_publisher(KEY, {}, "test")
    for p in (meta(), video(0, seq=True), audio(0, seq=True)):
        stream.source.push(p)
    for gop in range(3):
        base = gop * 1000
        stream.source.push(video(base, key=True))
        for i in range(1, 10):
            stream.source.push(video(base + i * 100))
            stream.source.push(audio(base + i * 100))
    sub = stream.output.subscribe("late")
    got = drain(sub)
    assert got[0].kind is TagType.DATA
    assert got[1].sequence_header and got[1].kind is TagType.VIDEO
    assert got[2].sequence_header and got[2].kind is TagType.AUDIO
    assert got[3].keyframe and got[3].timestamp == 2000
    assert len(got) == 3 + 1 + 18


async def test_player_joining_before_any_keyframe_waits_for_one() -> None:
    hub = Hub()
    stream = hub.open_publisher(KEY, {}, "test")
    stream.source.push(video(0, seq=True))
    sub = stream.output.subscribe("early")
    stream.source.push(video(40))  # an inter frame with no keyframe before it: undecodable
    stream.source.push(video(80, key=True))
    got = drain(sub)
    assert [p.sequence_header for p in got] == [True, False]
    assert got[1].keyframe


async def test_slow_player_skips_to_next_keyframe_without_touching_others() -> None:
    hub = Hub(player_queue_seconds=1.0)
    stream = hub.open_publisher(KEY, {}, "test")
    stream.source.push(video(0, seq=True))
    slow = stream.output.subscribe("slow")
    fast = stream.output.subscribe("fast")
    fast_got: list[MediaPacket] = []
    for i in range(100):  # 4 s of 25 fps video, keyframe every second
        stream.source.push(video(i * 40, key=(i % 25 == 0)))
        fast_got.extend(drain(fast))
    assert len([p for p in fast_got if not p.sequence_header]) == 100
    assert fast.dropped_frames == 0
    assert slow.dropped_frames > 0
    queued = drain(slow)
    frames = [p for p in queued if not p.sequence_header]
    assert frames[0].keyframe, "after skipping, playback resumes on a keyframe"
    assert frames[-1].timestamp - frames[0].timestamp <= 1000
    assert stream.output.dropped_frames == slow.dropped_frames


async def test_publisher_leaving_ends_players_cleanly() -> None:
    hub = Hub()
    stream = hub.open_publisher(KEY, {}, "test")
    stream.source.push(video(0, key=True))
    sub = stream.output.subscribe("p")
    waiter = asyncio.create_task(sub.get())
    assert (await waiter).keyframe
    pending = asyncio.create_task(sub.get())
    await asyncio.sleep(0)
    stream.close()
    assert await asyncio.wait_for(pending, 1) is None
    assert hub.get(KEY) is None
    assert stream.output.subscribe("after-end").get_nowait() is not None  # cached GOP
    # A new publisher may take the name once the old one left.
    hub.open_publisher(KEY, {}, "again")


async def test_second_publisher_refused() -> None:
    hub = Hub()
    hub.open_publisher(KEY, {}, "a")
    with pytest.raises(StreamBusyError):
        hub.open_publisher(KEY, {}, "b")
    assert hub.counters.refused_pushes == {"busy": 1}


class Doubler:
    """A processor that re-publishes every packet; stands in for the ROI transcoder."""

    def __init__(self, output) -> None:
        self.output = output
        self.fed: list[MediaPacket] = []
        self.finished = False

    def feed(self, packet: MediaPacket) -> None:
        self.fed.append(packet)
        self.output.push(packet)

    async def finish(self) -> None:
        await asyncio.sleep(0.01)
        self.finished = True


async def test_processor_switch_back_to_relay_resumes_on_keyframe_with_header() -> None:
    hub = Hub()
    stream = hub.open_publisher(KEY, {}, "test")
    stream.source.push(video(0, seq=True))
    stream.source.push(video(0, key=True))
    sub = stream.output.subscribe("p")
    drain(sub)
    proc = Doubler(stream.output)
    stream.set_processor(proc)
    stream.source.push(video(40))
    assert len(proc.fed) == 1
    stream.set_processor(None)
    stream.source.push(video(80))  # dropped: passthrough must wait for a keyframe
    stream.source.push(video(120, key=True))
    got = drain(sub)
    assert [p.timestamp for p in got] == [40, 0, 120]
    assert got[1].sequence_header and got[2].keyframe


async def test_processor_flushes_before_players_see_end() -> None:
    hub = Hub()
    stream = hub.open_publisher(KEY, {}, "test")
    proc = Doubler(stream.output)
    stream.set_processor(proc)
    sub = stream.output.subscribe("p")
    stream.close()
    assert not stream.output.ended
    await hub.wait_closed()
    assert proc.finished and stream.output.ended
    assert await sub.get() is None


async def test_end_of_sequence_tag_is_not_a_keyframe_to_start_on() -> None:
    end_of_sequence = MediaPacket.from_tag(TagType.VIDEO, 40, bytes([0x17, 2, 0, 0, 0]))
    assert not end_of_sequence.keyframe and not end_of_sequence.sequence_header
    hub = Hub()
    stream = hub.open_publisher(KEY, {}, "test")
    stream.source.push(video(0, key=True))
    stream.source.push(end_of_sequence)
    late = drain(stream.output.subscribe("late"))
    assert [p.timestamp for p in late] == [0, 40], "the GOP still starts at the real keyframe"


async def test_direct_handoff_keeps_order_and_falls_back_to_the_queue() -> None:
    hub = Hub()
    stream = hub.open_publisher(KEY, {}, "test")
    stream.source.push(video(0, key=True))
    sub = stream.output.subscribe("direct")
    written: list[list[int]] = []
    room = True

    def direct(batch: PacketBatch) -> bool:
        if room:
            written.append([p.timestamp for p in batch.packets])
        return room

    sub.direct = direct
    assert [p.timestamp for p in drain(sub)] == [0]  # what subscribe queued: the cached GOP
    stream.source.push(video(40))
    stream.source.push(audio(40))
    assert written == [], "handed over at the end of the loop pass, not per packet"
    await asyncio.sleep(0)
    assert written == [[40, 40]], "one pass's packets in one call"
    room = False
    stream.source.push(video(80))
    await asyncio.sleep(0)
    room = True
    stream.source.push(video(120))  # something is queued: it must wait its turn
    await asyncio.sleep(0)
    assert written == [[40, 40]]
    assert [p.timestamp for p in drain(sub)] == [80, 120]
    stream.source.push(video(160))
    await asyncio.sleep(0)
    assert written == [[40, 40], [160]]
    assert sub.bytes_out == sum(p.size for p in stream.output.gop)


async def test_what_the_task_takes_before_the_hand_over_goes_out_once() -> None:
    hub = Hub()
    stream = hub.open_publisher(KEY, {}, "test")
    stream.source.push(video(0, key=True))
    sub = stream.output.subscribe("direct")
    written: list[int] = []

    def direct(batch: PacketBatch) -> bool:
        written.extend(p.timestamp for p in batch.packets)
        return True

    sub.direct = direct
    drain(sub)
    stream.source.push(video(40))
    assert [p.timestamp for p in drain(sub)] == [40]  # the player's task got there first
    stream.source.push(video(80))  # in the same pass, after the task emptied the queue
    await asyncio.sleep(0)
    assert written == [80], "what the task took is not handed over again"
    assert drain(sub) == []


async def test_a_closed_or_ended_subscription_hands_nothing_over() -> None:
    hub = Hub()
    stream = hub.open_publisher(KEY, {}, "test")
    stream.source.push(video(0, key=True))
    gone, ending = stream.output.subscribe("gone"), stream.output.subscribe("ending")
    written: list[tuple[str, int]] = []

    for sub in (gone, ending):
        drain(sub)
        sub.direct = recording_writer(written, sub.name)
    stream.source.push(video(40))
    gone.close()
    stream.close()
    await asyncio.sleep(0)
    assert written == [("ending", 40)], "what was pushed before the end still goes out"
    assert await ending.get() is None


async def test_long_keyframe_interval_warns_once_in_status_and_log(caplog) -> None:
    hub = Hub()
    short = hub.open_publisher(StreamKey("live", "short"), {}, "test")
    long = hub.open_publisher(StreamKey("live", "long"), {}, "test")
    with caplog.at_level("WARNING", logger="app.hub"):
        for ts in range(0, 12_000, 40):  # 25 fps: keyframes every 2 s, and every 10 s
            short.source.push(video(ts, key=ts % 2000 == 0))
            long.source.push(video(ts, key=ts % 10_000 == 0))
    assert short.stats().warnings == ()
    (warning,) = long.stats().warnings
    assert "keyframe interval over 4 s" in warning and "1-2 s" in warning
    lines = [r.getMessage() for r in caplog.records if "keyframe interval" in r.getMessage()]
    assert lines == [f"stream live/long: {warning}"]


def live_for(stream, seconds: float, gop_s: float, start_ms: int = 0) -> int:
    """Pushes `seconds` of 25 fps video with audio, a keyframe every `gop_s`; returns the end."""
    frames = int(seconds * 25)
    every = int(gop_s * 25)
    for i in range(frames):
        ts = start_ms + i * 40
        stream.source.push(video(ts, key=(i % every == 0)))
        stream.source.push(audio(ts))
    return start_ms + frames * 40


def skip_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "fell behind" in r.getMessage()]


@pytest.mark.parametrize("gop_s", [2.0, 8.0])  # 8 s: OBS's simple mode (250 frames at 30 fps)
async def test_late_join_to_a_long_live_stream_logs_nothing_and_drops_nothing(
    caplog, gop_s: float
) -> None:
    caplog.set_level("INFO", logger="app.hub")
    hub = Hub(player_queue_seconds=4.0)
    stream = hub.open_publisher(KEY, {}, "test")
    for p in (meta(), video(0, seq=True), audio(0, seq=True)):
        stream.source.push(p)
    # Live for 30 s and ends 7.6 s into a GOP, so the cached GOP alone can exceed the queue limit.
    end = live_for(stream, 29.6 if gop_s == 2.0 else 31.6, gop_s)
    sub = stream.output.subscribe("late")
    cached = len(stream.output.gop)
    got = drain(sub)
    # A player keeping up with the live edge after its start-up burst.
    for i in range(100):
        ts = end + i * 40
        stream.source.push(video(ts, key=(ts % int(gop_s * 1000) == 0)))
        stream.source.push(audio(ts))
        got.extend(drain(sub))
    assert skip_lines(caplog) == []
    assert sub.dropped_frames == 0 and sub.skips == 0
    assert len(got) == 3 + cached + 200


async def test_real_slow_player_skips_and_logs_once_per_episode(caplog) -> None:
    caplog.set_level("INFO", logger="app.hub")
    hub = Hub(player_queue_seconds=1.0)
    stream = hub.open_publisher(KEY, {}, "test")
    for p in (meta(), video(0, seq=True), audio(0, seq=True)):
        stream.source.push(p)
    end = live_for(stream, 3.0, 1.0)
    slow = stream.output.subscribe("slow")
    end = live_for(stream, 10.0, 1.0, start_ms=end)  # never reads: 10 s behind
    assert slow.skips > 5, "it skipped at each keyframe beyond the limit"
    assert slow.dropped_frames > 150
    assert len(skip_lines(caplog)) == 1
    frames = [p for p in drain(slow) if p.kind is TagType.VIDEO and not p.sequence_header]
    assert frames[0].keyframe and frames[-1].timestamp - frames[0].timestamp <= 1000
    # Caught up; falling behind again soon after is a new episode, logged at most every 30 s.
    live_for(stream, 3.0, 1.0, start_ms=end)
    assert len(skip_lines(caplog)) == 1
    assert "skipped to a keyframe" in skip_lines(caplog)[0]


async def test_latest_refused_push_per_stream_is_remembered_within_a_bound() -> None:
    from app.hub.core import MAX_REMEMBERED_REFUSALS

    hub = Hub()
    for i in range(MAX_REMEMBERED_REFUSALS + 5):
        hub.counters.refused("auth", StreamKey("live", f"s{i}"))
    hub.counters.refused("auth", StreamKey("live", "s10"))  # again: now the newest
    hub.counters.refused("busy")  # no stream named: counted only
    refusals = hub.counters.last_refusals
    assert len(refusals) == MAX_REMEMBERED_REFUSALS
    assert StreamKey("live", "s0") not in refusals, "the oldest is forgotten first"
    assert list(refusals)[-1] == StreamKey("live", "s10")
    assert hub.counters.refused_pushes == {"auth": MAX_REMEMBERED_REFUSALS + 6, "busy": 1}


# ----------------------------------------------------------------------------- publisher lifecycle


async def test_kick_always_ends_the_stream_and_tells_its_publisher() -> None:
    hub = Hub()
    told: list[str] = []
    stream = hub.open_publisher(KEY, {}, "a", on_end=told.append)
    sub = stream.output.subscribe("player")
    stream.kick()
    assert hub.get(KEY) is None and stream.closed
    assert told == ["kicked by the operator"]
    assert await sub.get() is None
    # Even with an owner that ignores the call, nothing is left: the name is free again.
    ghost = hub.open_publisher(KEY, {}, "b", on_end=lambda _reason: None)
    ghost.kick()
    assert hub.get(KEY) is None
    hub.open_publisher(KEY, {}, "c")


async def test_takeover_policy() -> None:
    never = Hub(takeover="never")
    never.open_publisher(KEY, {}, "a")
    with pytest.raises(StreamBusyError, match="takeover is off"):
        never.open_publisher(KEY, {}, "b")

    always = Hub(takeover="always")
    first = always.open_publisher(KEY, {}, "a")
    assert always.open_publisher(KEY, {}, "b") is first and first.remote == "b"
    with pytest.raises(StreamBusyError, match="same connection"):
        always.open_publisher(KEY, {}, "b")
    with pytest.raises(StreamBusyError, match="another ROI template"):
        always.open_publisher(KEY, {"roirecognition": "t"}, "c")

    stale = Hub(takeover="stale", stale_seconds=0.2)
    stream = stale.open_publisher(KEY, {}, "a")
    stream.publisher.push(video(0, key=True))
    with pytest.raises(StreamBusyError, match="sent media"):
        stale.open_publisher(KEY, {}, "b")
    await asyncio.sleep(0.25)
    assert stale.open_publisher(KEY, {}, "b") is stream
    assert stale.counters.takeovers == 1 and stale.counters.refused_pushes["busy"] == 1


async def test_takeover_keeps_players_and_resumes_at_the_new_keyframe() -> None:
    hub = Hub(takeover="always")
    ended: list[str] = []
    stream = hub.open_publisher(KEY, {}, "old", on_end=ended.append)
    old = stream.publisher
    for p in (video(0, seq=True), video(0, key=True), video(40), video(80)):
        old.push(p)
    sub = stream.output.subscribe("player")
    drain(sub)

    assert hub.open_publisher(KEY, {"txTime": "1"}, "new") is stream
    new = stream.publisher
    assert ended == [f"{KEY} taken over by a new publisher from new"]
    assert not old.holds and new.holds and stream.query == {"txTime": "1"}
    old.push(video(120))  # a late packet of the old publisher goes nowhere
    old.close()  # nor does its leaving end the stream
    assert hub.get(KEY) is stream and not stream.closed

    new_header = video(0, seq=True, size=7)
    new_meta = meta()
    for p in (new_meta, audio(0, seq=True), new_header, video(0), video(40, key=True), video(80)):
        new.push(p)
    got = drain(sub)
    # The new onMetaData is for late joiners (FFmpeg's FLV demuxer would open a new stream
    # for it in mid-stream).
    assert stream.output.metadata is not None
    assert stream.output.metadata.timestamp == 180
    # Audio goes on; video waits for the new keyframe and starts with the new header; the
    # new timeline continues after the old one instead of starting again at zero.
    assert [(p.kind, p.sequence_header, p.keyframe) for p in got] == [
        (TagType.AUDIO, True, False),
        (TagType.VIDEO, True, False),
        (TagType.VIDEO, False, True),
        (TagType.VIDEO, False, False),
    ]
    assert got[1].payload == new_header.payload
    assert [p.timestamp for p in got] == [180, 180, 220, 260]
    new.close()
    assert hub.get(KEY) is None and await sub.get() is None


async def test_a_merge_window_gathers_the_packets_of_that_many_ms_in_one_write() -> None:
    hub = Hub(write_merge_ms=50)
    stream = hub.open_publisher(KEY, {}, "test")
    stream.source.push(video(0, key=True))
    sub = stream.output.subscribe("direct")
    drain(sub)
    written: list[tuple[float, list[int]]] = []
    loop = asyncio.get_running_loop()

    def direct(batch: PacketBatch) -> bool:
        written.append((loop.time(), [p.timestamp for p in batch.packets]))
        return True

    sub.direct = direct
    started = loop.time()
    stream.source.push(video(40))
    await asyncio.sleep(0.01)
    stream.source.push(audio(40))
    await asyncio.sleep(0.01)
    assert written == [], "still inside the window"
    await asyncio.sleep(0.06)
    ((at, timestamps),) = written
    assert timestamps == [40, 40]
    assert 0.045 <= at - started < 0.2


async def test_a_relay_pull_is_handed_over_at_the_end_of_the_pass_despite_the_window() -> None:
    hub = Hub(write_merge_ms=50)
    stream = hub.open_publisher(KEY, {}, "test")
    stream.source.push(video(0, key=True))
    player, pull = stream.output.subscribe("player"), stream.output.subscribe("edge pull")
    pull.merge_writes = False  # what the RTMP server sets for a play with roi_relay_pull
    written: list[str] = []

    for sub in (player, pull):
        drain(sub)
        sub.direct = recording_writer(written, sub.name)
    stream.source.push(video(40))
    await asyncio.sleep(0)
    assert written == [("edge pull", 40)]
    await asyncio.sleep(0.08)
    assert written == [("edge pull", 40), ("player", 40)]


async def test_a_player_waiting_for_a_keyframe_gets_none_of_the_frames_before_it() -> None:
    hub = Hub(write_merge_ms=50)
    stream = hub.open_publisher(KEY, {}, "test")
    sub = stream.output.subscribe("early")  # nothing cached yet: it waits for a keyframe
    written: list[tuple[str, int]] = []
    sub.direct = recording_writer(written, "early")
    stream.source.push(video(0, seq=True))  # starts a hand-over
    stream.source.push(video(40))  # inside that hand-over, still before any keyframe
    stream.source.push(video(80, key=True))
    stream.source.push(video(120))
    await asyncio.sleep(0.08)
    assert written == [("early", 0), ("early", 80), ("early", 120)]
    assert sub.dropped_frames == 1


async def test_players_in_step_share_one_batch_and_a_late_one_gets_only_its_packets() -> None:
    hub = Hub()
    stream = hub.open_publisher(KEY, {}, "test")
    stream.source.push(video(0, key=True))
    got: dict[str, list[PacketBatch]] = {"a": [], "b": [], "late": []}

    def writer_for(name: str):
        def direct(batch: PacketBatch) -> bool:
            got[name].append(batch)
            return True

        return direct

    subs = {name: stream.output.subscribe(name) for name in got}
    for name, sub in subs.items():
        drain(sub)
        if name != "late":
            sub.direct = writer_for(name)
    stream.source.push(video(40))
    subs["late"].direct = writer_for("late")
    assert [p.timestamp for p in drain(subs["late"])] == [40]  # its task took this one
    stream.source.push(audio(40))
    await asyncio.sleep(0)
    (a,), (b,), (late,) = got["a"], got["b"], got["late"]
    assert a is b, "one batch for every player that got all of the pass"
    assert [p.timestamp for p in a.packets] == [40, 40]
    assert late is not a and [(p.kind, p.timestamp) for p in late.packets] == [(TagType.AUDIO, 40)]
    assert a.flv_tags() == b"".join(p.flv_tag() for p in a.packets)
    assert a.flv_tags() is b.flv_tags(), "the tags are joined once"
    stream.source.push(video(80))
    await asyncio.sleep(0)
    assert got["a"][1] is got["b"][1] is got["late"][1], "the late one is in step now"

"""Tracks and their subscriptions: a sequence of packets with what a late joiner needs, and one
player's bounded view of it that skips to a keyframe when the player falls behind."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from app.media.flv import TagType
from app.media.packet import MediaPacket, PacketBatch

log = logging.getLogger("app.hub")

# A GOP longer than this is not cached: late joiners then wait for the next keyframe instead
# of the hub holding an unbounded amount of media for a publisher with a huge keyframe interval.
MAX_GOP_BYTES = 32 * 1024 * 1024
MAX_GOP_PACKETS = 4000
# Upper bounds on one subscriber's queue, beside its duration limit.
MAX_QUEUE_BYTES = 64 * 1024 * 1024
MAX_QUEUE_PACKETS = 4000
# A player that keeps falling behind is logged once per this many seconds, not once per skip.
SKIP_LOG_INTERVAL_S = 30.0


def is_media(packet: MediaPacket) -> bool:
    """An audio or video frame: what a moment of the stream is made of."""
    return packet.kind is not TagType.DATA and not packet.sequence_header


class Subscription:
    """One player's view of a track: a bounded queue that skips to keyframes when full."""

    def __init__(self, track: Track, name: str, max_buffer_ms: int, internal: bool) -> None:
        self.track = track
        self.name = name
        # Internal subscriptions (the HLS segmenter) feed other outputs; they are not players.
        self.internal = internal
        self.max_buffer_ms = max_buffer_ms
        self.created_at = time.monotonic()
        self.dropped_frames = 0
        self.bytes_out = 0
        self._queue: deque[MediaPacket] = deque()
        self._queued_bytes = 0
        self._wakeup = asyncio.Event()
        self._ended = False
        self._closed = False
        # Set by an output that can write synchronously (RTMP play, HTTP-FLV): called once a
        # loop pass (or merge window) with the packets pushed in it while nothing was queued
        # before them; returns False when the player cannot take them now (then they stay
        # queued for its task). One call, so one socket write, for all of them.
        self.direct: Callable[[PacketBatch], bool] | None = None
        # The queue holds only packets waiting for this pass's hand-over (Track._hand_over),
        # pushed since the pass's batch had this many packets.
        self._handing_over = False
        self._joined_batch_at = 0
        # Whether hand-overs wait for the track's merge window (False: the end of the pass).
        self.merge_writes = True
        # True until the next video keyframe: set at start when no GOP is cached, and after
        # an overflow, so playback always resumes on a picture the decoder can show.
        self._awaiting_keyframe = False
        # The cached GOP a late joiner starts with goes out at network speed: it is not lag.
        # Backlog is counted from the live edge at join time (Track.subscribe offers the GOP
        # right after this).
        self._join_edge_ms: int | None = track.last_timestamp if track.gop else None
        # Skips since the player last caught up (an empty queue): one episode, one log line.
        self.skips = 0
        self._skipping = False
        self._skip_logged_at = -SKIP_LOG_INTERVAL_S
        self._skips_unlogged = 0

    def start_at_next_keyframe(self) -> None:
        """Nothing cached to start from: media is dropped until a video keyframe comes."""
        self._awaiting_keyframe = True

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _buffered_ms(self) -> int:
        # Only media timestamps count: metadata and sequence headers carry timestamp 0 (or
        # whatever the publisher had when it sent them) and say nothing about lag.
        # Timestamps from ingest are already unwrapped; a small step back (FFmpeg's end-of-stream
        # flush interleaves audio and video slightly out of order) is no backlog at all.
        queue = self._queue
        if len(queue) < 2:  # runs per packet per player: the common cases without a scan
            return 0
        head, tail = queue[0], queue[-1]
        first = (
            head.timestamp
            if is_media(head)
            else next((p.timestamp for p in queue if is_media(p)), None)
        )
        if first is None:
            return 0
        last = (
            tail.timestamp
            if is_media(tail)
            else next(p.timestamp for p in reversed(queue) if is_media(p))
        )
        if self._join_edge_ms is not None:
            first = max(first, self._join_edge_ms)
        return max(0, last - first)

    def offer(self, packet: MediaPacket) -> None:
        if self._closed or self._ended:
            return
        if packet.kind is TagType.DATA or packet.sequence_header:
            self._append(packet)
            return
        if self._awaiting_keyframe:
            if not (packet.kind is TagType.VIDEO and packet.keyframe):
                if packet.kind is TagType.VIDEO:
                    self.dropped_frames += 1
                return
            self._awaiting_keyframe = False
        if self._append(packet):
            return  # part of a hand-over: one pass's or window's packets, no backlog
        self._limit_backlog()

    def _limit_backlog(self) -> None:
        if (
            self._buffered_ms() > self.max_buffer_ms
            or self._queued_bytes > MAX_QUEUE_BYTES
            or len(self._queue) > MAX_QUEUE_PACKETS
        ):
            self._skip_to_next_keyframe()

    def _append(self, packet: MediaPacket) -> bool:
        """Queues the packet; True when it is part of a hand-over (one starts when a direct
        writer is set and nothing was queued): the player's task is then not woken, the track
        hands over at the end of the loop pass or merge window, and no backlog check is needed
        (a hand-over holds only that pass's or window's packets)."""
        self._queue.append(packet)
        self._queued_bytes += packet.size
        if self._handing_over:
            return True
        if self.direct is not None and len(self._queue) == 1:
            self._handing_over = True
            self._joined_batch_at = self.track.hand_over_later(self)
            return True
        self._wakeup.set()
        return False

    def hand_over(self, batch: PacketBatch) -> None:
        """What this loop pass queued goes to the direct writer in one call, or, if it cannot
        take it now, stays queued for the player's task (with the usual backlog limits).

        ``batch`` holds every packet pushed since the pass or window began; what this
        subscription queued since it joined is a part of it in the same order, so having
        joined at its start with as many packets means the same packets: the shared batch is
        given.
        """
        if not self._handing_over:
            return  # closed, ended or taken by the task meanwhile
        self._handing_over = False
        if self._joined_batch_at or len(self._queue) != len(batch.packets):
            batch = PacketBatch(list(self._queue))  # joined late, or skipped some
        if self.direct is not None and self.direct(batch):
            self.bytes_out += self._queued_bytes
            self._queue.clear()
            self._queued_bytes = 0
            return
        self._wakeup.set()
        self._limit_backlog()

    def _skip_to_next_keyframe(self) -> None:
        """Drops queued media up to the newest queued keyframe, or all of it if there is none.

        The newest keyframe must come after the first queued media packet: resuming on the
        packet already at the head would drop nothing. Headers and metadata are kept: they
        describe the stream, not a moment of it.
        """
        first_media = next((i for i, p in enumerate(self._queue) if is_media(p)), None)
        if first_media is None:
            return
        resume_at = None
        for index in range(len(self._queue) - 1, first_media, -1):
            p = self._queue[index]
            if p.kind is TagType.VIDEO and p.keyframe:
                resume_at = index
                break
        dropped = 0
        kept: deque[MediaPacket] = deque()
        for index, p in enumerate(self._queue):
            if resume_at is not None and index >= resume_at:
                kept.append(p)
            elif not is_media(p):
                kept.append(p)
            elif p.kind is TagType.VIDEO:
                dropped += 1
        self._queue = kept
        self._queued_bytes = sum(p.size for p in kept)
        self._awaiting_keyframe = resume_at is None
        self._join_edge_ms = None
        self.dropped_frames += dropped
        self._note_skip()

    def _note_skip(self) -> None:
        self.skips += 1
        if self._skipping:
            return  # the same episode: the player has not caught up since the last skip
        self._skipping = True
        now = time.monotonic()
        if now - self._skip_logged_at < SKIP_LOG_INTERVAL_S:
            self._skips_unlogged += 1
            return
        earlier = (
            f" ({self._skips_unlogged} more time(s) since the last report)"
            if self._skips_unlogged
            else ""
        )
        log.info(
            "player %s on %s fell behind: skipped to a keyframe, %d frames dropped so far%s",
            self.name,
            self.track,
            self.dropped_frames,
            earlier,
        )
        self._skip_logged_at = now
        self._skips_unlogged = 0

    def end(self) -> None:
        self._ended = True
        self._wakeup.set()  # the task takes what waits for a hand-over, then the end

    def close(self) -> None:
        """The player went away: stop queueing for it."""
        self._closed = True
        self._handing_over = False
        self._queue.clear()
        self._queued_bytes = 0
        self._wakeup.set()
        self.track.unsubscribe(self)

    def get_nowait(self) -> MediaPacket | None:
        if not self._queue:
            self._skipping = False  # caught up: a later skip is a new episode
            return None
        self._handing_over = False  # the task takes over, in order
        packet = self._queue.popleft()
        self._queued_bytes -= packet.size
        self.bytes_out += packet.size
        if not self._queue:
            self._skipping = False
        return packet

    async def get(self) -> MediaPacket | None:
        """The next packet, or None once the stream has ended (or the subscription closed)."""
        while not self._queue:
            if self._ended or self._closed:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()
        return self.get_nowait()


class Track:
    """A sequence of packets with what a late joiner needs to start decoding at once."""

    def __init__(self, label: str, max_buffer_ms: int, write_merge_ms: float = 0.0) -> None:
        self.label = label
        self.max_buffer_ms = max_buffer_ms
        # How long direct writers gather packets before one write (0: to the end of the loop
        # pass). Fewer, larger writes per player cost less CPU, at that much added latency.
        self.write_merge_s = write_merge_ms / 1000
        self.metadata: MediaPacket | None = None
        self.video_header: MediaPacket | None = None
        self.audio_header: MediaPacket | None = None
        self.gop: list[MediaPacket] = []
        self._gop_bytes = 0
        self._gop_open = False
        self.ended = False
        self.packets = 0
        self.bytes = 0
        self.video_frames = 0
        self.last_timestamp = 0
        self._subscriptions: set[Subscription] = set()
        # What subscriptions that have gone away had dropped and sent, so totals stay totals.
        self._closed_dropped = 0
        self._closed_bytes_out = 0
        self.listeners: list[Callable[[MediaPacket], None]] = []
        self._hand_overs: list[Subscription] = []  # at the end of this loop pass
        self._merged_hand_overs: list[Subscription] = []  # at the end of the merge window
        # Every packet pushed since the pass's (or window's) first hand-over began.
        self._pass_batch = PacketBatch([])
        self._merged_batch = PacketBatch([])

    def __str__(self) -> str:
        return self.label

    @property
    def subscriptions(self) -> frozenset[Subscription]:
        return frozenset(self._subscriptions)

    @property
    def dropped_frames(self) -> int:
        return self._closed_dropped + sum(s.dropped_frames for s in self._subscriptions)

    def push(self, packet: MediaPacket) -> None:
        if self.ended:
            return
        self.packets += 1
        self.bytes += packet.size
        self.last_timestamp = packet.timestamp
        self._cache(packet)
        for sub in tuple(self._subscriptions):
            sub.offer(packet)
        if self._hand_overs:
            self._pass_batch.packets.append(packet)
        if self._merged_hand_overs:
            self._merged_batch.packets.append(packet)
        for listener in self.listeners:
            listener(packet)

    def hand_over_later(self, sub: Subscription) -> int:
        """At the end of this loop pass (or of the merge window), ``sub`` hands what it queued
        to its direct writer. Called while a packet is pushed; returns where that packet will
        be in the pass's (or window's) batch.

        Deferred once per track and pass or window, not per player: a publisher read often
        carries several packets (a video frame and the audio beside it), and each player then
        gets them in one write instead of one write per packet; a merge window gathers more.
        """
        if self.write_merge_s and sub.merge_writes:
            if not self._merged_hand_overs:
                asyncio.get_running_loop().call_later(self.write_merge_s, self._hand_over, True)
            self._merged_hand_overs.append(sub)
            return len(self._merged_batch.packets)
        if not self._hand_overs:
            asyncio.get_running_loop().call_soon(self._hand_over, False)
        self._hand_overs.append(sub)
        return len(self._pass_batch.packets)

    def _hand_over(self, merged: bool) -> None:
        if merged:
            subs, self._merged_hand_overs = self._merged_hand_overs, []
            batch, self._merged_batch = self._merged_batch, PacketBatch([])
        else:
            subs, self._hand_overs = self._hand_overs, []
            batch, self._pass_batch = self._pass_batch, PacketBatch([])
        for sub in subs:
            sub.hand_over(batch)

    def _cache(self, packet: MediaPacket) -> None:
        if packet.kind is TagType.DATA:
            self.metadata = packet
            return
        if packet.sequence_header:
            if packet.kind is TagType.VIDEO:
                self.video_header = packet
                # Frames coded against the previous header cannot be decoded with the new one.
                self.gop.clear()
                self._gop_bytes = 0
                self._gop_open = False
            else:
                self.audio_header = packet
            return
        if packet.kind is TagType.VIDEO:
            self.video_frames += 1
            if packet.keyframe:
                self.gop = [packet]
                self._gop_bytes = packet.size
                self._gop_open = True
                return
        if not self._gop_open:
            return
        if self._gop_bytes + packet.size > MAX_GOP_BYTES or len(self.gop) >= MAX_GOP_PACKETS:
            self.gop.clear()
            self._gop_bytes = 0
            self._gop_open = False
            return
        self.gop.append(packet)
        self._gop_bytes += packet.size

    @property
    def bytes_out(self) -> int:
        return self._closed_bytes_out + sum(s.bytes_out for s in self._subscriptions)

    @property
    def players(self) -> int:
        return sum(1 for s in self._subscriptions if not s.internal)

    def subscribe(self, name: str, internal: bool = False) -> Subscription:
        sub = Subscription(self, name, self.max_buffer_ms, internal)
        for header in (self.metadata, self.video_header, self.audio_header):
            if header is not None:
                sub.offer(header)
        if self.gop:
            for packet in self.gop:
                sub.offer(packet)
        else:
            sub.start_at_next_keyframe()
        if self.ended:
            sub.end()
        else:
            self._subscriptions.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subscriptions:
            self._subscriptions.discard(sub)
            self._closed_dropped += sub.dropped_frames
            self._closed_bytes_out += sub.bytes_out

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        for sub in tuple(self._subscriptions):
            sub.end()

"""The live ROI transcoder of one stream: the event loop's side of its worker thread.

A :class:`RoiTranscoder` sits between a stream's source and output tracks (app/hub.py). It
decodes the pushed video, finds regions (the template's recognition model on a detector thread,
or regions the application supplied over REST), re-encodes with lower QP inside them at the
stream's bitrate, and writes each frame's regions as SEI plus ``MediaPacket.roi``. Audio and
metadata pass through untouched, in their original order relative to the video.

Only the event loop touches the stream: :meth:`RoiTranscoder.feed` queues each packet for the
worker (app/roi/worker.py) together with the publisher's rates read here, and the worker's
results (packets, :class:`~app.roi.status.RoiStats` snapshots, give-up) come back with
``loop.call_soon_threadsafe`` to the methods below, which alone write output and status.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

from app.hub import Stream
from app.media.flv import TagType
from app.media.packet import MediaPacket
from app.roi.config import PictureLimit, RoiConfig
from app.roi.regions import Region
from app.roi.status import RoiStats
from app.roi.worker import (
    End,
    Fed,
    Inbox,
    ModelLoader,
    SourceFacts,
    TrackerFactory,
    TranscodeWorker,
    WorkerControls,
    WorkerSink,
    load_stream_model,
    make_tracker,
)


class RoiTranscoder:
    """The ROI stage of one stream (implements app.hub.Processor).

    ``on_give_up(why)``: the worker stopped (lag, unsupported codec, failure); the owner
    takes the stage off the stream. ``on_encoding()``: the first ROI-encoded frame went out.
    ``on_stats(stats)``: a new snapshot. ``on_plain(why)``: a frame did not decode, this GOP
    goes out as the publisher sent it (``on_encoding`` again when ROI resumes). All are called
    on the event loop, and only while this stage has not been stopped.
    """

    def __init__(
        self,
        stream: Stream,
        config: RoiConfig,
        *,
        encoder_name: str,
        on_give_up: Callable[[str], None],
        on_encoding: Callable[[], None] | None = None,
        on_stats: Callable[[RoiStats], None] | None = None,
        on_plain: Callable[[str], None] | None = None,
        load_model: ModelLoader = load_stream_model,
        make_tracker: TrackerFactory = make_tracker,
        decoder_mode: str = "auto",
        nvenc_library_dir: Path | None = None,
        picture_limit: PictureLimit = PictureLimit(),
    ) -> None:
        self.stream = stream
        self.loop = asyncio.get_running_loop()
        self.stats = RoiStats()
        self.encoding = False
        self.encoder_name: str | None = None  # the encoder once ROI frames go out
        self._on_give_up = on_give_up
        self._on_encoding = on_encoding
        self._on_stats = on_stats
        self._on_plain = on_plain
        self._controls = WorkerControls(config)
        self._config = config
        self._inbox: Inbox = queue.SimpleQueue()
        self._stop = threading.Event()
        self._stopped = False
        call = self.loop.call_soon_threadsafe

        def packet(packet: MediaPacket) -> None:
            call(self._push_output, packet)

        def stats(stats: RoiStats) -> None:
            call(self._take_stats, stats)

        def encoding(encoder: str) -> None:
            call(self._mark_encoding, encoder)

        def gave_up(why: str) -> None:
            call(self._gave_up, why)

        def relaying_plain(why: str) -> None:
            call(self._mark_plain, why)

        sink = WorkerSink(
            packet=packet,
            stats=stats,
            encoding=encoding,
            gave_up=gave_up,
            relaying_plain=relaying_plain,
        )
        worker = TranscodeWorker(
            str(stream.key),
            self._controls,
            sink,
            encoder_name=encoder_name,
            stop=self._stop,
            seed_header=stream.source.video_header,
            load_model=load_model,
            make_tracker=make_tracker,
            decoder_mode=decoder_mode,
            nvenc_library_dir=nvenc_library_dir,
            picture_limit=picture_limit,
        )
        self._thread = threading.Thread(
            target=worker.run, args=(self._inbox,), name=f"roi {stream.key}", daemon=True
        )
        self._thread.start()

    @property
    def config(self) -> RoiConfig:
        return self._config

    @property
    def stopped(self) -> bool:
        return self._stopped

    # called by the hub and the controller -------------------------------------------------

    def feed(self, packet: MediaPacket) -> None:
        if self._stopped:
            return
        facts = None
        if packet.kind is TagType.VIDEO and (packet.keyframe or packet.sequence_header):
            # The worker sizes its encoder when a GOP starts: read the publisher's rates here,
            # on the loop, and send them along rather than let the thread read the stream.
            facts = self._source_facts()
        self._inbox.put(Fed(packet, time.monotonic(), facts))

    async def finish(self) -> None:
        """The publisher left: the worker flushes what is pending into the output."""
        self._inbox.put(End.FLUSH)
        await asyncio.to_thread(self._thread.join)

    def stop(self) -> None:
        """Leave the stream (plain relay takes over at the next source keyframe)."""
        self._stopped = True
        self._stop.set()
        self._inbox.put(End.DROP)

    def reconfigure(self, config: RoiConfig) -> None:
        self._config = config
        self._controls.set_config(config)

    def set_override(self, regions: list[Region] | None) -> None:
        """Regions the application supplied (kept until changed; [] means none)."""
        self._controls.set_override(regions)

    def _source_facts(self) -> SourceFacts:
        measured_bps, measured_fps = self.stream.rates()
        return SourceFacts(
            declared_fps=self.stream.declared_fps,
            declared_kbps=self.stream.declared_video_kbps,
            measured_bps=measured_bps,
            measured_fps=measured_fps,
        )

    # the worker's results, on the loop -----------------------------------------------------

    def _push_output(self, packet: MediaPacket) -> None:
        # Once stopped, plain relay owns the output; a flush at end of stream still goes out.
        if not self._stopped or self.stream.closed:
            self.stream.output.push(packet)

    def _take_stats(self, stats: RoiStats) -> None:
        self.stats = stats
        if self._on_stats is not None and not self._stopped:
            self._on_stats(stats)

    def _mark_encoding(self, encoder: str) -> None:
        # A frame finished after the controller took this stage off the stream must not
        # mark the stream as ROI-encoded.
        if self._stopped:
            return
        self.encoding = True
        self.encoder_name = encoder
        if self._on_encoding is not None:
            self._on_encoding()

    def _mark_plain(self, why: str) -> None:
        if self._stopped:
            return
        self.encoding = False
        if self._on_plain is not None:
            self._on_plain(why)

    def _gave_up(self, why: str) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        self._on_give_up(why)


__all__ = ["RoiTranscoder"]

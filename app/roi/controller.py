"""Which live streams get an ROI transcoder, with which settings, and what each one reports.

The controller reacts to streams opening and closing (the hub's listeners), to template
changes (create, an edit taking effect, delete) and to regions the application supplies over
REST, without the publisher reconnecting. It turns the template version in force into a
:class:`~app.roi.config.RoiConfig` and keeps one :class:`~app.roi.status.RoiStatus` per
stream; the streams API and the metrics read it with :meth:`RoiController.status`.

Everything here runs on the event loop; template lookups (a database read) run in a thread
with plain values, never with the stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from app.hub import Hub, Stream
from app.roi.config import PictureLimit, RoiConfig
from app.roi.regions import MAX_REGIONS, Region, effective_regions
from app.roi.status import NO_TEMPLATE, RoiStats, RoiStatus, initial_status, template_name
from app.roi.transcoder import RoiTranscoder
from app.roi.worker import ModelLoader, TrackerFactory, load_stream_model, make_tracker
from app.templates.rules import NAME_PREFIX

log = logging.getLogger("app.roi")

TemplateLookup = Callable[[str], Any]  # name -> a template version (or None)


# (stream, applied, template, model, encoder, reason): ROI frames started going out (with the
# encoder's name), or the stream fell back to plain relay (encoder None, and why).
RoiChangeListener = Callable[[Stream, bool, str | None, str | None, str | None, str], None]


@dataclass
class _StreamRoi:
    """The controller's record of one live stream (written on the event loop only)."""

    status: RoiStatus
    override: list[Region] | None = None
    given_up: bool = False
    hinted: str | None = None  # the hint last logged, so it is logged once


class RoiController:
    """Gives each live stream the stage its template (or REST override) calls for."""

    def __init__(
        self,
        hub: Hub,
        template_in_force: TemplateLookup,
        template_pending: TemplateLookup,
        *,
        encoder_name: str,
        load_model: ModelLoader = load_stream_model,
        make_tracker: TrackerFactory = make_tracker,
        decoder_mode: str = "auto",
        nvenc_library_dir: Path | None = None,
        picture_limit: PictureLimit = PictureLimit(),
        exempt: Callable[[Stream], bool] | None = None,
    ) -> None:
        self.hub = hub
        self._decoder_mode = decoder_mode
        self._nvenc_library_dir = nvenc_library_dir
        self._picture_limit = picture_limit
        # Streams that are never transcoded here (edge pulls: the origin did the ROI work).
        self._exempt = exempt
        self._in_force = template_in_force
        self._pending = template_pending
        self._encoder_name = encoder_name
        self._load_model = load_model
        self._make_tracker = make_tracker
        self._streams: dict[Stream, _StreamRoi] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Told when a stream's ROI encoding starts or it falls back to plain relay.
        self.on_roi_change: list[RoiChangeListener] = []
        hub.on_stream_opened.append(self._on_opened)
        hub.on_stream_closed.append(self._on_closed)

    def status(self, stream: Stream) -> RoiStatus:
        """What the ROI stage says about ``stream`` now."""
        record = self._streams.get(stream)
        return record.status if record is not None else initial_status(stream.query)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_opened(self, stream: Stream) -> None:
        if self._exempt is not None and self._exempt(stream):
            return
        self._streams[stream] = _StreamRoi(initial_status(stream.query))
        self._spawn(self.evaluate(stream))

    def _on_closed(self, stream: Stream) -> None:
        self._streams.pop(stream, None)

    def templates_changed(self) -> None:
        """Called on the event loop when any template changed or took effect."""
        for stream in self.hub.streams():
            self._spawn(self.evaluate(stream))

    async def set_override(self, stream: Stream, regions: list[Region]) -> list[Region]:
        """Regions the application supplies for ``stream``, held until changed; returns the
        ones that take effect (the picture rules and the template's ``max_regions``)."""
        record = self._streams.get(stream)
        if record is None:
            return []
        record.override = list(regions)
        record.given_up = False
        if isinstance(stream.processor, RoiTranscoder):
            stream.processor.set_override(record.override)
        self._spawn(self.evaluate(stream))
        config, _ = await asyncio.to_thread(self._config_for, template_name(stream.query), True)
        assert config is not None  # with an override there is always a config
        return _taking_effect(regions, stream.codec.width, stream.codec.height, config)

    def clear_override(self, stream: Stream) -> None:
        record = self._streams.get(stream)
        if record is None:
            return
        record.override = None
        if isinstance(stream.processor, RoiTranscoder):
            stream.processor.set_override(None)
        self._spawn(self.evaluate(stream))

    async def evaluate(self, stream: Stream) -> None:
        record = self._streams.get(stream)
        if record is None:
            return
        name = template_name(stream.query)
        config, reason = await asyncio.to_thread(
            self._config_for, name, record.override is not None
        )
        if self._streams.get(stream) is not record:
            return  # the stream ended meanwhile
        if record.given_up:
            config, reason = None, record.status.reason
        current = stream.processor
        record.status = replace(
            record.status, template=name, model=config.model if config else None
        )
        if config is None:
            if isinstance(current, RoiTranscoder):
                current.stop()
                stream.set_processor(None)
            record.status = replace(record.status, applied=False, reason=reason)
            if name:
                self._notify(stream, record.status, None)
            if "did you mean" in reason and record.hinted != reason:
                record.hinted = reason
                log.warning("stream %s: %s", stream.key, reason)
            return
        if isinstance(current, RoiTranscoder):
            current.reconfigure(config)
            return
        transcoder = RoiTranscoder(
            stream,
            config,
            encoder_name=self._encoder_name,
            load_model=self._load_model,
            make_tracker=self._make_tracker,
            on_give_up=lambda why: self._give_up(stream, transcoder, why),
            on_encoding=lambda: self._encoding(stream, transcoder),
            on_stats=lambda stats: self._stats(stream, stats),
            decoder_mode=self._decoder_mode,
            nvenc_library_dir=self._nvenc_library_dir,
            on_plain=lambda why: self._plain(stream, transcoder, why),
            picture_limit=self._picture_limit,
        )
        if record.override is not None:
            transcoder.set_override(record.override)
        record.status = replace(record.status, reason="starting ROI encoding at the next keyframe")
        stream.set_processor(transcoder)

    def _encoding(self, stream: Stream, transcoder: RoiTranscoder) -> None:
        record = self._streams.get(stream)
        if record is not None and stream.processor is transcoder:
            record.status = replace(record.status, applied=True, reason="ROI encoding")
            self._notify(stream, record.status, transcoder.encoder_name)

    def _plain(self, stream: Stream, transcoder: RoiTranscoder, why: str) -> None:
        record = self._streams.get(stream)
        if record is not None and stream.processor is transcoder:
            record.status = replace(record.status, applied=False, reason=why)

    def _stats(self, stream: Stream, stats: RoiStats) -> None:
        record = self._streams.get(stream)
        if record is not None:
            record.status = replace(record.status, stats=stats)

    def _give_up(self, stream: Stream, transcoder: RoiTranscoder, why: str) -> None:
        log.warning("stream %s: %s", stream.key, why)
        if stream.processor is transcoder:
            stream.set_processor(None)
        record = self._streams.get(stream)
        if record is not None:
            record.given_up = True
            record.status = replace(record.status, applied=False, reason=why)
            self._notify(stream, record.status, None)

    def _notify(self, stream: Stream, status: RoiStatus, encoder: str | None) -> None:
        for listener in self.on_roi_change:
            listener(stream, status.applied, status.template, status.model, encoder, status.reason)

    def _config_for(self, name: str | None, override: bool) -> tuple[RoiConfig | None, str]:
        """The config for a push naming template ``name`` (runs in a thread: a DB read)."""
        if name:
            version = self._in_force(name)
            if version is not None:
                return (
                    RoiConfig(template=name, settings=version.settings, detect=not override),
                    "",
                )
            pending = self._pending(name)
            if pending is not None:
                reason = f"template {name} is pending until {pending.effective_at}"
            else:
                reason = f"template {name} does not exist"
                meant = self._meant(name)
                if meant is not None:
                    reason += f" (did you mean {meant}?)"
        else:
            reason = NO_TEMPLATE
        if override:
            return RoiConfig(template=name, detect=False), ""
        return None, reason + ": relayed unchanged"

    def _meant(self, name: str) -> str | None:
        """The existing template a push naming ``name`` most likely meant: the name with the
        prefix the store adds (``face1`` -> ``roiface1``), or in lower case."""
        candidates = [name.lower()]
        candidates += [
            NAME_PREFIX + c for c in (name, name.lower()) if not c.startswith(NAME_PREFIX)
        ]
        for candidate in dict.fromkeys(candidates):
            if candidate == name:
                continue
            if self._in_force(candidate) is not None or self._pending(candidate) is not None:
                return candidate
        return None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for stream in self.hub.streams():
            if isinstance(stream.processor, RoiTranscoder):
                stream.processor.stop()


def _taking_effect(
    regions: list[Region], width: int | None, height: int | None, config: RoiConfig
) -> list[Region]:
    """What of ``regions`` takes effect on the stream's picture under ``config``."""
    if width and height:
        return effective_regions(regions, width, height, config.settings.max_regions)
    # Picture size not known yet: only the rules that do not depend on it.
    limit = min(config.settings.max_regions, MAX_REGIONS)
    return [r for r in regions if r.area > 0][:limit]


__all__ = ["RoiController"]

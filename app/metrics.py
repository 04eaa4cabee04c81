"""Prometheus metrics, read from the hub's and the ROI stage's live state when scraped (no
global registry). Scraped on the event loop, the only thread that reads stream state."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from app.hub import Hub
from app.roi.controller import RoiController


class RelayCollector(Collector):
    def __init__(self, hub: Hub, roi: RoiController | None = None) -> None:
        self.hub = hub
        self.roi = roi

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        hub = self.hub
        streams = hub.streams()
        yield GaugeMetricFamily("roi_relay_streams", "Live streams", value=len(streams))
        yield GaugeMetricFamily(
            "roi_relay_players",
            "Connected players",
            value=sum(s.output.players for s in streams),
        )
        yield CounterMetricFamily(
            "roi_relay_bytes_in",
            "Bytes received from publishers",
            value=hub.counters.bytes_in + sum(s.source.bytes for s in streams),
        )
        yield CounterMetricFamily(
            "roi_relay_bytes_out",
            "Media bytes handed to players",
            value=hub.counters.bytes_out + sum(s.output.bytes_out for s in streams),
        )
        yield CounterMetricFamily(
            "roi_relay_dropped_frames",
            "Video frames skipped for players that fell behind",
            value=hub.counters.dropped_frames + sum(s.output.dropped_frames for s in streams),
        )
        yield CounterMetricFamily(
            "roi_relay_streams_started", "Publishes accepted", value=hub.counters.streams_started
        )
        refused = CounterMetricFamily(
            "roi_relay_refused_pushes", "Publishes refused", labels=["reason"]
        )
        for reason, count in sorted(hub.counters.refused_pushes.items()):
            refused.add_metric([reason], count)
        yield refused
        roi_applied = GaugeMetricFamily(
            "roi_relay_roi_applied", "1 when ROI encoding is applied", labels=["stream"]
        )
        lag = GaugeMetricFamily(
            "roi_relay_roi_lag_seconds", "ROI transcoder lag behind ingest", labels=["stream"]
        )
        detect = GaugeMetricFamily(
            "roi_relay_roi_detect_seconds", "Detection time per frame", labels=["stream"]
        )
        detect_every = GaugeMetricFamily(
            "roi_relay_roi_detect_interval_frames",
            "Frames between detection passes (longer while the scene is settled)",
            labels=["stream"],
        )
        encode = GaugeMetricFamily(
            "roi_relay_roi_encode_seconds", "Encode time per frame", labels=["stream"]
        )
        regions = GaugeMetricFamily(
            "roi_relay_roi_regions", "Regions in the last frame", labels=["stream"]
        )
        encoder_info = GaugeMetricFamily(
            "roi_relay_roi_encoder_info",
            "1 for the encoder a stream's ROI stage runs",
            labels=["stream", "encoder"],
        )
        encoder_fallback = GaugeMetricFamily(
            "roi_relay_roi_encoder_fallback",
            "1 when NVENC was asked for (or auto) and could not open (reason: stream status)",
            labels=["stream"],
        )
        corrupt = GaugeMetricFamily(
            "roi_relay_roi_corrupt_gops",
            "GOPs of this publish relayed plain because a frame did not decode",
            labels=["stream"],
        )
        for s in streams:
            if self.roi is None:
                break
            name = str(s.key)
            status = self.roi.status(s)
            stats = status.stats
            if status.applied and stats.encoder:
                encoder_info.add_metric([name, stats.encoder], 1.0)
                encoder_fallback.add_metric([name], 1.0 if stats.encoder_fallback else 0.0)
            roi_applied.add_metric([name], 1.0 if status.applied else 0.0)
            lag.add_metric([name], stats.lag_ms / 1000)
            detect.add_metric([name], stats.detect_ms / 1000)
            detect_every.add_metric([name], stats.detect_every)
            encode.add_metric([name], stats.encode_ms / 1000)
            regions.add_metric([name], stats.regions)
            corrupt.add_metric([name], stats.corrupt_gops)
        yield from (roi_applied, lag, detect, detect_every, encode, regions, encoder_info)
        yield from (encoder_fallback, corrupt)


def relay_registry(hub: Hub, roi: RoiController | None = None) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(RelayCollector(hub, roi))
    return registry

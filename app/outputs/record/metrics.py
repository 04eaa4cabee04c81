"""Prometheus figures per recorded stream, read when scraped."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from app.outputs.record.manager import RecordingManager


class RecordingCollector(Collector):
    def __init__(self, manager: RecordingManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        labels = ["stream"]
        recording = GaugeMetricFamily(
            "roi_relay_recording_active", "1 while the stream is being written", labels=labels
        )
        written = CounterMetricFamily(
            "roi_relay_recording_bytes", "Bytes in closed segments this session", labels=labels
        )
        segments = CounterMetricFamily(
            "roi_relay_recording_segments", "Segments closed this session", labels=labels
        )
        dropped = CounterMetricFamily(
            "roi_relay_recording_dropped_frames",
            "Video frames skipped because the writer fell behind",
            labels=labels,
        )
        failed = GaugeMetricFamily(
            "roi_relay_recording_failed", "1 when the recording stopped on an error", labels=labels
        )
        for key, status in self.manager.statuses():
            values = [str(key)]
            recording.add_metric(values, 1.0 if status.state == "recording" else 0.0)
            written.add_metric(values, status.bytes)
            segments.add_metric(values, status.segments)
            dropped.add_metric(values, status.dropped_frames)
            failed.add_metric(values, 1.0 if status.state == "failed" else 0.0)
        yield recording
        yield written
        yield segments
        yield dropped
        yield failed


__all__ = ["RecordingCollector"]

"""Prometheus figures per forwarding destination, read when scraped."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from app.outputs.forward.manager import ForwardManager


class ForwardCollector(Collector):
    def __init__(self, manager: ForwardManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        labels = ["stream", "destination"]
        connected = GaugeMetricFamily(
            "roi_relay_forward_connected", "1 while the destination is publishing", labels=labels
        )
        sent = CounterMetricFamily(
            "roi_relay_forward_bytes", "Bytes written to the destination", labels=labels
        )
        reconnects = CounterMetricFamily(
            "roi_relay_forward_reconnects", "Reconnections to the destination", labels=labels
        )
        dropped = CounterMetricFamily(
            "roi_relay_forward_dropped_frames",
            "Video frames skipped because the destination fell behind",
            labels=labels,
        )
        # A snapshot: the loop thread may add forwarders while the scrape runs.
        for key, forwarder in tuple(self.manager.all_forwarders()):
            status = forwarder.refresh()
            values = [str(key), status.url]
            connected.add_metric(values, 1.0 if status.connected else 0.0)
            sent.add_metric(values, status.bytes)
            reconnects.add_metric(values, status.reconnects)
            dropped.add_metric(values, status.dropped_frames)
        yield connected
        yield sent
        yield reconnects
        yield dropped


__all__ = ["ForwardCollector"]

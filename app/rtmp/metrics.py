"""Prometheus metrics of the RTMP server's connections, read when scraped."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from app.rtmp.server import RtmpServer


class RtmpCollector(Collector):
    def __init__(self, server: RtmpServer) -> None:
        self.server = server

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        server = self.server
        counters = server.counters
        yield GaugeMetricFamily(
            "roi_relay_rtmp_connections", "Open RTMP connections", value=counters.connections_open
        )
        yield GaugeMetricFamily(
            "roi_relay_rtmp_pending_message_bytes",
            "Bytes held by partly received RTMP messages, all connections",
            value=server.pending_budget.held,
        )
        yield GaugeMetricFamily(
            "roi_relay_rtmp_pending_message_bytes_limit",
            "Server-wide cap on roi_relay_rtmp_pending_message_bytes",
            value=server.pending_budget.limit,
        )
        yield CounterMetricFamily(
            "roi_relay_rtmp_protocol_errors",
            "RTMP connections closed for a protocol error",
            value=counters.protocol_errors,
        )
        yield CounterMetricFamily(
            "roi_relay_rtmp_timeouts",
            "RTMP connections closed by a handshake, connect or idle timeout",
            value=counters.timeouts,
        )
        yield CounterMetricFamily(
            "roi_relay_publisher_takeovers",
            "Live streams taken over by a new publisher",
            value=server.hub.counters.takeovers,
        )

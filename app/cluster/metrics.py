"""The cluster's figures for /metrics (read on the loop when scraped)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from app.cluster.edge import EdgePuller
from app.cluster.node import ClusterNode


class ClusterCollector(Collector):
    def __init__(self, node: ClusterNode, puller: EdgePuller) -> None:
        self.node = node
        self.puller = puller

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        node = self.node
        yield GaugeMetricFamily(
            "roi_relay_cluster_directory_up",
            "1 while the stream directory (the database) answers this node's heartbeats",
            value=1 if node.available else 0,
        )
        yield CounterMetricFamily(
            "roi_relay_cluster_directory_outages",
            "Times the stream directory became unreachable",
            value=node.outages,
        )
        yield CounterMetricFamily(
            "roi_relay_cluster_heartbeats", "Heartbeats written", value=node.heartbeats
        )
        refused = CounterMetricFamily(
            "roi_relay_cluster_refused_publishes",
            "Publishes refused by the cluster rule",
            labels=["reason"],
        )
        for reason, count in sorted(node.refused.items()):
            refused.add_metric([reason], count)
        yield refused
        yield GaugeMetricFamily(
            "roi_relay_cluster_edge_pulls",
            "Streams pulled from their origin now",
            value=self.puller.active,
        )
        yield CounterMetricFamily(
            "roi_relay_cluster_edge_pulls_started",
            "Edge pulls started",
            value=self.puller.pulls_started,
        )
        yield GaugeMetricFamily(
            "roi_relay_cluster_streams",
            "Live streams in the directory, cluster-wide",
            value=len(node.snapshot),
        )


__all__ = ["ClusterCollector"]

"""The cluster's figures for /metrics (read on the loop when scraped), and one exposition for
all ``--workers`` of a machine."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

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


def worker_group(node_id: str) -> str | None:
    """The ``--workers`` group of a node id (``{id}-w{i}``), or None for a lone node."""
    base, sep, index = node_id.rpartition("-w")
    return base if sep and index.isdigit() else None


def merge_expositions(texts: dict[str, str]) -> bytes:
    """One exposition of every worker's metrics, each sample labelled with its ``worker``."""
    families: dict[str, Metric] = {}
    for worker, text in sorted(texts.items()):
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            for sample in family.samples:
                merged.samples.append(
                    Sample(
                        sample.name,
                        {**sample.labels, "worker": worker},
                        sample.value,
                        sample.timestamp,
                        sample.exemplar,
                    )
                )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(families.values())))
    return generate_latest(registry)


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


__all__ = ["ClusterCollector", "merge_expositions", "worker_group"]

"""Prometheus figures of callback delivery and the auth hook."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from app.hooks.auth_hook import HookCounters
from app.hooks.delivery import DeliveryCounters


class HooksCollector(Collector):
    def __init__(self, delivery: DeliveryCounters, hook: HookCounters) -> None:
        self.delivery = delivery
        self.hook = hook

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, help_text, counts in (
            ("delivered", "Event callbacks delivered (2xx)", self.delivery.delivered),
            ("failed_attempts", "Callback attempts that failed", self.delivery.failed_attempts),
            ("given_up", "Callbacks given up after every retry", self.delivery.given_up),
            ("dropped", "Callbacks dropped: the receiver's queue was full", self.delivery.dropped),
        ):
            family = CounterMetricFamily(f"roi_relay_callbacks_{name}", help_text, labels=["kind"])
            for kind in ("publish", "play", "roi", "record"):
                family.add_metric([kind], counts.get(kind, 0))
            yield family
        family = CounterMetricFamily(
            "roi_relay_auth_hook_answers", "Auth hook outcomes", labels=["outcome"]
        )
        family.add_metric(["allowed"], self.hook.allowed)
        family.add_metric(["refused"], self.hook.refused)
        family.add_metric(["unavailable"], self.hook.unavailable)
        yield family

"""Builds the operator-integration parts from Settings and attaches them to the hub."""

from __future__ import annotations

import time
from collections.abc import Callable

from app.auth import Gate, PushKeys
from app.config import Settings
from app.hooks.admission import Admission
from app.hooks.auth_hook import AuthHook, HookCounters
from app.hooks.delivery import CallbackDelivery, DeliveryPolicy
from app.hooks.events import Kind, Origin, StreamEvents
from app.hooks.metrics import HooksCollector
from app.hub import Hub


def callback_urls(settings: Settings) -> dict[Kind, str]:
    """Each kind's URL: its own setting, else ROI_RELAY_CALLBACK_URL ("off" turns one off)."""
    own: dict[Kind, str] = {
        "publish": settings.callback_url_publish,
        "play": settings.callback_url_play,
        "roi": settings.callback_url_roi,
        "record": settings.callback_url_record,
    }
    return {kind: url or settings.callback_url for kind, url in own.items()}


class Hooks:
    """Callbacks, the auth hook and the admission every publish/play asks."""

    def __init__(self, settings: Settings, hub: Hub, clock: Callable[[], float] = time.time):
        self.delivery = CallbackDelivery(
            callback_urls(settings),
            DeliveryPolicy(
                key=settings.callback_key,
                retries=settings.callback_retries,
                retry_interval=settings.callback_retry_interval,
                timeout=settings.callback_timeout,
                queue_size=settings.callback_queue_size,
                sign_ttl=settings.callback_sign_ttl,
            ),
            clock=clock,
        )
        self.events = StreamEvents(self.delivery.emit, Origin.local(), clock)
        self.hook_counters = HookCounters()
        self.hook = (
            AuthHook(
                settings.auth_hook_url,
                settings.auth_hook_timeout,
                settings.auth_hook_fail_open,
                self.hook_counters,
            )
            if settings.auth_hook_url
            else None
        )
        gate = Gate(
            push=PushKeys(settings.push_key, settings.push_backup_key),
            play=PushKeys(settings.play_key, settings.play_backup_key),
            max_ttl=settings.push_max_ttl,
        )
        self.play_protected = gate.play.enabled or self.hook is not None
        self.admission = Admission(
            gate, self.hook, self.events if self.delivery.wants("play") else None, clock
        )
        self.collector = HooksCollector(self.delivery.counters, self.hook_counters)
        self._hub = hub
        if self.delivery.enabled:
            hub.on_stream_opened.append(self.events.stream_opened)
            hub.on_stream_closed.append(self.events.stream_closed)

    async def close(self) -> None:
        for listeners, listener in (
            (self._hub.on_stream_opened, self.events.stream_opened),
            (self._hub.on_stream_closed, self.events.stream_closed),
        ):
            if listener in listeners:
                listeners.remove(listener)
        await self.delivery.close()
        if self.hook is not None:
            await self.hook.close()

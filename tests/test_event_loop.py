"""`roi-relay serve` runs on uvloop unless told otherwise (ROI_RELAY_EVENT_LOOP)."""

from __future__ import annotations

import sys

import pytest
import uvloop

from app.cli import event_loop_factory


def test_auto_and_uvloop_give_uvloop_and_asyncio_gives_the_default() -> None:
    for choice in ("auto", "uvloop"):
        factory = event_loop_factory(choice)
        assert factory is not None
        loop = factory()
        try:
            assert isinstance(loop, uvloop.Loop)
        finally:
            loop.close()
    assert event_loop_factory("asyncio") is None


def test_without_uvloop_auto_falls_back_and_uvloop_is_an_error(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert event_loop_factory("auto") is None
    with pytest.raises(SystemExit, match="uvloop is not installed"):
        event_loop_factory("uvloop")

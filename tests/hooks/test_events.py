"""The event records' own rules, without a relay: signing, secrets out of stream_param, the
publisher's address, and which URL each kind of event goes to."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from app.config import Settings
from app.hooks.delivery import CallbackDelivery, DeliveryPolicy
from app.hooks.events import KIND_OF, callback_sign, client_ip, signed, stream_param
from app.hooks.wiring import callback_urls


def test_sign_is_md5_of_key_and_decimal_t() -> None:
    body = signed({"event_type": 1}, "k3y", ttl=600, now=1_700_000_000.9)
    assert body["t"] == 1_700_000_600
    assert body["sign"] == hashlib.md5(b"k3y1700000600").hexdigest()
    assert callback_sign("", 5) == hashlib.md5(b"5").hexdigest()


def test_stream_param_drops_the_secrets_only() -> None:
    query = {"txSecret": "s", "txTime": "6553F100", "roirecognition": "roiface1", "a": "b c"}
    assert stream_param(query) == "roirecognition=roiface1&a=b+c"
    assert stream_param({}) == ""


@pytest.mark.parametrize(
    ("remote", "ip"),
    [("1.2.3.4:5678", "1.2.3.4"), ("::1:5678", "::1"), ("[::1]:5678", "::1"), ("?", "?")],
)
def test_client_ip_from_a_publishers_address(remote: str, ip: str) -> None:
    assert client_ip(remote) == ip


def test_each_kind_goes_to_its_own_url_or_the_default() -> None:
    settings = Settings(
        callback_url="http://default/", callback_url_roi="http://roi/", callback_url_play="off"
    )
    assert callback_urls(settings) == {
        "publish": "http://default/",
        "play": "off",
        "roi": "http://roi/",
        "record": "http://default/",
    }
    delivery = CallbackDelivery(callback_urls(settings), DeliveryPolicy())
    assert delivery.wants("roi") and delivery.wants("publish") and not delivery.wants("play")
    asyncio.run(delivery.close(drain_seconds=0))
    assert callback_urls(Settings()) == {k: "" for k in ("publish", "play", "roi", "record")}
    assert set(KIND_OF.values()) == {"publish", "play", "roi", "record"}

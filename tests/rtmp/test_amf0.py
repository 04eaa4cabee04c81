"""AMF0: every type, exact bytes where the spec fixes them, and malformed input."""

from __future__ import annotations

import math
import struct
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.rtmp import amf0
from app.rtmp.amf0 import (
    MAX_DEPTH,
    UNDEFINED,
    UNSUPPORTED,
    AmfError,
    ECMAArray,
    TypedObject,
    XmlDocument,
    decode,
    decode_value,
    encode,
)


def test_connect_command_bytes() -> None:
    data = encode("connect", 1.0, {"app": "live"})
    assert data == (
        b"\x02\x00\x07connect"
        + b"\x00" + struct.pack(">d", 1.0)
        + b"\x03\x00\x03app\x02\x00\x04live\x00\x00\x09"
    )  # fmt: skip
    assert decode(data) == ["connect", 1.0, {"app": "live"}]


@pytest.mark.parametrize(
    ("value", "marker"),
    [
        (3.5, 0x00),
        (7, 0x00),
        (True, 0x01),
        (False, 0x01),
        ("héllo", 0x02),
        ({"a": 1.0}, 0x03),
        (None, 0x05),
        (UNDEFINED, 0x06),
        (ECMAArray({"duration": 0.0, "width": 320.0}), 0x08),
        ([1.0, "two", None], 0x0A),
        (datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=UTC), 0x0B),
        ("x" * 70000, 0x0C),
        (UNSUPPORTED, 0x0D),
        (XmlDocument("<a/>"), 0x0F),
        (TypedObject("org.Example", {"k": "v"}), 0x10),
    ],
)
def test_every_type_round_trips(value, marker: int) -> None:
    data = encode(value)
    assert data[0] == marker
    got, end = decode_value(data)
    assert end == len(data)
    assert got == value
    assert type(got) is (
        float if isinstance(value, int) and not isinstance(value, bool) else type(value)
    )


def test_date_bytes_carry_milliseconds_and_a_time_zone() -> None:
    data = encode(datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC))
    assert data == b"\x0b" + struct.pack(">d", 1000.0) + b"\x00\x00"


def test_reference_points_at_an_earlier_object() -> None:
    inner = encode({"x": 1.0})
    data = b"\x0a\x00\x00\x00\x02" + inner + b"\x07\x00\x01"  # [obj, ref->index 1 (obj)]
    arr = decode(data)[0]
    assert arr[0] == {"x": 1.0} and arr[1] is arr[0]


def test_ecma_array_count_is_advisory_and_end_marker_may_be_missing() -> None:
    wrong_count = (
        b"\x08\x00\x00\x00\x09" + b"\x00\x01a\x00" + struct.pack(">d", 2.0) + b"\x00\x00\x09"
    )
    assert decode(wrong_count) == [{"a": 2.0}]
    no_end = b"\x08\x00\x00\x00\x01" + b"\x00\x01a\x00" + struct.pack(">d", 2.0)
    assert decode(no_end) == [{"a": 2.0}]


def test_empty_key_that_is_not_the_end_marker() -> None:
    data = b"\x03" + b"\x00\x00" + b"\x05" + b"\x00\x00\x09"
    assert decode(data) == [{"": None}]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert decode(b"\x02\x00\x02\xff\xfe") == ["\ufffd\ufffd"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x12", "unknown AMF0 marker"),
        (b"\xff", "unknown AMF0 marker"),
        (b"\x04", "reserved"),
        (b"\x0e", "reserved"),
        (b"\x11\x00", "AMF3"),
        (b"\x09", "object-end marker outside"),
        (b"\x07\x00\x05", "reference 5"),
        (b"\x0a\xff\xff\xff\xff\x05", "more than the data holds"),
        (b"\x0b" + struct.pack(">d", math.nan) + b"\x00\x00", "not a finite number"),
        (b"\x0b" + struct.pack(">d", 1e300) + b"\x00\x00", "out of range"),
    ],
)
def test_bad_values_raise_amf_error(data: bytes, message: str) -> None:
    with pytest.raises(AmfError, match=message):
        decode(data)


def test_every_truncation_of_a_command_is_a_clean_error() -> None:
    data = encode(
        "publish",
        5.0,
        None,
        "stream",
        {"nested": [1.0, {"deep": "x" * 10}], "when": datetime.now(UTC)},
    )
    for cut in range(1, len(data)):
        try:
            decode(data[:cut])
        except AmfError:
            continue
        # Cutting exactly between two values leaves a valid, shorter list.
        assert len(decode(data[:cut])) < 5


@pytest.mark.parametrize(
    "opener", [b"\x0a\x00\x00\x00\x01", b"\x03\x00\x01k", b"\x08\x00\x00\x00\x01\x00\x01k"]
)
def test_deep_nesting_is_refused_before_the_stack_is(opener: bytes) -> None:
    data = opener * 100_000 + b"\x05"
    with pytest.raises(AmfError, match="nested deeper"):
        decode(data)


def test_nesting_up_to_the_limit_is_fine() -> None:
    value: object = 1.0
    for _ in range(MAX_DEPTH):
        value = [value]
    assert decode(encode(value)) == [value]
    with pytest.raises(AmfError, match="nested deeper"):
        encode([value])


def test_encoding_something_amf0_has_no_type_for() -> None:
    with pytest.raises(AmfError, match="cannot encode"):
        encode(b"raw bytes")
    with pytest.raises(AmfError, match="cannot encode"):
        encode({1, 2})


def test_circular_structure_is_refused_by_the_encoder() -> None:
    loop: dict[str, object] = {}
    loop["self"] = loop
    with pytest.raises(AmfError):
        encode(loop)


# ----------------------------------------------------------------------------- properties

scalars = st.one_of(
    st.none(),
    st.just(UNDEFINED),
    st.booleans(),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.datetimes(
        min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=10), children, max_size=5),
        st.dictionaries(st.text(max_size=10), children, max_size=5).map(ECMAArray),
        st.builds(
            TypedObject,
            st.text(max_size=10),
            st.dictionaries(st.text(max_size=10), children, max_size=3),
        ),
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(values, max_size=4))
def test_round_trip_property(items: list) -> None:
    assert decode(encode(*items)) == items


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_decode_or_raise_amf_error_only(blob: bytes) -> None:
    try:
        amf0.decode(blob)
    except AmfError:
        pass

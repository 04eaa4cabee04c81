"""AMF0 (Action Message Format 0) encoding and decoding, every type of the specification.

Python forms: number -> float, boolean -> bool, string/long string -> str, object -> dict,
ECMA array -> ECMAArray (a dict), strict array -> list, date -> datetime (UTC), null -> None,
undefined -> UNDEFINED, unsupported -> UNSUPPORTED, XML document -> XmlDocument (a str),
typed object -> TypedObject. References decode to the object they point at.

Anything malformed (truncated input, an unknown or reserved marker, nesting deeper than
MAX_DEPTH, AMF3 switch) raises AmfError; the decoder never raises anything else.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

MAX_DEPTH = 32

NUMBER = 0x00
BOOLEAN = 0x01
STRING = 0x02
OBJECT = 0x03
MOVIECLIP = 0x04
NULL = 0x05
UNDEFINED_MARKER = 0x06
REFERENCE = 0x07
ECMA_ARRAY = 0x08
OBJECT_END = 0x09
STRICT_ARRAY = 0x0A
DATE = 0x0B
LONG_STRING = 0x0C
UNSUPPORTED_MARKER = 0x0D
RECORDSET = 0x0E
XML_DOCUMENT = 0x0F
TYPED_OBJECT = 0x10
AVMPLUS_OBJECT = 0x11

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class AmfError(ValueError):
    """Malformed or unsupported AMF0 data."""


class _Singleton:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name

    def __reduce__(self) -> str:
        return self._name


UNDEFINED = _Singleton("UNDEFINED")
UNSUPPORTED = _Singleton("UNSUPPORTED")


class ECMAArray(dict[str, Any]):
    """An associative array (marker 0x08); onMetaData is usually sent as one."""


class XmlDocument(str):
    """An XML document value (marker 0x0F)."""

    __slots__ = ()


@dataclass(slots=True)
class TypedObject:
    class_name: str
    properties: dict[str, Any] = field(default_factory=dict)


_DOUBLE = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DATE_TAIL = struct.Struct(">dh")


class _Decoder:
    __slots__ = ("data", "pos", "refs")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos
        self.refs: list[Any] = []

    def _take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise AmfError(f"truncated AMF0 data: needed {n} bytes at offset {self.pos}")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def _u16(self) -> int:
        return _U16.unpack(self._take(2))[0]

    def _u32(self) -> int:
        return _U32.unpack(self._take(4))[0]

    def _utf8(self, n: int) -> str:
        return self._take(n).decode("utf-8", errors="replace")

    def value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise AmfError(f"AMF0 values nested deeper than {MAX_DEPTH}")
        marker = self._take(1)[0]
        if marker == NUMBER:
            return _DOUBLE.unpack(self._take(8))[0]
        if marker == BOOLEAN:
            return self._take(1)[0] != 0
        if marker == STRING:
            return self._utf8(self._u16())
        if marker == LONG_STRING:
            return self._utf8(self._u32())
        if marker == XML_DOCUMENT:
            return XmlDocument(self._utf8(self._u32()))
        if marker == NULL:
            return None
        if marker == UNDEFINED_MARKER:
            return UNDEFINED
        if marker == UNSUPPORTED_MARKER:
            return UNSUPPORTED
        if marker == OBJECT:
            obj: dict[str, Any] = {}
            self.refs.append(obj)
            self._properties(obj, depth)
            return obj
        if marker == ECMA_ARRAY:
            self._u32()  # the count is advisory: encoders disagree with it, the end marker rules
            arr = ECMAArray()
            self.refs.append(arr)
            self._properties(arr, depth, may_lack_end=True)
            return arr
        if marker == TYPED_OBJECT:
            typed = TypedObject(self._utf8(self._u16()))
            self.refs.append(typed)
            self._properties(typed.properties, depth)
            return typed
        if marker == STRICT_ARRAY:
            count = self._u32()
            if count > len(self.data) - self.pos:  # every element takes at least one byte
                raise AmfError(f"strict array claims {count} elements, more than the data holds")
            items: list[Any] = []
            self.refs.append(items)
            for _ in range(count):
                items.append(self.value(depth + 1))
            return items
        if marker == DATE:
            millis, _tz = _DATE_TAIL.unpack(self._take(10))
            if not math.isfinite(millis):
                raise AmfError("AMF0 date is not a finite number")
            try:
                return _EPOCH + timedelta(milliseconds=millis)
            except OverflowError as exc:
                raise AmfError(f"AMF0 date out of range: {millis} ms") from exc
        if marker == REFERENCE:
            index = self._u16()
            if index >= len(self.refs):
                raise AmfError(f"AMF0 reference {index} points at no earlier object")
            return self.refs[index]
        if marker == OBJECT_END:
            raise AmfError("AMF0 object-end marker outside an object")
        if marker == AVMPLUS_OBJECT:
            raise AmfError("AMF3 values (AVM+ switch) are not supported")
        if marker in (MOVIECLIP, RECORDSET):
            raise AmfError(f"reserved AMF0 marker {marker:#04x}")
        raise AmfError(f"unknown AMF0 marker {marker:#04x}")

    def _properties(
        self, target: dict[str, Any], depth: int, *, may_lack_end: bool = False
    ) -> None:
        while True:
            if may_lack_end and self.pos == len(self.data):
                return  # some encoders end an ECMA array at the end of the message
            key = self._utf8(self._u16())
            if key == "" and self.pos < len(self.data) and self.data[self.pos] == OBJECT_END:
                self.pos += 1
                return
            target[key] = self.value(depth + 1)


def decode_value(data: bytes, offset: int = 0) -> tuple[Any, int]:
    """Decodes one value at ``offset``; returns it and the offset just after it."""
    decoder = _Decoder(bytes(data), offset)
    return decoder.value(0), decoder.pos


def decode(data: bytes) -> list[Any]:
    """Decodes every value in ``data`` (an RTMP command or data message body)."""
    decoder = _Decoder(bytes(data), 0)
    values = []
    while decoder.pos < len(decoder.data):
        values.append(decoder.value(0))
    return values


def _encode_utf8(text: str, out: bytearray, *, long_form: bool) -> None:
    raw = text.encode("utf-8")
    if long_form:
        out += _U32.pack(len(raw))
    else:
        if len(raw) > 0xFFFF:
            raise AmfError("AMF0 object key longer than 65535 bytes")
        out += _U16.pack(len(raw))
    out += raw


def _encode_properties(props: Mapping[Any, Any], out: bytearray, depth: int) -> None:
    for key, val in props.items():
        _encode_utf8(str(key), out, long_form=False)
        _encode(val, out, depth + 1)
    out += b"\x00\x00\x09"


def _encode(value: Any, out: bytearray, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise AmfError(f"AMF0 values nested deeper than {MAX_DEPTH}")
    if value is None:
        out.append(NULL)
    elif value is UNDEFINED:
        out.append(UNDEFINED_MARKER)
    elif value is UNSUPPORTED:
        out.append(UNSUPPORTED_MARKER)
    elif isinstance(value, bool):
        out += bytes([BOOLEAN, 1 if value else 0])
    elif isinstance(value, int | float):
        out.append(NUMBER)
        out += _DOUBLE.pack(float(value))
    elif isinstance(value, XmlDocument):
        out.append(XML_DOCUMENT)
        _encode_utf8(value, out, long_form=True)
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) <= 0xFFFF:
            out.append(STRING)
            out += _U16.pack(len(raw))
        else:
            out.append(LONG_STRING)
            out += _U32.pack(len(raw))
        out += raw
    elif isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        millis = (moment - _EPOCH) / timedelta(milliseconds=1)
        out.append(DATE)
        out += _DATE_TAIL.pack(millis, 0)
    elif isinstance(value, ECMAArray):
        out.append(ECMA_ARRAY)
        out += _U32.pack(len(value))
        _encode_properties(value, out, depth)
    elif isinstance(value, Mapping):
        out.append(OBJECT)
        _encode_properties(value, out, depth)
    elif isinstance(value, TypedObject):
        out.append(TYPED_OBJECT)
        _encode_utf8(value.class_name, out, long_form=False)
        _encode_properties(value.properties, out, depth)
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        out.append(STRICT_ARRAY)
        out += _U32.pack(len(value))
        for item in value:
            _encode(item, out, depth + 1)
    else:
        raise AmfError(f"cannot encode {type(value).__name__} as AMF0")


def encode(*values: Any) -> bytes:
    """Encodes the values one after another (an RTMP command or data message body)."""
    out = bytearray()
    for value in values:
        _encode(value, out, 0)
    return bytes(out)

"""The protobuf wire format, as far as Kubernetes' messages need it: the fields of a message
(varints, fixed-size and length-delimited values) and a scalar field's value.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from typing import Any

SCALARS = frozenset(
    {"string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "double", "float"}
    | {"fixed32", "fixed64", "sfixed32", "sfixed64"}
)
_VARINT_TYPES = frozenset({"int32", "int64", "uint32", "uint64", "bool", "enum"})


class ProtobufError(ValueError):
    """A body that is not a well-formed Kubernetes protobuf message (400)."""


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ProtobufError("a truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def wire_fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of each field: an int for a varint, bytes otherwise."""
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, at = _varint(data, at)
        elif wire == 1:
            value, at = data[at : at + 8], at + 8
        elif wire == 2:
            length, at = _varint(data, at)
            value, at = data[at : at + length], at + length
        elif wire == 5:
            value, at = data[at : at + 4], at + 4
        else:
            raise ProtobufError(f"wire type {wire} is not supported")
        if at > len(data) or number == 0:
            raise ProtobufError("a truncated message")
        yield number, wire, value


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def scalar(kind: str, wire: int, value: Any) -> Any:
    if kind == "string":
        try:
            return bytes(value).decode()
        except (UnicodeDecodeError, TypeError) as error:
            raise ProtobufError(f"a string that is not UTF-8: {error}") from error
    if kind == "bytes":
        return base64.b64encode(value).decode()
    if wire == 0:
        if kind == "bool":
            return value != 0
        if kind in ("int32", "enum"):
            return _signed(value, 32)
        if kind == "int64":
            return _signed(value, 64)
        if kind == "uint32":
            return value & 0xFFFFFFFF
        return value
    if kind == "double" and wire == 1:
        return struct.unpack("<d", value)[0]
    if kind == "float" and wire == 5:
        return struct.unpack("<f", value)[0]
    if kind in ("fixed64", "sfixed64") and wire == 1:
        return struct.unpack("<q" if kind[0] == "s" else "<Q", value)[0]
    if kind in ("fixed32", "sfixed32") and wire == 5:
        return struct.unpack("<i" if kind[0] == "s" else "<I", value)[0]
    raise ProtobufError(f"a {kind} field with wire type {wire}")


def packed(kind: str, data: bytes) -> list[Any]:
    """A packed repeated scalar (proto3 style; Kubernetes' proto2 messages never pack)."""
    values: list[Any] = []
    at = 0
    while at < len(data):
        if kind in _VARINT_TYPES:
            raw, at = _varint(data, at)
            values.append(scalar(kind, 0, raw))
        else:
            size = 8 if kind in ("double", "fixed64", "sfixed64") else 4
            values.append(scalar(kind, 1 if size == 8 else 5, data[at : at + size]))
            at += size
    return values

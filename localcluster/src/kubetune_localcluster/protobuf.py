"""Request bodies in Kubernetes protobuf (application/vnd.kubernetes.protobuf), decoded to the
JSON form the API server would have decoded them to.

client-go's typed clients send protobuf for built-in kinds and do not fall back to JSON when a
server answers 415 (they do only for CBOR), so `kubectl create configmap|namespace|secret|
serviceaccount|role|...` needs the API server to read it, as every real one does.

A body is the 4-byte magic "k8s\\0" and a runtime.Unknown: the TypeMeta (apiVersion, kind) and
the raw bytes of the object's message. The messages of the kinds this emulator serves (and
Binding and DeleteOptions) are described by builtin-protobuf.json.gz, built by `protobuf_table`
from the Kubernetes 1.37 sources: a field is written to JSON as Go's encoding/json would write
the decoded Go struct (a zero scalar of an omitempty non-pointer field is left out, a set
pointer field is kept even when zero, an inline struct's fields join its parent's). The
well-known types with a JSON form of their own are converted here: Time and MicroTime (RFC 3339
strings), Duration, Quantity, IntOrString, FieldsV1 and RawExtension (their JSON). Custom
resources and CustomResourceDefinitions have no protobuf form here: `UnknownKind`, which the
server answers with 415.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from kubetune_localcluster.protobuf_wire import (
    SCALARS,
    ProtobufError,
    packed,
    scalar,
    wire_fields,
)

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"
MESSAGES = Path(__file__).with_name("builtin-protobuf.json.gz")
META = "k8s.io.apimachinery.pkg.apis.meta.v1"
TIME = f"{META}.Time"
MICRO_TIME = f"{META}.MicroTime"
DURATION = f"{META}.Duration"
FIELDS_V1 = f"{META}.FieldsV1"
QUANTITY = "k8s.io.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = "k8s.io.apimachinery.pkg.util.intstr.IntOrString"
RAW_EXTENSION = "k8s.io.apimachinery.pkg.runtime.RawExtension"
SPECIAL = frozenset({TIME, MICRO_TIME, DURATION, FIELDS_V1, QUANTITY, INT_OR_STRING, RAW_EXTENSION})

Field = list[Any]
"""[json name, type (a scalar's name or a message's full name), "opt" | "rep" | "map",
flags ("p" Go pointer, "e" omitempty, "z" omitzero, "i" inline), map value type or None]."""


class UnknownKind(ProtobufError):  # noqa: N818 - as the API words it
    """A kind this server has no protobuf form for (415)."""


@cache
def messages() -> dict[str, Any]:
    """The shipped table: {"kinds": {"apiVersion/Kind": message}, "messages": {...}}."""
    with gzip.open(MESSAGES, "rt", encoding="utf-8") as handle:
        table: dict[str, Any] = json.load(handle)
    return table


def _rfc3339(seconds: int, micros: int | None = None) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    if micros is None:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{micros:06d}Z"


def go_duration(nanoseconds: int) -> str:
    """A duration as Go's time.Duration.String writes it (1h2m3.5s, 1.5ms, 0s)."""
    if nanoseconds == 0:
        return "0s"
    sign, value = ("-" if nanoseconds < 0 else ""), abs(nanoseconds)

    def decimal(number: int, scale: int) -> str:
        whole, fraction = divmod(number, scale)
        digits = str(fraction).rjust(len(str(scale)) - 1, "0").rstrip("0")
        return f"{whole}.{digits}" if digits else str(whole)

    if value < 1_000:
        return f"{sign}{value}ns"
    if value < 1_000_000:
        return f"{sign}{decimal(value, 1_000)}µs"
    if value < 1_000_000_000:
        return f"{sign}{decimal(value, 1_000_000)}ms"
    hours, rest = divmod(value, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = decimal(rest, 1_000_000_000) + "s"
    if hours:
        text = f"{hours}h{minutes}m{text}"
    elif minutes:
        text = f"{minutes}m{text}"
    return sign + text


def _special(name: str, data: bytes) -> Any:
    fields = {number: (wire, value) for number, wire, value in wire_fields(data)}

    def get(number: int, kind: str, default: Any) -> Any:
        found = fields.get(number)
        return default if found is None else scalar(kind, *found)

    if name in (TIME, MICRO_TIME):
        if not data:
            return None  # the zero time
        seconds = get(1, "int64", 0)
        if name == TIME:
            return _rfc3339(seconds)
        return _rfc3339(seconds, get(2, "int32", 0) // 1000)
    if name == DURATION:
        return go_duration(get(1, "int64", 0))
    if name == QUANTITY:
        return get(1, "string", "")
    if name == INT_OR_STRING:
        return get(3, "string", "") if get(1, "int64", 0) == 1 else get(2, "int32", 0)
    raw = fields.get(1, (2, b""))[1]
    if name == RAW_EXTENSION and raw.startswith(MAGIC):
        return decode(raw)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError as error:
        raise ProtobufError(f"{name.rpartition('.')[2]} that is not JSON: {error}") from error


def _zero(kind: str) -> Any:
    if kind in ("string", "bytes"):
        return ""
    if kind == "bool":
        return False
    return 0.0 if kind in ("double", "float") else 0


def _value(kind: str, wire: int, raw: Any, table: dict[str, Any]) -> Any:
    if kind in SPECIAL:
        return _special(kind, raw)
    if kind in table:
        return message_json(kind, raw)
    return scalar(kind, wire, raw)


def message_json(name: str, data: bytes) -> Any:
    """A message as the API server's JSON has it (see the module docstring)."""
    if name in SPECIAL:
        return _special(name, data)
    table = messages()["messages"]
    fields: dict[str, Field] = table[name]
    seen: dict[int, list[tuple[int, Any]]] = {}
    for number, wire, value in wire_fields(data):
        seen.setdefault(number, []).append((wire, value))
    result: dict[str, Any] = {}
    for number_text, (json_name, kind, label, flags, value_kind) in fields.items():
        found = seen.get(int(number_text), [])
        if label == "map":
            entries: dict[str, Any] = {}
            for _, entry in found:
                parts = {n: (w, v) for n, w, v in wire_fields(entry)}
                key = scalar(kind, *parts[1]) if 1 in parts else _zero(kind)
                if 2 in parts:
                    entries[str(key)] = _value(value_kind, *parts[2], table)
                else:
                    entries[str(key)] = {} if value_kind in table else _zero(value_kind)
            if entries:
                result[json_name] = entries
        elif label == "rep":
            items: list[Any] = []
            for wire, value in found:
                if wire == 2 and kind in SCALARS and kind not in ("string", "bytes"):
                    items.extend(packed(kind, value))
                    continue
                items.append(_value(kind, wire, value, table))
            if items:
                result[json_name] = items
        elif found:
            wire, value = found[-1]
            converted = _value(kind, wire, value, table)
            if "i" in flags and isinstance(converted, dict):
                result.update(converted)
            elif converted is None and "z" in flags:
                continue
            elif "p" in flags or converted not in ("", 0, False) or "e" not in flags:
                result[json_name] = converted
        elif kind not in table and kind not in SPECIAL and "p" not in flags and "e" not in flags:
            result[json_name] = _zero(kind)
    return result


def decode(raw: bytes) -> dict[str, Any]:
    """A Kubernetes protobuf body (magic, runtime.Unknown) as a JSON object with its
    apiVersion and kind. Raises UnknownKind for a kind without a shipped message."""
    if not raw.startswith(MAGIC):
        raise ProtobufError("the body does not start with the Kubernetes protobuf magic k8s\\0")
    type_meta, inner, encoding = b"", b"", ""
    for number, wire, value in wire_fields(raw[len(MAGIC) :]):
        if wire != 2:
            continue
        if number == 1:
            type_meta = value
        elif number == 2:
            inner = value
        elif number == 3:
            encoding = scalar("string", wire, value)
    meta = {n: scalar("string", w, v) for n, w, v in wire_fields(type_meta) if w == 2}
    api_version, kind = meta.get(1, ""), meta.get(2, "")
    if encoding:
        raise ProtobufError(f"content encoding {encoding!r} is not supported")
    table = messages()
    name = table["kinds"].get(f"{api_version}/{kind}") or table["kinds"].get(f"*/{kind}")
    if name is None:
        raise UnknownKind(f"no protobuf form for {api_version} {kind}")
    body = message_json(name, inner)
    if not isinstance(body, dict):
        raise ProtobufError(f"{kind} is not an object")
    return {"apiVersion": api_version, "kind": kind, **body}

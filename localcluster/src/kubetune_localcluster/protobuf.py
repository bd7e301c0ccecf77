"""Request bodies in Kubernetes protobuf (application/vnd.kubernetes.protobuf), decoded to the
JSON form the API server would have decoded them to.

client-go's typed clients send protobuf for built-in kinds and do not fall back to JSON when a
server answers 415 (they do only for CBOR), so `kubectl create configmap|namespace|secret|
serviceaccount|role|...` needs the API server to read it, as every real one does.

A body is the 4-byte magic "k8s\\0" and a runtime.Unknown: the TypeMeta (apiVersion, kind) and
the raw bytes of the object's message. The messages of the kinds this emulator serves (and
Binding and DeleteOptions) are described by builtin-protobuf.json.gz, built by
`message_table` from the Kubernetes 1.37 sources (the generated.proto of each API package for
the field numbers and types, the Go structs' tags for the JSON names, `omitempty`, `inline`
and pointers): a field is written to JSON as Go's encoding/json would write the decoded Go
struct (a zero scalar of an omitempty non-pointer field is left out, a set pointer field is
kept even when zero, an inline struct's fields join its parent's). The well-known types with
a JSON form of their own are converted here: Time and MicroTime (RFC 3339 strings), Duration,
Quantity, IntOrString, FieldsV1 and RawExtension (their JSON). Custom resources and
CustomResourceDefinitions have no protobuf form here: `UnknownKind`, which the server answers
with 415.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

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
_VARINT_TYPES = frozenset({"int32", "int64", "uint32", "uint64", "bool", "enum"})

Field = list[Any]
"""[json name, type (a scalar's name or a message's full name), "opt" | "rep" | "map",
flags ("p" Go pointer, "e" omitempty, "z" omitzero, "i" inline), map value type or None]."""


class ProtobufError(ValueError):
    """A body that is not a well-formed Kubernetes protobuf message (400)."""


class UnknownKind(ProtobufError):  # noqa: N818 - as the API words it
    """A kind this server has no protobuf form for (415)."""


# --- the wire format ---------------------------------------------------------------------------


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


def _scalar(kind: str, wire: int, value: Any) -> Any:
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


def _packed(kind: str, data: bytes) -> list[Any]:
    """A packed repeated scalar (proto3 style; Kubernetes' proto2 messages never pack)."""
    values: list[Any] = []
    at = 0
    while at < len(data):
        if kind in _VARINT_TYPES:
            raw, at = _varint(data, at)
            values.append(_scalar(kind, 0, raw))
        else:
            size = 8 if kind in ("double", "fixed64", "sfixed64") else 4
            values.append(_scalar(kind, 1 if size == 8 else 5, data[at : at + size]))
            at += size
    return values


# --- messages to JSON ------------------------------------------------------------------------


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
        return default if found is None else _scalar(kind, *found)

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
    return _scalar(kind, wire, raw)


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
                key = _scalar(kind, *parts[1]) if 1 in parts else _zero(kind)
                if 2 in parts:
                    entries[str(key)] = _value(value_kind, *parts[2], table)
                else:
                    entries[str(key)] = {} if value_kind in table else _zero(value_kind)
            if entries:
                result[json_name] = entries
        elif label == "rep":
            items: list[Any] = []
            for wire, value in found:
                if wire == 2 and kind in _SCALARS and kind not in ("string", "bytes"):
                    items.extend(_packed(kind, value))
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
            encoding = _scalar("string", wire, value)
    meta = {n: _scalar("string", w, v) for n, w, v in wire_fields(type_meta) if w == 2}
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


# --- the table, from the Kubernetes sources ----------------------------------------------------

# The kinds a client may send (group/version, kind, the API package under the Go module cache's
# k8s.io/), besides DeleteOptions, accepted under any apiVersion.
ROOT_KINDS: tuple[tuple[str, str, str], ...] = (
    *(
        ("v1", kind, "api@/core/v1")
        for kind in (
            "Namespace",
            "Pod",
            "Binding",
            "Node",
            "Event",
            "Secret",
            "ConfigMap",
            "ServiceAccount",
            "Service",
        )
    ),
    ("events.k8s.io/v1", "Event", "api@/events/v1"),
    ("coordination.k8s.io/v1", "Lease", "api@/coordination/v1"),
    *(
        ("rbac.authorization.k8s.io/v1", kind, "api@/rbac/v1")
        for kind in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
    ),
    ("policy/v1", "PodDisruptionBudget", "api@/policy/v1"),
    ("networking.k8s.io/v1", "NetworkPolicy", "api@/networking/v1"),
    ("*", "DeleteOptions", "apimachinery@/pkg/apis/meta/v1"),
)
_SCALARS = frozenset(
    {"string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "double", "float"}
    | {"fixed32", "fixed64", "sfixed32", "sfixed64"}
)
_PROTO_FIELD = re.compile(r"^\s*(optional|repeated)\s+(\S+)\s+(\w+)\s*=\s*(\d+)")
_PROTO_MAP = re.compile(r"^\s*map<\s*(\S+?)\s*,\s*(\S+?)\s*>\s+(\w+)\s*=\s*(\d+)")
_GO_STRUCT = re.compile(r"^type (\w+) struct \{")


def _proto_messages(text: str) -> dict[str, dict[int, tuple[str, str, str, str | None]]]:
    """{full message name: {number: (proto name, type, label, map value type)}}."""
    package = re.search(r"^package ([\w.]+);", text, re.MULTILINE)
    assert package is not None
    prefix = package[1]

    def resolve(kind: str) -> str:
        if kind in _SCALARS:
            return kind
        return kind[1:] if kind.startswith(".") else f"{prefix}.{kind}"

    found: dict[str, dict[int, tuple[str, str, str, str | None]]] = {}
    current: dict[int, tuple[str, str, str, str | None]] | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("message "):
            current = found.setdefault(f"{prefix}.{stripped.split()[1]}", {})
        elif stripped == "}":
            current = None
        elif current is not None and not stripped.startswith("//"):
            if field := _PROTO_FIELD.match(line):
                label = "rep" if field[1] == "repeated" else "opt"
                current[int(field[4])] = (field[3], resolve(field[2]), label, None)
            elif mapping := _PROTO_MAP.match(line):
                key, value = resolve(mapping[1]), resolve(mapping[2])
                current[int(mapping[4])] = (mapping[3], key, "map", value)
    return found


def _go_tags(texts: list[str]) -> dict[tuple[str, int], tuple[str, str]]:
    """{(struct, protobuf number): (JSON name, flags)} from the Go structs' tags."""
    tags: dict[tuple[str, int], tuple[str, str]] = {}
    for text in texts:
        struct_name: str | None = None
        for line in text.splitlines():
            if opening := _GO_STRUCT.match(line):
                struct_name = opening[1]
            elif line.startswith("}"):
                struct_name = None
            elif struct_name and 'protobuf:"' in line and not line.lstrip().startswith("//"):
                declaration, _, tag = line.partition("`")
                words = declaration.split()
                json_tag = re.search(r'json:"([^"]*)"', tag)
                proto_tag = re.search(r'protobuf:"([^"]*)"', tag)
                if proto_tag is None or not words or proto_tag[1].count(",") < 2:
                    continue
                number = int(proto_tag[1].split(",")[1])
                options = (json_tag[1] if json_tag else "").split(",")
                go_type = words[-1]
                flags = "p" if go_type.startswith("*") else ""
                flags += "e" if "omitempty" in options else ""
                flags += "z" if "omitzero" in options else ""
                if len(words) == 1 and not options[0]:
                    flags += "i"  # an embedded struct without a JSON name: inline
                name = options[0] or re.sub(r".*name=(\w+).*", r"\1", proto_tag[1])
                tags[(struct_name, number)] = (name, flags)
    return tags


def message_table(modules: Path, version: str = "v0.37.1") -> dict[str, Any]:
    """The table of builtin-protobuf.json.gz from a Go module cache holding k8s.io/api and
    k8s.io/apimachinery at `version` (`$(go env GOMODCACHE)`)."""
    base = modules / "k8s.io"
    packages = {
        "api@/" + d.relative_to(base / f"api@{version}").as_posix(): d
        for d in (base / f"api@{version}").glob("*/v1")
    }
    for path in ("pkg/apis/meta/v1", "pkg/util/intstr", "pkg/api/resource", "pkg/runtime"):
        packages[f"apimachinery@/{path}"] = base / f"apimachinery@{version}" / path
    protos: dict[str, dict[int, tuple[str, str, str, str | None]]] = {}
    tags: dict[str, dict[tuple[str, int], tuple[str, str]]] = {}
    for directory in packages.values():
        text = (directory / "generated.proto").read_text()
        found = _proto_messages(text)
        protos.update(found)
        go = [p.read_text() for p in sorted(directory.glob("*.go")) if not p.stem.endswith("_test")]
        go_tags = _go_tags(go)
        for name in found:
            tags[name] = {k: v for k, v in go_tags.items() if k[0] == name.rpartition(".")[2]}
    kinds: dict[str, str] = {}
    for api_version, kind, package in ROOT_KINDS:
        text = (packages[package] / "generated.proto").read_text()
        prefix = re.search(r"^package ([\w.]+);", text, re.MULTILINE)
        assert prefix is not None
        kinds[f"{api_version}/{kind}"] = f"{prefix[1]}.{kind}"
    table: dict[str, dict[str, Field]] = {}
    todo = list(kinds.values())
    while todo:
        name = todo.pop()
        if name in table or name in SPECIAL:
            continue
        fields: dict[str, Field] = {}
        short = name.rpartition(".")[2]
        for number, (proto_name, kind, label, value_kind) in sorted(protos[name].items()):
            json_name, flags = tags[name].get((short, number), (proto_name, "e"))
            fields[str(number)] = [json_name, kind, label, flags, value_kind]
            for referenced in (kind, value_kind):
                if referenced and referenced not in _SCALARS:
                    todo.append(referenced)
        table[name] = fields
    return {"kinds": dict(sorted(kinds.items())), "messages": dict(sorted(table.items()))}

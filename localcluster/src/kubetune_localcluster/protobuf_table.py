"""The table of builtin-protobuf.json.gz, built from the Kubernetes sources in a Go module
cache: the generated.proto of each API package for the field numbers and types, the Go structs'
tags for the JSON names, `omitempty`, `inline` and pointers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kubetune_localcluster.protobuf import SPECIAL, Field
from kubetune_localcluster.protobuf_wire import SCALARS

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
_PROTO_FIELD = re.compile(r"^\s*(optional|repeated)\s+(\S+)\s+(\w+)\s*=\s*(\d+)")
_PROTO_MAP = re.compile(r"^\s*map<\s*(\S+?)\s*,\s*(\S+?)\s*>\s+(\w+)\s*=\s*(\d+)")
_GO_STRUCT = re.compile(r"^type (\w+) struct \{")


def _proto_messages(text: str) -> dict[str, dict[int, tuple[str, str, str, str | None]]]:
    """{full message name: {number: (proto name, type, label, map value type)}}."""
    package = re.search(r"^package ([\w.]+);", text, re.MULTILINE)
    assert package is not None
    prefix = package[1]

    def resolve(kind: str) -> str:
        if kind in SCALARS:
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
                if referenced and referenced not in SCALARS:
                    todo.append(referenced)
        table[name] = fields
    return {"kinds": dict(sorted(kinds.items())), "messages": dict(sorted(table.items()))}

"""A CRD's openAPIV3Schema compiled once into a tree of nodes (regular expressions, CEL
programs, what lies below each node) and cached, so admitting an object costs a walk over it,
not over the schema.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from kubetune_localcluster.cel_rules import Rule, compile_rule

Schema = dict[str, Any]
# A value that is absent: a node without a default, a field the old object lacks, a cause
# that prints no value.
MISSING: Any = object()


@dataclass
class Node:
    """One schema node, compiled."""

    raw: Schema
    type: str = ""
    nullable: bool = False
    int_or_string: bool = False
    preserve: bool = False
    embedded: bool = False
    properties: dict[str, Node] = field(default_factory=dict)
    additional: Node | None = None
    items: Node | None = None
    default: Any = MISSING
    required: tuple[str, ...] = ()
    enum: list[Any] | None = None
    pattern: re.Pattern[str] | None = None
    list_type: str | None = None
    map_keys: tuple[str, ...] = ()
    rules: list[Rule] = field(default_factory=list)
    junctors: dict[str, list[Node]] = field(default_factory=dict)
    has_rules: bool = False  # here or below
    has_transition_rules: bool = False  # here or below
    has_list_types: bool = False  # here or below


def _compile(raw: Schema) -> Node:
    node = Node(raw=raw)
    node.type = raw.get("type", "") or ""
    node.nullable = bool(raw.get("nullable"))
    node.int_or_string = bool(raw.get("x-kubernetes-int-or-string"))
    node.preserve = bool(raw.get("x-kubernetes-preserve-unknown-fields"))
    node.embedded = bool(raw.get("x-kubernetes-embedded-resource"))
    node.properties = {name: _compile(child) for name, child in raw.get("properties", {}).items()}
    if isinstance(raw.get("additionalProperties"), dict):
        node.additional = _compile(raw["additionalProperties"])
    if isinstance(raw.get("items"), dict):
        node.items = _compile(raw["items"])
    if "default" in raw:
        node.default = raw["default"]
    node.required = tuple(raw.get("required", ()))
    node.enum = raw.get("enum")
    if "pattern" in raw:
        node.pattern = re.compile(raw["pattern"])
    node.list_type = raw.get("x-kubernetes-list-type")
    node.map_keys = tuple(raw.get("x-kubernetes-list-map-keys", ()))
    node.rules = [compile_rule(r) for r in raw.get("x-kubernetes-validations", [])]
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(raw.get(key), list):
            node.junctors[key] = [_compile(branch) for branch in raw[key]]
    if isinstance(raw.get("not"), dict):
        node.junctors["not"] = [_compile(raw["not"])]
    children = [*node.properties.values(), *(c for c in (node.additional, node.items) if c)]
    node.has_rules = bool(node.rules) or any(c.has_rules for c in children)
    node.has_transition_rules = any(r.transition for r in node.rules) or any(
        c.has_transition_rules for c in children
    )
    node.has_list_types = node.list_type in ("map", "set") or any(
        c.has_list_types for c in children
    )
    return node


_CACHE_SIZE = 64
_by_identity: OrderedDict[int, tuple[Schema, Node]] = OrderedDict()
_by_content: OrderedDict[str, Node] = OrderedDict()


def compiled(schema: Schema) -> Node:
    """The compiled form of a schema, cached by identity (holding the schema, so its id stays
    its own) and by content, both bounded."""
    hit = _by_identity.get(id(schema))
    if hit is not None and hit[0] is schema:
        _by_identity.move_to_end(id(schema))
        return hit[1]
    digest = hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()
    node = _by_content.get(digest)
    if node is None:
        node = _compile(schema)
        _by_content[digest] = node
        if len(_by_content) > _CACHE_SIZE:
            _by_content.popitem(last=False)
    _by_identity[id(schema)] = (schema, node)
    if len(_by_identity) > _CACHE_SIZE:
        _by_identity.popitem(last=False)
    return node

"""Label and field selectors as the Kubernetes API parses and matches them on list and watch.

Label selectors: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x,y)`, `a`, `!a`, `a>1`,
`a<1`, comma-separated (all must hold). Field selectors: `path=value`, `path==value`,
`path!=value` over the fields each resource supports (metadata.name, metadata.namespace,
status.phase and spec.nodeName for pods...); other fields are refused as the API server does.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

_KEY = r"(?:[a-z0-9A-Z.\-]+/)?[A-Za-z0-9](?:[A-Za-z0-9_.\-]*[A-Za-z0-9])?"
_VALUE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9_.\-]*[A-Za-z0-9])?)?$")
_EXISTS = re.compile(rf"^(!?)\s*({_KEY})$")
_SET = re.compile(rf"^({_KEY})\s+(in|notin)\s*\((.*)\)$")
_COMPARE = re.compile(rf"^({_KEY})\s*(==|=|!=|>|<)\s*(.*)$")


class SelectorError(ValueError):
    """A selector that does not parse; the message is what the API server answers (400)."""


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if self.operator in ("=", "in"):
            return present and value in self.values
        if self.operator in ("!=", "notin"):
            return value not in self.values
        if not present:
            return False
        try:
            number = int(str(value))
        except ValueError:
            return False
        limit = int(self.values[0])
        return number > limit if self.operator == "gt" else number < limit


def _split(text: str) -> list[str]:
    """Split on the commas outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [part.strip() for part in parts]


def _value(value: str, text: str) -> str:
    value = value.strip()
    if len(value) > 63 or not _VALUE.match(value):
        raise SelectorError(
            f"unable to parse requirement: values[0][{text}]: Invalid value: {value!r}: a valid "
            "label must be an empty string or consist of alphanumeric characters, '-', '_' "
            "or '.', and must start and end with an alphanumeric character"
        )
    return value


def _requirement(text: str) -> Requirement:
    if match := _EXISTS.match(text):
        return Requirement(match[2], "!" if match[1] else "exists")
    if match := _SET.match(text):
        values = tuple(_value(v, text) for v in match[3].split(",") if v.strip())
        if not values:
            raise SelectorError(
                f"unable to parse requirement: {text!r}: for 'in', 'notin' "
                "operators, values set can't be empty"
            )
        return Requirement(match[1], match[2], values)
    if match := _COMPARE.match(text):
        operator = {"==": "=", ">": "gt", "<": "lt"}.get(match[2], match[2])
        value = _value(match[3], text)
        if operator in ("gt", "lt") and not re.fullmatch(r"-?\d+", value):
            raise SelectorError(
                f"unable to parse requirement: {text!r}: for 'Gt', 'Lt' "
                "operators, the value must be an integer"
            )
        return Requirement(match[1], operator, (value,))
    raise SelectorError(
        f"unable to parse requirement: found {text!r}, expected: a label key "
        "followed by =, ==, !=, in, notin, or nothing (exists), or !key"
    )


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        if not text or not text.strip():
            return cls()
        return cls(tuple(_requirement(part) for part in _split(text.strip())))

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(requirement.matches(labels) for requirement in self.requirements)


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The value of a dotted field as field selectors compare it (absent: "")."""
    if path == "source":  # core/v1 events select on the source component
        path = "source.component"
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return ""
        node = node.get(part)
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


@dataclass(frozen=True)
class FieldSelector:
    terms: tuple[tuple[str, bool, str], ...] = ()  # (field, equal?, value)

    @classmethod
    def parse(cls, text: str | None, supported: Collection[str]) -> FieldSelector:
        if not text or not text.strip():
            return cls()
        terms = []
        for part in _split(text.strip()):
            match = re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*(.*)", part)
            if match is None:
                raise SelectorError(f"invalid selector: {part!r}; can't understand {part!r}")
            name = match[1]
            if name not in supported:
                raise SelectorError(f"field label not supported: {name}")
            terms.append((name, match[2] != "!=", match[3].strip()))
        return cls(tuple(terms))

    @property
    def empty(self) -> bool:
        return not self.terms

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all((field_value(obj, name) == value) == equal for name, equal, value in self.terms)

"""The evaluation of a schema's CEL x-kubernetes-validations against an object: values typed
by the schema as the API server hands them to CEL, transition rules with oldSelf, ratcheting,
and outcomes memoized by value.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from celpy import celtypes
from celpy.evaluation import CELEvalError

from kubetune_localcluster.cel_rules import Rule
from kubetune_localcluster.compiled_schemas import MISSING, Node
from kubetune_localcluster.field_errors import Cause, field_error, join_path
from kubetune_localcluster.openapi_validation import canonical, correlate_items


def _to_cel(node: Node | None, value: Any) -> Any:
    """The value as the API server hands it to CEL: typed by the schema (a number field is a
    double even when written as 1)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int | float):
        if node is not None and node.type == "number":
            return celtypes.DoubleType(float(value))
        in_int64 = -(2**63) <= value < 2**63  # past it, JSON decodes to a float64, as in Go
        if in_int64 and (isinstance(value, int) or (node is not None and node.type == "integer")):
            return celtypes.IntType(int(value))
        return celtypes.DoubleType(float(value))
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, list):
        items = node.items if node is not None else None
        return celtypes.ListType([_to_cel(items, v) for v in value])
    if isinstance(value, dict):
        converted = {}
        for key, child in value.items():
            sub = node.properties.get(key, node.additional) if node is not None else None
            converted[celtypes.StringType(key)] = _to_cel(sub, child)
        return celtypes.MapType(converted)
    return value


def _field_path(path: str, relative: str) -> str:
    return (path + relative) if relative.startswith("[") else join_path(path, relative.lstrip("."))


_OUTCOMES_SIZE = 4096
# CEL rules are pure functions of self (and oldSelf): their outcomes are memoized by value.
_outcomes: OrderedDict[tuple[int, str, str], tuple[str, str] | None] = OrderedDict()


def _outcome(rule: Rule, node: Node, value: Any, old: Any) -> tuple[str, str] | None:
    """None when the rule holds, else ("error", detail) or ("fail", message)."""
    key = (id(rule), canonical(value), canonical(old) if rule.transition else "")
    if key in _outcomes:
        _outcomes.move_to_end(key)
        return _outcomes[key]
    activation = {"self": _to_cel(node, value)}
    if rule.transition:
        activation["oldSelf"] = _to_cel(node, old)
    outcome: tuple[str, str] | None = None
    try:
        result = rule.program.evaluate(activation)
    except CELEvalError as error:
        outcome = ("error", _cel_error_text(error))
    else:
        if not (isinstance(result, celtypes.BoolType) and bool(result)):
            message = rule.message or f"failed rule: {rule.rule}"
            if rule.message_program is not None:
                try:
                    computed = rule.message_program.evaluate(activation)
                except CELEvalError:
                    computed = None
                if isinstance(computed, str) and computed.strip() and "\n" not in computed:
                    message = str(computed)
            outcome = ("fail", message)
    _outcomes[key] = outcome
    if len(_outcomes) > _OUTCOMES_SIZE:
        _outcomes.popitem(last=False)
    return outcome


def _rule_causes(node: Node, value: Any, old: Any, path: str) -> Iterator[Cause]:
    for rule in node.rules:
        if rule.transition:
            if old is MISSING:
                continue  # transition rules run only where the old value exists
            if rule.rule.strip() == "self == oldSelf" and value == old:
                continue  # equal JSON values are equal in CEL
        elif old is not MISSING and value == old:
            continue  # ratcheting: an unchanged value keeps passing
        outcome = _outcome(rule, node, value, old)
        if outcome is None:
            continue
        kind, text = outcome
        if kind == "error":
            shown = f"'{rule.message.strip()}'" if rule.message.strip() else rule.rule
            yield field_error(
                "FieldValueInvalid", path, node.type, f"{text} evaluating rule: {shown}"
            )
            continue
        where = _field_path(path, rule.field_path) if rule.field_path else path
        reason = rule.reason or "FieldValueInvalid"
        if reason == "FieldValueDuplicate":
            yield field_error(reason, where, node.type)
        elif reason in ("FieldValueRequired", "FieldValueForbidden"):
            yield field_error(reason, where, detail=text)
        else:
            yield field_error("FieldValueInvalid", where, node.type, text)


def _cel_error_text(error: CELEvalError) -> str:
    text = str(error.args[0]) if error.args else str(error)
    match = re.search(r"no such member in mapping: '([^']*)'", str(error.args))
    if match:
        return f"no such key: {match.group(1)}"
    return text


def cel_causes(node: Node, value: Any, old: Any, path: str) -> Iterator[Cause]:
    if not node.has_rules or value is None:
        return
    yield from _rule_causes(node, value, old, path)
    if isinstance(value, dict):
        old_map = old if isinstance(old, dict) else {}
        for name, child in value.items():
            sub = node.properties.get(name, node.additional)
            if sub is not None and sub.has_rules:
                yield from cel_causes(sub, child, old_map.get(name, MISSING), join_path(path, name))
    elif isinstance(value, list) and node.items is not None and node.items.has_rules:
        old_items = correlate_items(node, value, old)
        for index, item in enumerate(value):
            yield from cel_causes(node.items, item, old_items[index], f"{path}[{index}]")

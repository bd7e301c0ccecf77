"""The CEL rules of a schema's x-kubernetes-validations, compiled with cel-python: the
environment they run in, a compiled rule, and the check that refuses a CRD whose rules do not
compile.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import celpy
from celpy.celparser import CELParseError

# CEL evaluation errors are validation results here, not internal errors worth logging.
logging.getLogger("celpy.Transpiler").setLevel(logging.CRITICAL)
# The interpreted runner: cel-python 0.5.0's transpiled runner gets has() of a missing field wrong.
CEL = celpy.Environment(runner_class=celpy.InterpretedRunner)


@dataclass
class Rule:
    """One x-kubernetes-validations rule, compiled."""

    rule: str
    program: Any
    message: str
    message_program: Any
    field_path: str
    reason: str | None
    transition: bool


def compile_rule(rule: dict[str, Any]) -> Rule:
    text = rule["rule"]
    program = CEL.program(CEL.compile(text))
    message_program = None
    if rule.get("messageExpression"):
        message_program = CEL.program(CEL.compile(rule["messageExpression"]))
    return Rule(
        rule=text,
        program=program,
        message=rule.get("message", ""),
        message_program=message_program,
        field_path=rule.get("fieldPath", ""),
        reason=rule.get("reason"),
        transition=re.search(r"\boldSelf\b", text) is not None,
    )


def schema_problems(schema: dict[str, Any]) -> list[str]:
    """CEL rules that do not compile (the API server refuses such a CRD); [] when all do."""
    problems: list[str] = []

    def walk(raw: dict[str, Any], path: str) -> None:
        for rule in raw.get("x-kubernetes-validations", []):
            for key in ("rule", "messageExpression"):
                if rule.get(key):
                    try:
                        CEL.compile(rule[key])
                    except CELParseError as error:
                        problems.append(f"{path or '<root>'}: {key} {rule[key]!r}: {error}")
        for name, child in raw.get("properties", {}).items():
            walk(child, f"{path}.{name}".lstrip("."))
        for key, suffix in (("additionalProperties", "[*]"), ("items", "[*]")):
            if isinstance(raw.get(key), dict):
                walk(raw[key], path + suffix)

    walk(schema, "")
    return problems

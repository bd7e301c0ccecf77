"""The subset of kubectl's JSONPath that printer columns use: .name, [index], [*], ['key'] and
[?(@.a.b == 'x')] filters; recursive descent is refused.
"""

from __future__ import annotations

import json
import re
from typing import Any

_TOKEN = re.compile(
    r"""\.(?P<name>(?:\\.|[^.\[\\])+)          # .name, with \. escaping a dot
      | \[(?P<index>-?\d+|\*)\]                 # [0], [-1], [*]
      | \[(?P<quote>['"])(?P<key>.*?)(?P=quote)\]  # ['key']
      | \[\?\(@(?P<filter>(?:\.(?:\\.|[^.=!<>\s\\])+)+)   # [?(@.a.b == 'x')]
        \s*(?P<op>==|!=)\s*(?P<rhs>'[^']*'|"[^"]*"|[^)\s]+)\s*\)\]
      | \.\.                                    # unsupported recursive descent
    """,
    re.VERBOSE,
)


class JsonPathError(ValueError):
    """A column's jsonPath is outside the supported subset."""


def _steps(expression: str) -> list[tuple[str, Any]]:
    text = expression.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    if text.startswith("$"):
        text = text[1:]
    steps: list[tuple[str, Any]] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.group(0) == "..":
            raise JsonPathError(f"unsupported jsonPath {expression!r} at {text[position:]!r}")
        if match.group("name") is not None:
            steps.append(("key", match.group("name").replace("\\.", ".")))
        elif match.group("index") is not None:
            index = match.group("index")
            steps.append(("all", None) if index == "*" else ("index", int(index)))
        elif match.group("key") is not None:
            steps.append(("key", match.group("key")))
        else:
            path = [
                p.replace("\\.", ".") for p in re.findall(r"\.((?:\\.|[^.\\])+)", match["filter"])
            ]
            rhs = match.group("rhs")
            value: Any = rhs[1:-1] if rhs[0] in "'\"" else json.loads(rhs)
            steps.append(("filter", (path, match.group("op"), value)))
        position = match.end()
    return steps


def _dig(value: Any, path: list[str]) -> Any:
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def jsonpath_values(obj: Any, expression: str) -> list[Any]:
    """Every value the expression finds (missing keys find nothing, as with allowMissingKeys)."""
    current = [obj]
    for kind, arg in _steps(expression):
        found: list[Any] = []
        for value in current:
            if (kind == "key" and isinstance(value, dict) and arg in value) or (
                kind == "index" and isinstance(value, list) and -len(value) <= arg < len(value)
            ):
                found.append(value[arg])
            elif kind == "all" and isinstance(value, list | dict):
                found.extend(value if isinstance(value, list) else value.values())
            elif kind == "filter" and isinstance(value, list):
                path, op, wanted = arg
                for item in value:
                    actual = _dig(item, path)
                    if (actual == wanted) == (op == "=="):
                        found.append(item)
        current = found
    return current

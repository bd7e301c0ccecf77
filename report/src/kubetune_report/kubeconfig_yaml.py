"""Reading a kubeconfig with the standard library only: JSON, PyYAML when it is importable,
or the simple YAML that kubectl writes."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from kubetune_report.errors import ReportError

logger = logging.getLogger(__name__)


def load_kubeconfig(text: str) -> dict[str, Any]:
    """A kubeconfig document as a dict."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        document = json.loads(text)
    else:
        try:
            import yaml  # type: ignore[import-untyped,unused-ignore]

            document = yaml.safe_load(text)
        except ImportError:
            document = parse_simple_yaml(text)
    if not isinstance(document, dict):
        raise ReportError("a kubeconfig must be a mapping")
    return document


_KEY = re.compile(r"""^("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s'"#][^:#]*?)\s*:(?:\s+|$)(.*)$""")


def _strip_comment(line: str) -> str:
    quote = None
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1] in " \t"):
            return line[:index]
    return line


def _scalar(text: str, line: int) -> Any:
    if text.startswith('"'):
        return json.loads(text)
    if text.startswith("'"):
        if not text.endswith("'") or len(text) < 2:
            raise ReportError(f"kubeconfig line {line}: unterminated quote")
        return text[1:-1].replace("''", "'")
    if text in ("{}", "[]"):
        return {} if text == "{}" else []
    if text[0] in "[{|>&*!":
        raise ReportError(f"kubeconfig line {line}: YAML construct {text[:20]!r} not supported")
    if text in ("true", "True", "false", "False"):
        return text.lower() == "true"
    if text in ("null", "~"):
        return None
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


def _key(text: str, line: int) -> str:
    value = _scalar(text, line)
    return str(value) if not isinstance(value, str) else value


def parse_simple_yaml(text: str) -> Any:
    """The YAML subset kubectl writes: block mappings and sequences, plain and quoted scalars,
    `{}` and `[]`. Anything else (anchors, flow collections, block scalars) is a ReportError."""
    lines: list[list[Any]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        content = _strip_comment(raw).rstrip()
        if not content.strip() or content.strip() in ("---", "..."):
            continue
        indent = len(content) - len(content.lstrip(" "))
        if content[indent] == "\t":
            raise ReportError(f"kubeconfig line {number}: tabs are not YAML indentation")
        lines.append([indent, content.strip(), number])
    if not lines:
        return None
    value, end = _block(lines, 0, lines[0][0])
    if end != len(lines):
        raise ReportError(f"kubeconfig line {lines[end][2]}: unexpected indentation")
    return value


def _is_item(content: str) -> bool:
    return content == "-" or content.startswith("- ")


def _block(lines: list[list[Any]], index: int, indent: int) -> tuple[Any, int]:
    if _is_item(lines[index][1]):
        items: list[Any] = []
        while index < len(lines) and lines[index][0] == indent and _is_item(lines[index][1]):
            rest = lines[index][1][1:].lstrip()
            if not rest:
                if index + 1 < len(lines) and lines[index + 1][0] > indent:
                    item, index = _block(lines, index + 1, lines[index + 1][0])
                else:
                    item, index = None, index + 1
            elif _KEY.match(rest):
                # "- key: value" opens a mapping whose keys line up after the dash.
                column = indent + len(lines[index][1]) - len(rest)
                lines[index] = [column, rest, lines[index][2]]
                item, index = _block(lines, index, column)
            else:
                item, index = _scalar(rest, lines[index][2]), index + 1
            items.append(item)
        return items, index
    mapping: dict[str, Any] = {}
    while index < len(lines) and lines[index][0] == indent and not _is_item(lines[index][1]):
        _, content, number = lines[index]
        match = _KEY.match(content)
        if not match:
            raise ReportError(f"kubeconfig line {number}: expected 'key: value'")
        key, rest = _key(match[1], number), match[2].strip()
        index += 1
        if rest:
            mapping[key] = _scalar(rest, number)
        elif index < len(lines) and (
            lines[index][0] > indent or (lines[index][0] == indent and _is_item(lines[index][1]))
        ):
            mapping[key], index = _block(lines, index, lines[index][0])
        else:
            mapping[key] = None
    if not mapping:
        raise ReportError(f"kubeconfig line {lines[index][2]}: unexpected content")
    return mapping, index

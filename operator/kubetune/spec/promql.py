"""PromQL query templates of a study's Prometheus metrics source: their placeholders
(`${trial.pod}`, `${study.name}`, ...) and how values are put into them safely.

A placeholder may only stand inside a double- or single-quoted PromQL string literal, and the
value put there is escaped for that literal, so no value (a crafted study name, label or
parameter) can close the string and change the query. The validator reports a placeholder
outside a string; `render` refuses one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

PLACEHOLDERS: dict[str, str] = {
    "study.name": "the study's name",
    "study.namespace": "the study's namespace",
    "trial.name": "the trial's name (<study>-<number>)",
    "trial.number": "the trial's number, from 0",
    "trial.pod": "the trial pod's name",
    "trial.namespace": "the trial pod's namespace",
    "metric": "the metric's name (in the shared query)",
}
"""Every placeholder a query template may name, with what it stands for."""

_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_QUOTES = "\"'"
_SIMPLE_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


class TemplateError(ValueError):
    """A query template that cannot be rendered safely (see `check_template`)."""


@dataclass(frozen=True)
class Placeholder:
    """One `${...}` in a template: its name, where it starts, and the quote it sits in
    (`"` or `'`; `` ` `` for a raw string, None outside any string)."""

    name: str
    offset: int
    quote: str | None


def escape_string(value: str, quote: str = '"') -> str:
    """`value` as the inside of a PromQL string literal delimited by `quote` (`"` or `'`).

    PromQL strings follow Go's escaping: a backslash, the delimiting quote and control
    characters are escaped, so the literal always ends where the template's quote does and
    reads back as exactly `value`.
    """
    if quote not in _QUOTES:
        raise ValueError(f"PromQL strings cannot escape inside {quote!r} quotes")
    out = []
    for char in value:
        if char in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[char])
        elif char == quote:
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def placeholders(template: str) -> list[Placeholder]:
    """The placeholders of a template, each with the string literal it sits in.

    A small scanner of PromQL's lexical structure: string literals ("...", '...' with
    backslash escapes, `...` raw) and comments (# to the end of the line)."""
    found: list[Placeholder] = []
    quote: str | None = None
    i = 0
    while i < len(template):
        char = template[i]
        match = _PLACEHOLDER.match(template, i)
        if match is not None:
            found.append(Placeholder(match.group(1), i, quote))
            i = match.end()
            continue
        if quote is None:
            if char in "\"'`":
                quote = char
            elif char == "#":
                end = template.find("\n", i)
                i = len(template) if end < 0 else end
                continue
        elif char == "\\" and quote != "`":
            i += 2
            continue
        elif char == quote:
            quote = None
        i += 1
    return found


def check_template(template: str, allowed: Mapping[str, str] = PLACEHOLDERS) -> list[str]:
    """What is wrong with a template, one sentence each (empty when it renders safely)."""
    problems = []
    for placeholder in placeholders(template):
        shown = "${" + placeholder.name + "}"
        if placeholder.name not in allowed:
            known = ", ".join("${" + name + "}" for name in allowed)
            problems.append(f"{shown} is not a placeholder; use one of {known}")
        elif placeholder.quote is None:
            problems.append(
                f"{shown} at offset {placeholder.offset} is outside a string literal, where "
                'its value could change the query; quote it, e.g. pod="${trial.pod}"'
            )
        elif placeholder.quote == "`":
            problems.append(
                f"{shown} at offset {placeholder.offset} is inside a `raw string`, which "
                "cannot escape a value; use double quotes"
            )
    return problems


def render(template: str, values: Mapping[str, str]) -> str:
    """The template with each placeholder replaced by its value, escaped for the string
    literal it sits in. Raises TemplateError for a template `check_template` rejects or a
    placeholder with no value."""
    problems = check_template(template, values)
    if problems:
        raise TemplateError("; ".join(problems))
    out = []
    last = 0
    for placeholder in placeholders(template):
        out.append(template[last : placeholder.offset])
        out.append(escape_string(values[placeholder.name], placeholder.quote or '"'))
        last = placeholder.offset + len(placeholder.name) + 3
    out.append(template[last:])
    return "".join(out)

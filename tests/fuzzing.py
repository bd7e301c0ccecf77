"""Hypothesis strategies for hostile input: what a study author or a trainer could write.

KUBETUNE_FUZZ_EXAMPLES sets the examples per fuzz test (a campaign: say 20000); the default
keeps the suite fast. Each example must also finish within EXAMPLE_SECONDS.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

EXAMPLES: Final = int(os.environ.get("KUBETUNE_FUZZ_EXAMPLES", "150"))
EXAMPLE_SECONDS: Final = 5.0
"""The most one example may take (parse, observe, reconcile): bounded work per input."""

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=EXAMPLE_SECONDS),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
)

# Numbers at the edges: past float, past int64, past Python's 4300-digit limit for str(int).
EDGE_INTEGERS = st.sampled_from(
    [0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**308, 10**400]
)
EDGE_FLOATS = st.sampled_from(
    [
        0.0,
        -0.0,
        1e-320,
        1e308,
        -1e308,
        1.7976931348623157e308,
        float("nan"),
        float("inf"),
        float("-inf"),
    ]
)
# Text with lone surrogates (what a "\ud800" escape in JSON decodes to), controls, long runs.
TEXT = st.one_of(
    st.text(st.characters(codec=None, categories=None), max_size=30),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3),
    st.sampled_from(
        [
            "",
            " ",
            "Z",
            "2026-01-01T00:00:00",
            "9999-12-31T23:59:59-23:59",
            "0001-01-01T00:00:00+23:59",
            "2126-01-01T00:00:00Z",
            "NaN",
            "1e999",
        ]
    ),
    st.integers(1, 5).map(lambda n: "x" * 10**n),
)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), EDGE_INTEGERS, st.floats(), EDGE_FLOATS, TEXT
)


def nested(depth: int) -> Any:
    """A value nested `depth` levels deep."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


JSON_VALUES = st.one_of(
    st.recursive(
        SCALARS,
        lambda children: st.one_of(
            st.lists(children, max_size=5), st.dictionaries(TEXT, children, max_size=5)
        ),
        max_leaves=20,
    ),
    st.sampled_from([10, 200]).map(nested),
)


@dataclass(frozen=True)
class Deep:
    """A value nested `depth` levels deep, built when it is put into a document (hypothesis
    shows a failing example as Deep(2000), where printing the value itself would recurse)."""

    depth: int


DEEP_VALUES = st.sampled_from([900, 2000, 10_000]).map(Deep)
"""Deeper than Python's recursion limit: for documents that are never serialized as JSON."""


def to_json(value: Any) -> str:
    """A value as JSON text, or as its repr where JSON cannot say it (too deep, too long)."""
    try:
        return json.dumps(value)
    except (ValueError, RecursionError):
        return repr(value)[:10_000]


def paths(document: Any, depth: int = 40) -> list[tuple[Any, ...]]:
    """The paths to the values inside a JSON document (the root included), to `depth` levels
    (a deep value is one value to mutate, not ten thousand)."""
    found: list[tuple[Any, ...]] = []
    todo: list[tuple[tuple[Any, ...], Any]] = [((), document)]
    while todo:
        prefix, value = todo.pop()
        found.append(prefix)
        if len(prefix) >= depth:
            continue
        if isinstance(value, dict):
            todo.extend(((*prefix, key), inner) for key, inner in value.items())
        elif isinstance(value, list):
            todo.extend(((*prefix, index), inner) for index, inner in enumerate(value))
    return found


MUTATIONS = st.lists(
    st.tuples(st.integers(0, 10**6), st.sampled_from(["replace", "delete", "add"]), JSON_VALUES),
    min_size=1,
    max_size=4,
)


def mutated(document: Any, mutations: list[tuple[int, str, Any]]) -> Any:
    """A deep copy of `document` with each mutation applied at a path picked by its number:
    the value there replaced, deleted, or given an unknown key (or element) beside it."""
    document = json.loads(json.dumps(document))  # a copy; the inserted values are fresh
    for pick, action, given in mutations:
        value = nested(given.depth) if isinstance(given, Deep) else given
        inner = [p for p in paths(document) if p]
        if not inner:
            return value
        path = inner[pick % len(inner)]
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        if action == "replace":
            parent[last] = value
        elif action == "delete":
            del parent[last]
        elif isinstance(parent, dict):
            parent[f"unknown{pick % 7}"] = value
        else:
            parent.append(value)
    return document

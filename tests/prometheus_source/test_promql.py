"""Values put into PromQL templates are escaped for the string literal they sit in: a value
crafted to break out of the query is neutralised (checked by Python's reading of the same
escapes, and by a real Prometheus parsing the rendered query)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubetune.spec import promql
from tests.prometheus_server import PrometheusServer

# Valid text: Prometheus reads UTF-8, so no lone surrogates.
TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)
BREAKOUT = '"} or vector(1) or up{x="'


@given(TEXT, st.sampled_from(['"', "'"]))
def test_an_escaped_value_reads_back_as_itself_inside_its_quotes(value: str, quote: str) -> None:
    literal = quote + promql.escape_string(value, quote) + quote
    # PromQL strings use Go's escapes, which Python reads the same way for these.
    assert ast.literal_eval(literal) == value
    # The literal ends at its last character: no unescaped quote inside.
    inner = literal[1:-1].replace("\\\\", "")
    assert quote not in inner.replace("\\" + quote, "")


def test_a_crafted_value_cannot_add_to_the_query() -> None:
    rendered = promql.render('up{pod="${trial.pod}"}', {"trial.pod": BREAKOUT})
    assert rendered == 'up{pod="\\"} or vector(1) or up{x=\\""}'
    assert promql.placeholders(rendered) == []


def test_placeholders_know_the_string_they_sit_in() -> None:
    template = (
        """a{x="${trial.pod}", y='${metric}'} + b{z=`${study.name}`} * ${trial.number} # ${c}"""
    )
    found = [(p.name, p.quote) for p in promql.placeholders(template)]
    assert found == [
        ("trial.pod", '"'),
        ("metric", "'"),
        ("study.name", "`"),
        ("trial.number", None),
    ]
    problems = promql.check_template(template)
    assert len(problems) == 2
    assert "raw string" in problems[0]
    assert "outside a string literal" in problems[1]
    with pytest.raises(promql.TemplateError):
        promql.render(template, {name: "v" for name in promql.PLACEHOLDERS})


def test_an_escaped_quote_does_not_end_the_string_for_the_scanner() -> None:
    template = r'a{x="\"${trial.pod}"}'
    assert [p.quote for p in promql.placeholders(template)] == ['"']


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    prometheus = PrometheusServer(Path(tmp_path_factory.mktemp("promql")))
    prometheus.start()
    yield prometheus
    prometheus.stop()


@settings(max_examples=60, deadline=None)
@given(TEXT, st.sampled_from(['"', "'"]))
def test_prometheus_parses_the_rendered_query_and_sees_the_value_unchanged(
    server: PrometheusServer, value: str, quote: str
) -> None:
    # label_join puts the separator, a string literal, between two labels' values as it is:
    # Prometheus shows what it parsed.
    template = (
        'label_join(label_replace(vector(1), "a", "x", "", ""), "v", '
        f'{quote}${{trial.pod}}{quote}, "a", "a")'
    )
    result = server.query(promql.render(template, {"trial.pod": value}))
    assert len(result) == 1
    assert result[0]["metric"]["v"] == f"x{value}x"


def test_prometheus_sees_a_breakout_attempt_as_one_plain_label_value(
    server: PrometheusServer,
) -> None:
    rendered = promql.render('count(up{pod="${trial.pod}"}) or vector(0)', {"trial.pod": BREAKOUT})
    # Had the value escaped its string, `or vector(1)` would give a 1.
    assert [sample["value"][1] for sample in server.query(rendered)] == ["0"]

"""Label and field selectors parse and match as the Kubernetes API does."""

from __future__ import annotations

import pytest

from kubetune_localcluster.selectors import (
    FieldSelector,
    LabelSelector,
    SelectorError,
    field_value,
)

LABELS = {"app": "web", "tier": "front", "example.com/team": "a", "replicas": "3"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", True),
        ("app==web", True),
        ("app=db", False),
        ("app!=db", True),
        ("app!=web", False),
        ("missing!=x", True),
        ("app in (web, db)", True),
        ("app in (db)", False),
        ("app notin (db,cache)", True),
        ("missing notin (x)", True),
        ("app notin (web)", False),
        ("tier", True),
        ("missing", False),
        ("!missing", True),
        ("!app", False),
        ("example.com/team=a", True),
        ("app=web,tier in (front,back),!missing", True),
        ("app=web,tier=back", False),
        ("replicas>2", True),
        ("replicas<3", False),
        ("", True),
    ],
)
def test_label_selector_operators(selector: str, expected: bool) -> None:
    assert LabelSelector.parse(selector).matches(LABELS) is expected


def test_label_selector_on_an_object_without_labels() -> None:
    assert LabelSelector.parse("!app").matches(None)
    assert not LabelSelector.parse("app").matches(None)


@pytest.mark.parametrize("bad", ["app in ()", "app=we b", "=x", "app in (a", "a>b"])
def test_a_bad_label_selector_is_refused(bad: str) -> None:
    with pytest.raises(SelectorError, match="unable to parse requirement"):
        LabelSelector.parse(bad)


POD = {
    "metadata": {"name": "p", "namespace": "ns"},
    "spec": {"nodeName": "node-1", "hostNetwork": False},
    "status": {"phase": "Running"},
}
FIELDS = {
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "status.phase",
    "spec.hostNetwork",
}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("metadata.name=p", True),
        ("metadata.name==q", False),
        ("metadata.namespace=ns,status.phase=Running", True),
        ("status.phase!=Running", False),
        ("spec.nodeName=node-1", True),
        ("spec.nodeName=", False),
        ("spec.hostNetwork=false", True),
    ],
)
def test_field_selector(selector: str, expected: bool) -> None:
    assert FieldSelector.parse(selector, FIELDS).matches(POD) is expected


def test_an_unsupported_field_is_refused() -> None:
    with pytest.raises(SelectorError, match=r"field label not supported: spec\.color"):
        FieldSelector.parse("spec.color=red", FIELDS)


def test_field_value_of_a_missing_field_is_empty() -> None:
    assert field_value(POD, "spec.missing.deeper") == ""
    assert field_value({"source": {"component": "kubelet"}}, "source") == "kubelet"

"""A container's env as the local kubelet builds it: values, the downward API, secrets and
config maps, $(VAR) expansion, and the termination message path mapped to a local file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubetune_localcluster.environment import (
    ContainerConfigError,
    container_env,
    env_references,
    expand,
    map_termination_path,
)

POD = {
    "metadata": {
        "name": "trial-1",
        "namespace": "team",
        "uid": "1234",
        "labels": {"study": "s1"},
        "annotations": {"note": "hi"},
    },
    "spec": {"nodeName": "kubetune-local"},
}


def test_env_resolves_values_fields_secrets_and_config_maps() -> None:
    container = {
        "name": "main",
        "envFrom": [
            {"configMapRef": {"name": "settings"}, "prefix": "CFG_"},
            {"secretRef": {"name": "absent", "optional": True}},
        ],
        "env": [
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {
                "name": "STUDY",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['study']"}},
            },
            {
                "name": "NOTE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['note']"}},
            },
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {
                "name": "TOKEN",
                "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}},
            },
            {
                "name": "MODE",
                "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}},
            },
            {
                "name": "MAYBE",
                "valueFrom": {"secretKeyRef": {"name": "creds", "key": "no", "optional": True}},
            },
            {"name": "GREETING", "value": "$(NAME) in $(NS) costs $$5, $(UNKNOWN) kept"},
        ],
    }
    assert env_references(container) == ({"absent", "creds"}, {"settings"})
    env = container_env(
        container,
        POD,
        secrets={"creds": {"token": "s3cret"}, "absent": None},
        config_maps={"settings": {"mode": "fast", "level": "3"}},
        base={"PATH": "/bin"},
    )
    assert env == {
        "PATH": "/bin",
        "CFG_mode": "fast",
        "CFG_level": "3",
        "NAME": "trial-1",
        "NS": "team",
        "UID": "1234",
        "STUDY": "s1",
        "NOTE": "hi",
        "NODE": "kubetune-local",
        "IP": "127.0.0.1",
        "TOKEN": "s3cret",
        "MODE": "fast",
        "GREETING": "trial-1 in team costs $5, $(UNKNOWN) kept",
    }


@pytest.mark.parametrize(
    ("env", "secrets", "message"),
    [
        (
            [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "t"}}}],
            {"creds": None},
            'secret "creds" not found',
        ),
        (
            [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "t"}}}],
            {"creds": {"other": "x"}},
            "couldn't find key t in Secret team/creds",
        ),
        (
            [{"name": "T", "valueFrom": {"fieldRef": {"fieldPath": "spec.nope"}}}],
            {},
            'unsupported fieldRef fieldPath "spec.nope"',
        ),
    ],
)
def test_a_missing_env_source_is_a_container_config_error(
    env: list[dict[str, Any]], secrets: dict[str, Any], message: str
) -> None:
    with pytest.raises(ContainerConfigError, match=message):
        container_env({"name": "main", "env": env}, POD, secrets, {}, base={})


def test_expansion_follows_kubernetes_rules() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)-$(C)-$$(A)-$", env) == "1-two-$(C)-$(A)-$"


def test_the_termination_message_path_is_mapped_in_the_env(tmp_path: Path) -> None:
    mapped = tmp_path / "main.termination-log"
    env = {"KUBETUNE_TERMINATION_LOG": "/dev/termination-log", "OTHER": "/dev/other"}
    assert map_termination_path(env, "/dev/termination-log", mapped) == {
        "KUBETUNE_TERMINATION_LOG": str(mapped),
        "OTHER": "/dev/other",
    }

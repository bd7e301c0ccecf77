"""A container's env as the local kubelet builds it: values, the downward API, secrets and
config maps, $(VAR) expansion, the termination message path mapped to a local file, and what
pods of one subdomain share: their ports, their peers' DNS names, their hostnames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubetune_localcluster.environment import (
    ContainerConfigError,
    SharedPorts,
    container_env,
    env_references,
    expand,
    map_peer_names,
    map_termination_path,
    pod_hostname,
    shares_port,
    subdomain_group,
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


def test_the_hostname_is_spec_hostname_else_the_pod_name_cut_as_a_kubelet_does() -> None:
    assert pod_hostname(POD) == "trial-1"
    indexed = {"metadata": {"name": "t-0-abcde"}, "spec": {"hostname": "t-0", "subdomain": "t"}}
    assert pod_hostname(indexed) == "t-0"
    long_name = "a" * 62 + "-b" + "c" * 10
    assert pod_hostname({"metadata": {"name": long_name}}) == "a" * 62


def test_pods_that_set_a_subdomain_form_a_group_per_namespace() -> None:
    assert subdomain_group(POD) is None
    pod = {"metadata": {"name": "t-0", "namespace": "team"}, "spec": {"subdomain": "t"}}
    assert subdomain_group(pod) == ("team", "t")
    assert subdomain_group({"metadata": {"name": "t-0"}, "spec": {"subdomain": "t"}}) == (
        "default",
        "t",
    )


def test_metrics_ports_of_a_subdomain_group_are_not_shared() -> None:
    annotated = {
        "metadata": {"annotations": {"prometheus.io/port": "9200"}},
        "spec": {"subdomain": "t"},
    }
    assert shares_port(annotated, {"name": "rendezvous", "containerPort": 29500})
    assert not shares_port(annotated, {"name": "metrics", "containerPort": 9100})
    assert not shares_port(annotated, {"containerPort": 9200})
    assert not shares_port(POD, {"name": "rendezvous", "containerPort": 29500})


def test_the_first_pod_of_a_group_allocates_a_port_the_others_share_until_all_release() -> None:
    given = iter(range(40000, 40010))

    def allocate() -> int:
        return next(given)

    shared = SharedPorts()
    rendezvous = shared.port(("team", "t"), 29500, "pod-0", allocate)
    assert shared.port(("team", "t"), 29500, "pod-1", allocate) == rendezvous
    assert shared.port(("team", "t"), 29500, "pod-1", allocate) == rendezvous  # asked again
    other_number = shared.port(("team", "t"), 8080, "pod-1", allocate)
    other_group = shared.port(("team", "u"), 29500, "pod-2", allocate)
    other_namespace = shared.port(("lab", "t"), 29500, "pod-3", allocate)
    assert len({rendezvous, other_number, other_group, other_namespace}) == 4
    shared.release("pod-0")
    # pod-1 still holds it: a replacement of pod-0 gets the same port.
    assert shared.port(("team", "t"), 29500, "pod-0b", allocate) == rendezvous
    shared.release("pod-1")
    shared.release("pod-0b")
    assert shared.port(("team", "t"), 29500, "pod-4", allocate) not in (rendezvous, other_number)
    assert shared.port(("team", "u"), 29500, "pod-5", allocate) == other_group


@pytest.mark.parametrize(
    "value",
    [
        "trial-0.trial",
        "trial-1.trial.team.svc",
        "trial-0.trial.team.svc.cluster.local",
        "trial-0.trial.team.svc.cluster.local.",
        "Trial-0.TRIAL",
        "x.trial",
    ],
)
def test_the_dns_name_of_a_peer_in_the_subdomain_becomes_the_loopback_address(value: str) -> None:
    env = {"MASTER_ADDR": value, "OTHER": "kept"}
    assert map_peer_names(env, "team", "trial") == {"MASTER_ADDR": "127.0.0.1", "OTHER": "kept"}


@pytest.mark.parametrize(
    "value",
    [
        "trial",  # the Service itself, not a pod of it
        "trial-0.other",  # another subdomain
        "trial-0.trial.lab.svc",  # the same subdomain name in another namespace
        "trial-0.trial.team",
        "trial-0.trial.",  # absolute: no such top-level domain
        "a.b.trial",  # not one label
        "-x.trial",
        "trial-0.trial:29500",
        "tcp://trial-0.trial:29500",
        "29500",
    ],
)
def test_other_values_are_not_peer_names(value: str) -> None:
    assert map_peer_names({"MASTER_ADDR": value}, "team", "trial") == {"MASTER_ADDR": value}

"""kopf's peering CRDs in crds/kopf-peering.yaml: valid apiextensions.k8s.io/v1 objects with
structural schemas, and exactly the resources kopf looks for when `--peering` is given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kopf._cogs.structs import references

from tests.unit.crd_checks import kubectl_apply_errors, structural_problems

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_VERSION = "1.37.0"
PEERING_CRDS = [
    document
    for document in yaml.safe_load_all((ROOT / "crds" / "kopf-peering.yaml").read_text())
    if document
]
IDS = [crd["spec"]["names"]["kind"] for crd in PEERING_CRDS]


@pytest.mark.parametrize("crd", PEERING_CRDS, ids=IDS)
def test_peering_crds_match_the_kubernetes_crd_schema(crd: dict[str, Any]) -> None:
    assert kubernetes_validate.validate(crd, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("crd", PEERING_CRDS, ids=IDS)
def test_peering_crds_are_structural(crd: dict[str, Any]) -> None:
    (version,) = crd["spec"]["versions"]
    assert structural_problems(version["schema"]["openAPIV3Schema"]) == []


def test_they_are_the_resources_kopf_peers_through() -> None:
    """kopf's selectors for the kopf.dev peering kinds (cluster-wide and namespaced) each match
    exactly one of the CRDs, the one with the scope kopf expects."""
    resources = [
        references.Resource(
            group=crd["spec"]["group"],
            version=version["name"],
            plural=crd["spec"]["names"]["plural"],
            kind=crd["spec"]["names"]["kind"],
            singular=crd["spec"]["names"]["singular"],
            namespaced=crd["spec"]["scope"] == "Namespaced",
        )
        for crd in PEERING_CRDS
        for version in crd["spec"]["versions"]
        if version["served"]
    ]
    for selector, namespaced in (
        (references.CLUSTER_PEERINGS_K, False),
        (references.NAMESPACED_PEERINGS_K, True),
    ):
        (matched,) = [resource for resource in resources if selector.check(resource)]
        assert matched.namespaced is namespaced


@pytest.mark.parametrize("crd", PEERING_CRDS, ids=IDS)
def test_the_keep_alives_kopf_writes_are_kept(crd: dict[str, Any]) -> None:
    """kopf patches each replica's keep-alive under status, keyed by its identity: the schema
    must neither refuse nor prune them."""
    (version,) = crd["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    peering = {
        "apiVersion": f"{crd['spec']['group']}/{version['name']}",
        "kind": crd["spec"]["names"]["kind"],
        "metadata": {"name": "kubetune"},
        "status": {
            "user@host/20260101000000/abc": {
                "priority": 7,
                "lifetime": 60,
                "lastseen": "2026-01-01T00:00:00+00:00",
            }
        },
    }
    assert kubectl_apply_errors(schema, peering) == []
    assert schema["properties"]["status"]["x-kubernetes-preserve-unknown-fields"] is True

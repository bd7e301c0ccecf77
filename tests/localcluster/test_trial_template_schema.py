"""spec.trialTemplate.spec is Kubernetes' own PodSpec schema (kubetune.spec.pod_schema), on both
control planes: an unknown field or a wrong type there is refused at apply, naming the field; a
value nested 1000 levels deep (which once crashed kopf's watch stream for every study) never
reaches a client, refused under strict field validation and pruned under the server's default;
what a trial pod may not be (restartPolicy Always) is refused with our reason."""

from __future__ import annotations

import json
from typing import Any

from kubetune.spec.pod_schema import definitions_file, generated, pod_spec_schema
from tests.localcluster.conftest import REPO, Kube, install_crds
from tests.localcluster.test_study_bounds import study
from tests.planes import kube_on_both_planes  # noqa: F401 (the fixture `kube`, both planes)

DEPTH = 1000


def trainer(document: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = document["spec"]["trialTemplate"]["spec"]["containers"][0]
    return container


NESTED = "<a value nested DEPTH levels deep>"
"""Stands for the deep value in a document: written into its JSON text, since Python's json
module, like the operator's watch stream once, gives up at about 1000 levels."""


def as_json(document: dict[str, Any]) -> str:
    deep = '{"deeper": ' * DEPTH + '"bottom"' + "}" * DEPTH
    return json.dumps(document).replace(json.dumps(NESTED), deep)


def apply(kube: Kube, document: dict[str, Any]) -> Any:
    # kubectl apply asks for strict field validation (its default since 1.27).
    return kube.kubectl("apply", "-f", "-", stdin=as_json(document), check=False)


def assert_refused(kube: Kube, document: dict[str, Any], words: str) -> None:
    refused = apply(kube, document)
    assert refused.returncode == 1
    assert words in refused.stderr, refused.stderr


def test_the_vendored_schema_is_the_one_kubernetes_v1_37_defines() -> None:
    text = (REPO / "operator" / "kubetune" / "spec" / "podspec.json").read_text()
    assert generated(definitions_file()) == text, "run `python -m kubetune.spec.pod_schema`"
    containers = pod_spec_schema()["properties"]["containers"]
    assert "livenessProbe" in containers["items"]["properties"]


def test_an_unknown_field_in_the_pod_template_is_refused_naming_it(kube: Kube) -> None:
    install_crds(kube)
    document = study("typo")
    trainer(document)["imagePullPolicyy"] = "Always"
    assert_refused(
        kube, document, 'unknown field "spec.trialTemplate.spec.containers[0].imagePullPolicyy"'
    )


def test_a_wrong_type_in_the_pod_template_is_refused_naming_the_field(kube: Kube) -> None:
    install_crds(kube)
    document = study("wrong-type")
    trainer(document)["ports"] = "8080"
    assert_refused(kube, document, "spec.trialTemplate.spec.containers[0].ports: Invalid value")


def test_a_trial_pod_that_would_never_finish_is_refused(kube: Kube) -> None:
    install_crds(kube)
    document = study("always")
    document["spec"]["trialTemplate"]["spec"]["restartPolicy"] = "Always"
    assert_refused(kube, document, "spec.trialTemplate.spec.restartPolicy: Unsupported value")


def test_a_value_nested_1000_deep_never_reaches_a_client(kube: Kube) -> None:
    install_crds(kube)
    document = study("deep")
    trainer(document)["env"] = [{"name": "A", "value": "1", "valueFrom": NESTED}]
    assert_refused(kube, document, "spec.trialTemplate.spec.containers[0].env[0].valueFrom")

    # Under the server's default field validation (a create without fieldValidation), the
    # unknown part is pruned before it is stored: a watch never delivers it.
    kube.kubectl("create", "--validate=false", "-f", "-", stdin=as_json(document))
    stored = kube.get_json("tuningstudy", "deep")
    assert trainer(stored)["env"] == [{"name": "A", "value": "1", "valueFrom": {}}]


def test_a_scalar_field_refuses_an_object_or_a_list(kube: Kube) -> None:
    """Choices, fixed values and warm-start params hold a string, number or boolean, which no
    structural type covers: they keep what is written, so they must refuse what is not a
    scalar, or a choice nested 1000 deep would reach the operator after all."""
    install_crds(kube)
    for name, choice in (("object-choice", NESTED), ("list-choice", [[1]])):
        document = study(name)
        document["spec"]["searchSpace"].append(
            {"name": "c", "type": "categorical", "choices": ["a", choice]}
        )
        assert_refused(kube, document, "spec.searchSpace[5].choices[1]: Too many")
    scalars = study("scalar-choices")
    scalars["spec"]["searchSpace"].append(
        {"name": "c", "type": "categorical", "choices": ["a", 1, 0.5, True]}
    )
    assert apply(kube, scalars).returncode == 0

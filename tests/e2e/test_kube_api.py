"""The operator's adapter (kubetune.k8s.api.KubeApi) against the embedded control plane: a
plan's new trials are created with their pods in one apply, and a repeated plan is harmless."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import kubernetes

from kubetune.controller import StudyController
from kubetune.k8s.api import KubeApi
from kubetune.spec import api
from tests.controlplane.conftest import Kube
from tests.e2e.test_operator import example


async def test_new_trials_come_with_their_pods_and_a_repeated_plan_is_harmless(
    crds: Kube,
) -> None:
    client = kubernetes.config.new_client_from_config(str(crds.kubeconfig))
    kube = KubeApi(client)
    manifest = example("synthetic-quadratic.yaml", parallelism=2)
    manifest["metadata"]["name"] = "adapter"
    custom = kubernetes.client.CustomObjectsApi(client)
    study = custom.create_namespaced_custom_object(
        api.GROUP, api.VERSION, "default", api.STUDY_PLURAL, json.loads(json.dumps(manifest))
    )
    plan = StudyController().reconcile(study, [], {}, datetime.now(UTC))
    assert len(plan.create_trials) == 2

    written = await kube.apply(plan, study)

    # What the apply returns is what the API server stored: trials with their status.
    assert sorted(t["metadata"]["name"] for t in written.trials) == ["adapter-0", "adapter-1"]
    assert all(t["status"]["state"] == "Pending" for t in written.trials)
    assert written.study is not None
    assert written.study["status"]["trials"]["total"] == 2
    trials = {t["metadata"]["name"]: t for t in written.trials}
    pods = kubernetes.client.CoreV1Api(client).list_namespaced_pod(
        "default", label_selector=f"{api.STUDY_LABEL}=adapter"
    )
    owners = {p.metadata.name: p.metadata.owner_references[0].uid for p in pods.items}
    assert owners == {name: t["metadata"]["uid"] for name, t in trials.items()}

    # The same plan again (a crash before the operator saw its own writes): no error, no
    # second pod, the trials unchanged.
    again = await kube.apply(plan, written.study)
    assert {t["metadata"]["uid"] for t in again.trials} == {
        t["metadata"]["uid"] for t in written.trials
    }
    pods = kubernetes.client.CoreV1Api(client).list_namespaced_pod(
        "default", label_selector=f"{api.STUDY_LABEL}=adapter"
    )
    assert len(pods.items) == 2
    client.close()

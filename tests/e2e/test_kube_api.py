"""The operator's adapter (kubetune.k8s.api.KubeApi) against the embedded control plane: a
plan's new trials are created with their pods in one apply; a plan decided on an old view
(repeated, or with an outdated trial or study) fails with StaleViewError and overwrites
nothing; a fence that refuses stops every write."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import kubernetes
import pytest

from kubetune.controller import StudyController
from kubetune.k8s.api import KubeApi, StaleViewError, Written
from kubetune.k8s.leader import NotLeadingError
from kubetune.spec import api
from tests.e2e.test_operator import example
from tests.localcluster.conftest import Kube


def create_study(custom: kubernetes.client.CustomObjectsApi, name: str, parallelism: int) -> Any:
    """The synthetic-quadratic example as `name`, as the API server stored it."""
    manifest = example("synthetic-quadratic.yaml", parallelism=parallelism)
    manifest["metadata"]["name"] = name
    return custom.create_namespaced_custom_object(
        api.GROUP, api.VERSION, "default", api.STUDY_PLURAL, json.loads(json.dumps(manifest))
    )


def stored_trials(custom: kubernetes.client.CustomObjectsApi, study: str) -> Any:
    """The study's TuningTrials as the API server has them now."""
    return custom.list_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        "default",
        api.TRIAL_PLURAL,
        label_selector=f"{api.STUDY_LABEL}={study}",
    )["items"]


async def test_new_trials_come_with_their_pods_and_a_repeated_plan_overwrites_nothing(
    crds: Kube,
) -> None:
    client = kubernetes.config.new_client_from_config(str(crds.kubeconfig))
    kube = KubeApi(client)
    custom = kubernetes.client.CustomObjectsApi(client)
    study = create_study(custom, "adapter", parallelism=2)
    plan = StudyController().reconcile(study, [], {}, datetime.now(UTC))
    assert len(plan.create_trials) == 2

    written = await kube.apply(plan, study, {})

    # What the apply returns is what the API server stored: trials with their status.
    assert sorted(t["metadata"]["name"] for t in written.trials) == ["adapter-0", "adapter-1"]
    assert all(t["status"]["state"] == "Pending" for t in written.trials)
    # Their status names the pod, created before it was written.
    assert all(t["status"]["podName"] == t["metadata"]["name"] for t in written.trials)
    assert written.study is not None
    assert written.study["status"]["trials"]["total"] == 2
    trials = {t["metadata"]["name"]: t for t in written.trials}
    pods = kubernetes.client.CoreV1Api(client).list_namespaced_pod(
        "default", label_selector=f"{api.STUDY_LABEL}=adapter"
    )
    owners = {p.metadata.name: p.metadata.owner_references[0].uid for p in pods.items}
    assert owners == {name: t["metadata"]["uid"] for name, t in trials.items()}

    # The same plan again (a replica whose view missed these trials): refused, no second
    # pod, the trials unchanged.
    with pytest.raises(StaleViewError, match="already exists"):
        await kube.apply(plan, written.study, {})
    pods = kubernetes.client.CoreV1Api(client).list_namespaced_pod(
        "default", label_selector=f"{api.STUDY_LABEL}=adapter"
    )
    assert len(pods.items) == 2
    now = [
        custom.get_namespaced_custom_object(
            api.GROUP, api.VERSION, "default", api.TRIAL_PLURAL, name
        )
        for name in trials
    ]
    assert [t["metadata"]["resourceVersion"] for t in now] == [
        trials[t["metadata"]["name"]]["metadata"]["resourceVersion"] for t in now
    ]
    client.close()


async def test_a_trial_whose_pod_was_refused_gets_its_status_without_a_pod(
    crds: Kube, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused pod create (a quota, an admission webhook) raises from the apply, and the
    trial is left Pending with no podName: the next reconcile creates its pod again instead
    of failing it for a pod that was deleted."""
    client = kubernetes.config.new_client_from_config(str(crds.kubeconfig))
    kube = KubeApi(client)
    custom = kubernetes.client.CustomObjectsApi(client)
    study = create_study(custom, "refused", parallelism=1)

    async def refuse(namespace: str, manifest: object) -> None:
        raise kubernetes.client.ApiException(status=403, reason="exceeded quota")

    monkeypatch.setattr(kube, "_create_workload", refuse)
    plan = StudyController().reconcile(study, [], {}, datetime.now(UTC))
    with pytest.raises(kubernetes.client.ApiException, match="exceeded quota"):
        await kube.apply(plan, study, {})
    (trial,) = stored_trials(custom, "refused")
    assert trial["status"]["state"] == "Pending"
    assert "podName" not in trial["status"]
    client.close()


async def test_a_status_write_decided_on_an_old_version_is_refused(crds: Kube) -> None:
    """A trial that moved on (here: to Succeeded) since the plan read it keeps its status."""
    client = kubernetes.config.new_client_from_config(str(crds.kubeconfig))
    kube = KubeApi(client)
    custom = kubernetes.client.CustomObjectsApi(client)
    study = create_study(custom, "stale", parallelism=1)
    controller = StudyController()
    written = await kube.apply(controller.reconcile(study, [], {}, datetime.now(UTC)), study, {})
    (trial,) = written.trials
    name = trial["metadata"]["name"]
    old_version = trial["metadata"]["resourceVersion"]
    succeeded = custom.patch_namespaced_custom_object_status(
        api.GROUP,
        api.VERSION,
        "default",
        api.TRIAL_PLURAL,
        name,
        {"status": {"state": "Succeeded", "reason": "by the other replica"}},
    )
    # A plan decided on the trial as it was: stop it.
    with pytest.raises(StaleViewError, match=f"changed since version {old_version}"):
        await kube._patch_status(
            "default", api.TRIAL_PLURAL, name, {"state": "Stopped"}, based_on=old_version
        )
    now = custom.get_namespaced_custom_object(
        api.GROUP, api.VERSION, "default", api.TRIAL_PLURAL, name
    )
    assert now["status"]["state"] == "Succeeded"
    assert now["metadata"]["resourceVersion"] == succeeded["metadata"]["resourceVersion"]
    # The study's status too: a plan decided on the study before its last status write.
    assert written.study is not None
    plan = controller.reconcile(study, [], {}, datetime.now(UTC))
    with pytest.raises(StaleViewError, match="tuningstudies"):
        await kube.apply(replace(plan, create_trials=[], new_trial_workloads={}), study, {})
    now_study = custom.get_namespaced_custom_object(
        api.GROUP, api.VERSION, "default", api.STUDY_PLURAL, "stale"
    )
    assert now_study["metadata"]["resourceVersion"] == written.study["metadata"]["resourceVersion"]
    client.close()


async def test_a_plan_refused_at_its_last_step_still_tells_what_it_wrote(crds: Kube) -> None:
    """kopf writes a new study (its finalizer, its annotations) while the study's first plan
    runs: the plan's study status write is refused, after its trials and pods were created.
    The caller learns of them all the same, so that its next plan, decided before the watches
    deliver them, neither creates them again nor writes on their first versions."""
    client = kubernetes.config.new_client_from_config(str(crds.kubeconfig))
    kube = KubeApi(client)
    custom = kubernetes.client.CustomObjectsApi(client)
    study = create_study(custom, "raced", parallelism=2)
    custom.patch_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        "default",
        api.STUDY_PLURAL,
        "raced",
        {"metadata": {"finalizers": ["kubetune.io/finalizer"]}},
    )
    plan = StudyController().reconcile(study, [], {}, datetime.now(UTC))
    written = Written()
    with pytest.raises(StaleViewError, match="tuningstudies"):
        await kube.apply(plan, study, {}, written)
    stored = stored_trials(custom, "raced")
    # Each trial once, as its last write left it: with its status, naming its pod.
    assert sorted(t["metadata"]["name"] for t in written.trials) == ["raced-0", "raced-1"]
    versions = {t["metadata"]["name"]: t["metadata"]["resourceVersion"] for t in stored}
    assert {t["metadata"]["name"]: t["metadata"]["resourceVersion"] for t in written.trials} == (
        versions
    )
    assert all(t["status"]["podName"] == t["metadata"]["name"] for t in written.trials)
    assert sorted(p["metadata"]["name"] for p in written.pods) == ["raced-0", "raced-1"]
    assert written.study is None
    custom.patch_namespaced_custom_object(
        api.GROUP,
        api.VERSION,
        "default",
        api.STUDY_PLURAL,
        "raced",
        {"metadata": {"finalizers": None}},
    )
    client.close()


async def test_a_closed_fence_stops_every_write(crds: Kube) -> None:
    def not_leading() -> None:
        raise NotLeadingError("this replica no longer holds the lease")

    client = kubernetes.config.new_client_from_config(str(crds.kubeconfig))
    kube = KubeApi(client, fence=not_leading)
    custom = kubernetes.client.CustomObjectsApi(client)
    study = create_study(custom, "fenced", parallelism=2)
    plan = StudyController().reconcile(study, [], {}, datetime.now(UTC))
    with pytest.raises(NotLeadingError):
        await kube.apply(plan, study, {})
    assert stored_trials(custom, "fenced") == []
    client.close()

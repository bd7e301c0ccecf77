"""The chart's RBAC grants what Kubetune actually calls, and nothing more.

`kubetune operator` runs on the embedded control plane with the arguments of the chart's
rendered Deployment, in each watch mode with and without HA; a request hook records each of
its requests as authorization sees it (recording.py). The rendered Roles, ClusterRoles and
bindings of the operator's ServiceAccount must allow every recorded call (else the operator
would be forbidden in a real cluster), and every verb they grant must have been used (else
it is more than the operator needs). The same holds for the trial ServiceAccount and the
reporting helper's calls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.chart.conftest import HA, NAMESPACE, chart_crds, objects, of_kind, one, render
from tests.chart.recording import Call, Run, run_operator
from tests.localcluster.conftest import Kube, kube  # noqa: F401 (the module-scoped fixture)

WATCHED = ["team-a", "team-b"]
STUDY_STATES = ["Succeeded", "Succeeded", "Pruned", "Failed"]


@dataclass(frozen=True)
class Grant:
    """One (group, resource, verb) a binding grants, in a namespace or (None) everywhere."""

    group: str
    resource: str
    verb: str
    namespace: str | None

    def allows(self, call: Call) -> bool:
        return call.rule == (self.group, self.resource, self.verb) and (
            self.namespace is None or self.namespace == call.namespace
        )


def grants(items: list[dict[str, Any]], service_account: str, namespace: str) -> set[Grant]:
    """What the rendered bindings give one ServiceAccount, rule by rule, verb by verb."""
    roles = {
        (role["kind"], role["metadata"].get("namespace"), role["metadata"]["name"]): role
        for role in of_kind(items, "Role") + of_kind(items, "ClusterRole")
    }
    found: set[Grant] = set()
    for binding in of_kind(items, "RoleBinding") + of_kind(items, "ClusterRoleBinding"):
        subject = {"kind": "ServiceAccount", "name": service_account, "namespace": namespace}
        if subject not in binding["subjects"]:
            continue
        where = binding["metadata"].get("namespace")  # None for a ClusterRoleBinding
        ref = binding["roleRef"]
        role = roles[(ref["kind"], where if ref["kind"] == "Role" else None, ref["name"])]
        for rule in role["rules"]:
            # Exact rules only: a wildcard or resourceNames would need more care here.
            assert "*" not in json.dumps(rule), rule
            assert "resourceNames" not in rule, rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        found.add(Grant(group, resource, verb, where))
    return found


def assert_exact(granted: set[Grant], calls: set[Call]) -> None:
    """Every call allowed, every grant used."""
    forbidden = sorted(str(call) for call in calls if not any(g.allows(call) for g in granted))
    assert not forbidden, "the chart does not allow these calls:\n" + "\n".join(forbidden)
    unused = sorted(str(g) for g in granted if not any(g.allows(call) for call in calls))
    assert not unused, "the chart grants these, never used:\n" + "\n".join(unused)


@pytest.fixture(scope="module")
def cluster(kube: Kube) -> Kube:  # noqa: F811
    """The local cluster with the chart's CRDs and the watched namespaces."""
    for crd in chart_crds():
        kube.kubectl("apply", "-f", "-", stdin=json.dumps(crd))
    for name in WATCHED:
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        kube.kubectl("apply", "-f", "-", stdin=json.dumps(namespace))
    return kube


def operator_args(items: list[dict[str, Any]]) -> list[str]:
    """The rendered Deployment's arguments for `kubetune operator`, with no fixed ports (a
    test machine may have them taken): the health and metrics endpoints need no RBAC."""
    container = one(items, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    kept = [
        arg for arg in container["args"] if not arg.startswith(("--liveness", "--metrics-port"))
    ]
    return [*kept, "--metrics-port=0"]


# The recorded Prometheus-sourced study's URL (recording.prometheus_study), allowed, and
# its token and CA readable: without these the chart grants no Secret or ConfigMap.
# The embedded plane serves no Jobs, so the recorded run has no Job trial: the rules for them
# (trials.jobs) are checked against the real plane's audit log in tests/e2e/test_job_trials.py.
PROMETHEUS = {
    "prometheus": {"allowedUrls": ["http://127.0.0.1:1"], "readCredentials": True},
    "trials": {"jobs": {"enabled": False}},
}
MODES = {
    "cluster-wide": PROMETHEUS,
    "namespaced": {"watch": {"namespaces": WATCHED}, **PROMETHEUS},
    "cluster-wide-ha": {**HA, **PROMETHEUS},
    "namespaced-ha": {"watch": {"namespaces": WATCHED}, **HA, **PROMETHEUS},
}


@pytest.fixture(scope="module", params=list(MODES))
def recorded(
    request: pytest.FixtureRequest, cluster: Kube, tmp_path_factory: pytest.TempPathFactory
) -> tuple[list[dict[str, Any]], Run]:
    """The chart rendered for a mode, and a recorded run of the operator installed that
    way: the Deployment's arguments (with HA: --leader-elect), a study in each watched
    namespace (in `default` when watching every namespace)."""
    items = objects(render(MODES[request.param]))
    # The release's namespace, where the HA replicas keep their Lease.
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(namespace))
    # An earlier mode's Lease would spare this run its create.
    cluster.kubectl("delete", "leases", "--all", "-n", NAMESPACE, "--ignore-not-found")
    log = tmp_path_factory.mktemp(request.param) / "operator.log"
    values = MODES[request.param]
    namespaces = values.get("watch", {}).get("namespaces") or ["default"]
    try:
        run = run_operator(cluster, log, operator_args(items), namespaces)
    finally:
        print(Path(log).read_text()[-10000:] if log.exists() else "")
    return items, run


def test_the_recorded_run_took_every_path(recorded: tuple[list[dict[str, Any]], Run]) -> None:
    _, run = recorded
    for states in run.states.values():
        assert states == STUDY_STATES
    # The clients told apart by User-Agent are the only ones there are: the operator's two,
    # the reporting helper, the test's kubectl and the kubelet.
    agents = {agent.split("/")[0] for agent in run.user_agents}
    assert agents <= {
        "kopf",
        "OpenAPI-Generator",
        "Python-urllib",
        "kubectl",
        "kubetune-local-kubelet",
    }
    assert run.operator
    assert run.reporter


def test_the_operator_role_grants_exactly_what_it_calls(
    recorded: tuple[list[dict[str, Any]], Run],
) -> None:
    items, run = recorded
    name = one(items, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    assert_exact(grants(items, name, NAMESPACE), run.operator)


def test_the_trial_role_grants_exactly_what_the_reporting_helper_calls(
    recorded: tuple[list[dict[str, Any]], Run],
) -> None:
    items, run = recorded
    accounts = [
        sa
        for sa in of_kind(items, "ServiceAccount")
        if sa["metadata"]["labels"]["app.kubernetes.io/component"] == "trial"
    ]
    assert accounts
    for account in accounts:
        namespace = account["metadata"]["namespace"]
        granted = grants(items, account["metadata"]["name"], namespace)
        # The helper's calls as they would be in this namespace.
        calls = {Call(c.group, c.resource, c.verb, namespace) for c in run.reporter}
        assert_exact(granted, calls)

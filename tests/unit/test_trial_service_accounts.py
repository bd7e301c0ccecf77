"""kubetune operator --trial-service-account: creating a study creates pods, so the platform may
list the ServiceAccounts trial pods run as; a study naming another (or none, which is
`default`) is Invalid with the field and the fix, and starts no trial."""

from __future__ import annotations

from typing import Any

import pytest

from kubetune.controller import StudyController
from kubetune.spec.study import TuningStudySpec
from tests.factories import study_spec
from tests.simulation import PodScript, SimulatedCluster

ALLOWED = frozenset({"kubetune-trial"})


def cluster(service_account: str | None, allowed: frozenset[str] | None) -> SimulatedCluster:
    document = study_spec(budget={"maxTrials": 1, "parallelism": 1}).model_dump(
        by_alias=True, exclude_none=True
    )
    if service_account is not None:
        document["trialTemplate"]["spec"]["serviceAccountName"] = service_account
    spec = TuningStudySpec.model_validate(document)

    def trainer(trial: Any) -> PodScript:
        return PodScript(start_after=0, end_after=1, final={"loss": 1.0})

    simulated = SimulatedCluster.of(spec, trainer)
    simulated.controller = StudyController(service_accounts=allowed)
    return simulated


@pytest.mark.parametrize("service_account", [None, "default", "admin"])
def test_a_service_account_not_listed_is_invalid(service_account: str | None) -> None:
    simulated = cluster(service_account, ALLOWED)
    plan = simulated.reconcile()
    assert plan.study_status.phase.value == "Invalid"
    message = plan.study_status.message or ""
    assert "spec.trialTemplate.spec.serviceAccountName" in message
    assert repr(service_account or "default") in message
    assert "--trial-service-account" in message
    assert not simulated.trials


def test_a_listed_service_account_runs() -> None:
    simulated = cluster("kubetune-trial", ALLOWED)
    plan = simulated.reconcile()
    assert plan.study_status.phase.value != "Invalid"
    assert simulated.trials


def test_without_a_list_any_service_account_runs() -> None:
    simulated = cluster("admin", None)
    simulated.reconcile()
    assert simulated.trials

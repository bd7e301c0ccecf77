"""Fuzzing what trainers write: mutated metrics annotations, termination messages and pod
statuses go through observe_pod and StudyController.reconcile. Nothing raises, each example is
bounded in time (tests/fuzzing.py), a report the operator cannot use fails that trial only
with a short reason, and nothing the plan would send to the API is NaN, infinite or past
int64. KUBETUNE_FUZZ_EXAMPLES sets the number of examples."""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kubetune.controller import Plan, StudyController
from kubetune.k8s.pods import observe_pod
from kubetune.spec.trial import TrialState
from tests.fuzzing import FUZZ, JSON_VALUES, MUTATIONS, TEXT, mutated, to_json
from tests.unit.test_trainer_output import started_study, trial_pod

INT64 = 2**63

ANNOTATION_DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "step": st.one_of(st.integers(0, 50), JSON_VALUES),
        "metrics": st.one_of(
            st.dictionaries(
                st.one_of(st.sampled_from(["loss", "distance"]), TEXT),
                st.one_of(st.floats(), JSON_VALUES),
                max_size=4,
            ),
            JSON_VALUES,
        ),
        "time": st.one_of(TEXT, JSON_VALUES),
        "final": st.one_of(st.booleans(), JSON_VALUES),
    },
).map(to_json)
TERMINATION_MESSAGES = st.dictionaries(
    st.one_of(st.sampled_from(["loss", "distance"]), TEXT),
    st.one_of(st.floats(), JSON_VALUES),
    max_size=4,
).map(to_json)
# Raw text: garbage, cut documents, deep brackets.
RAW = st.one_of(
    TEXT,
    st.tuples(ANNOTATION_DOCUMENTS, st.integers(0, 200)).map(lambda t: t[0][: t[1]]),
    st.integers(1, 40_000).map(lambda n: "[" * n),
    st.integers(1, 40_000).map(lambda n: '{"loss": ' + "9" * n + "}"),
)


def assert_safe_to_send(plan: Plan) -> None:
    """What the plan writes is JSON the API accepts: no NaN or infinity, integers in int64."""
    documents = [u.status.model_dump(mode="json", by_alias=True) for u in plan.trial_updates]
    documents.append(plan.study_status.model_dump(mode="json", by_alias=True))
    text = json.dumps(documents, allow_nan=False)

    def check(value: Any) -> None:
        if isinstance(value, int) and not isinstance(value, bool):
            assert -INT64 <= value < INT64, value
        elif isinstance(value, dict):
            for inner in value.values():
                check(inner)
        elif isinstance(value, list):
            for inner in value:
                check(inner)

    check(json.loads(text))


def decide(pod: dict[str, Any]) -> None:
    cluster = started_study(metricsTimeout="60s")
    began = time.monotonic()
    observation = observe_pod(pod)
    plan = StudyController().reconcile(
        cluster.document(), list(cluster.trials.values()), {"demo-0": observation}, cluster.now
    )
    assert time.monotonic() - began < 5.0
    assert_safe_to_send(plan)
    updates = {u.name: u.status for u in plan.trial_updates}
    trial = updates.get("demo-0", cluster.trials["demo-0"].status)
    if observation.report_errors and trial.state is TrialState.FAILED:
        assert trial.reason == "InvalidMetrics"
        assert len(trial.message or "") < 4096
    if trial.last_report_time is not None:
        assert trial.last_report_time <= cluster.now  # never in the future


@FUZZ
@given(annotation=st.one_of(ANNOTATION_DOCUMENTS, RAW))
def test_any_metrics_annotation(annotation: str) -> None:
    decide(trial_pod(annotation=annotation))


@FUZZ
@given(message=st.one_of(TERMINATION_MESSAGES, RAW))
def test_any_termination_message(message: str) -> None:
    decide(trial_pod(message=message))


@FUZZ
@given(
    annotation=st.one_of(ANNOTATION_DOCUMENTS, RAW),
    message=st.one_of(TERMINATION_MESSAGES, RAW),
    mutations=MUTATIONS,
)
def test_any_pod_status(annotation: str, message: str, mutations: list[Any]) -> None:
    """A pod whose status (times, phase, exit codes, states, messages) is mutated anywhere."""
    pod = trial_pod(annotation=annotation, message=message)
    pod["status"] = mutated(pod["status"], mutations)
    decide(pod)

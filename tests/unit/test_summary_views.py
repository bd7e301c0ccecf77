"""What matters beside the trials table, in `kubetune up`'s summary and `kubetune trials`
(kubetune.summaries): the best trial's additional metrics (a held-out test accuracy) and the most
important parameters, in order; and those parameters in `kubetune up`'s progress table
(kubetune.summaries)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from kubetune.cli import _print_ending
from kubetune.spec.trial import TrialState, TuningTrial
from kubetune.summaries import (
    IMPORTANCES_SHOWN,
    held_out_lines,
    importance_lines,
    most_important,
    progress_table,
)
from tests.factories import trial


def with_metrics(number: int, metrics: dict[str, float], **options: Any) -> TuningTrial:
    record = trial(number, TrialState.SUCCEEDED, ended=1.0, values=[0.2], **options)
    return record.model_copy(
        update={"status": record.status.model_copy(update={"metrics": metrics})}
    )


def test_importances_are_listed_most_important_first_and_the_rest_counted() -> None:
    importances = {f"p{i}": i / 100 for i in range(IMPORTANCES_SHOWN + 2)}
    (line,) = importance_lines(importances, 12)
    shown = ", ".join(f"p{i} 0.0{i}" for i in range(IMPORTANCES_SHOWN + 1, 1, -1))
    assert line == f"Importances (PED-ANOVA over 12 trials): {shown}, and 2 more"
    # Before the operator computed them: nothing, rather than an empty list.
    assert importance_lines(None) == []
    assert importance_lines({}) == []


def test_the_best_trial_s_additional_metrics_are_those_the_spec_names() -> None:
    best = with_metrics(1, {"loss": 0.2, "test_accuracy": 0.931, "train_seconds": 12.0})
    other = with_metrics(0, {"loss": 0.5, "test_accuracy": 0.7})
    lines = held_out_lines(1, [other, best], ["test_accuracy", "not_reported"])
    assert lines == ["Best trial 1 also recorded: test_accuracy 0.931"]
    # No additional metrics in the spec, or none recorded: no line.
    assert held_out_lines(1, [best], []) == []
    assert held_out_lines(1, [best], ["not_reported"]) == []
    assert held_out_lines(7, [best], ["test_accuracy"]) == []


def test_up_s_summary_shows_held_out_metrics_and_importances(
    capsys: pytest.CaptureFixture[str],
) -> None:
    best = with_metrics(1, {"loss": 0.2, "test_accuracy": 0.931}, params={"lr": 0.1})
    study = {
        "metadata": {"name": "digits"},
        "spec": {
            "objective": {
                "metrics": [{"name": "loss", "direction": "minimize"}],
                "additionalMetrics": ["test_accuracy"],
            }
        },
        "status": {
            "phase": "Completed",
            "bestTrial": {"name": "demo-1", "number": 1, "value": 0.2, "params": {"lr": 0.1}},
            "importances": {"depth": 0.25, "lr": 0.75},
            "importancesTrials": 8,
        },
    }
    _print_ending(study, [best])
    assert capsys.readouterr().out.splitlines() == [
        "Study digits: Completed",
        "  best trial 1: 0.2 with lr=0.1",
        "  Best trial 1 also recorded: test_accuracy 0.931",
        "  Importances (PED-ANOVA over 8 trials): lr 0.75, depth 0.25",
    ]


def test_the_progress_table_names_the_most_important_parameters_once_there_are_some() -> None:
    def rendered(studies: list[dict[str, Any]]) -> str:
        out = io.StringIO()
        Console(file=out, width=200).print(progress_table(studies, None))
        return out.getvalue()

    weighed = {
        "metadata": {"name": "digits"},
        "status": {"importances": {"depth": 0.1, "lr": 0.6, "width": 0.25, "dropout": 0.05}},
    }
    assert most_important(weighed["status"]) == "lr 0.6, width 0.25, depth 0.1"
    assert "lr 0.6, width 0.25, depth 0.1" in rendered([weighed])
    assert "most important" in rendered([weighed])
    # No study has importances yet: no column.
    assert "most important" not in rendered([{"metadata": {"name": "digits"}, "status": {}}])

"""How the re-evaluation (spec.reevaluation) shows to people: the recommendation and each
re-evaluated configuration in `kubetune up`'s summary (kubetune.summaries), and the
one cell of `kubetune up`'s progress table (kubetune.summaries)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from rich.console import Console

from kubetune.spec.study_status import (
    MetricSummary,
    Recommendation,
    ReevaluatedConfiguration,
    ReevaluationStatus,
)
from kubetune.summaries import (
    REEVALUATED_SHOWN,
    progress_table,
    recommended,
    reevaluation_lines,
    reevaluation_of,
)
from tests.factories import trial

ROOT = Path(__file__).resolve().parents[2]

RECOMMENDATION = Recommendation(
    trial=3,
    params={"lr": 0.1, "depth": 4},
    metric="test_accuracy",
    values=[0.9, 0.8],
    seeds=[11, 12],
    mean=0.85,
    std=0.0707,
    validation_value=0.95,
    generalization_gap=0.1,
)


def configuration(
    trial: int, *means: tuple[str, float | None, float], seeds: int = 2, failed: int = 0
) -> ReevaluatedConfiguration:
    """A re-evaluated configuration with (metric, mean, search value) per score."""
    return ReevaluatedConfiguration(
        trial=trial,
        params={"lr": 0.1},
        seeds=list(range(seeds)),
        failed_runs=failed,
        scores=[
            MetricSummary(
                metric=metric,
                values=[] if mean is None else [mean] * seeds,
                mean=mean,
                std=None if mean is None else 0.0,
                validation_value=search,
            )
            for metric, mean, search in means
        ],
    )


SINGLE = ReevaluationStatus(
    runs=6,
    finished=5,
    configurations=[
        configuration(3, ("test_accuracy", 0.85, 0.95)),
        configuration(7, ("test_accuracy", 0.81, 0.96), seeds=1, failed=1),
        configuration(1, ("test_accuracy", None, 0.94), seeds=0),
    ],
)


def test_the_summary_shows_the_recommendation_its_seeds_and_the_gap() -> None:
    lines = reevaluation_lines(SINGLE, RECOMMENDATION)
    assert lines[:3] == [
        "Recommended: trial 3 with lr=0.1, depth=4",
        "  test_accuracy 0.85 ± 0.071 over 2 seeds (11, 12)",
        "  search value 0.95, generalization gap +0.1 (the search's value was optimistic)",
    ]
    assert lines[3] == (
        "Re-evaluation: 5 of 6 runs finished, 3 configurations, best first by mean test_accuracy:"
    )
    assert lines[4:] == [
        "  trial 3, 2 seeds: test_accuracy 0.85 ± 0 (search 0.95) <- recommended",
        "  trial 7, 1 seed, 1 failed: test_accuracy 0.81 ± 0 (search 0.96)",
        "  trial 1, 0 seeds: test_accuracy: no value yet (search 0.94)",
    ]


def test_a_negative_gap_is_not_called_optimistic_and_no_search_value_means_no_gap() -> None:
    better = RECOMMENDATION.model_copy(update={"generalization_gap": -0.02})
    assert reevaluation_lines(None, better)[2] == "  search value 0.95, generalization gap -0.02"
    unknown = RECOMMENDATION.model_copy(
        update={"validation_value": None, "generalization_gap": None}
    )
    assert len(reevaluation_lines(None, unknown)) == 2
    assert reevaluation_lines(None, None) == []


def test_the_recommended_params_are_read_from_its_trial_in_the_search_space_s_order() -> None:
    # The status's params come back from the API in the order it stores them; the trial is
    # the record of what ran, in the order the trials table shows.
    ran, other = trial(3, params={"depth": 4, "lr": 0.1}), trial(4, params={"lr": 9.0})
    assert reevaluation_lines(None, RECOMMENDATION, [other, ran])[0] == (
        "Recommended: trial 3 with depth=4, lr=0.1"
    )
    assert reevaluation_lines(None, RECOMMENDATION, [other])[0] == (
        "Recommended: trial 3 with lr=0.1, depth=4"
    )


def test_a_multi_objective_study_shows_the_means_per_objective_in_the_front_s_order() -> None:
    front = ReevaluationStatus(
        runs=4,
        finished=4,
        configurations=[
            configuration(4, ("accuracy", 0.99, 0.991), ("latency_ms", 70.4, 70.0)),
            configuration(0, ("accuracy", 0.9576, 0.96), ("latency_ms", 13.9, 13.0)),
        ],
    )
    assert reevaluation_lines(front, None) == [
        "Re-evaluation: 4 of 4 runs finished, 2 configurations, means per objective, in the "
        "Pareto front's order:",
        "  trial 4, 2 seeds: accuracy 0.99 ± 0 (search 0.991), latency_ms 70.4 ± 0 (search 70)",
        "  trial 0, 2 seeds: accuracy 0.9576 ± 0 (search 0.96), latency_ms 13.9 ± 0 (search 13)",
    ]


def test_the_summary_lists_the_first_configurations_and_counts_the_rest() -> None:
    many = ReevaluationStatus(
        runs=20,
        finished=20,
        configurations=[configuration(n, ("loss", n / 10, n / 20)) for n in range(8)],
    )
    lines = reevaluation_lines(many, None)
    assert len(lines) == 1 + REEVALUATED_SHOWN + 1
    assert lines[-1] == (
        f"  ... and {8 - REEVALUATED_SHOWN} more (status.reevaluation lists them all)"
    )


def test_the_status_is_read_as_the_api_returns_it() -> None:
    status = {
        "reevaluation": SINGLE.model_dump(mode="json", by_alias=True),
        "recommendation": RECOMMENDATION.model_dump(mode="json", by_alias=True),
    }
    assert "generalizationGap" in status["recommendation"]
    assert reevaluation_of(status) == (SINGLE, RECOMMENDATION)
    assert reevaluation_of({}) == (None, None)
    # A recommendation these models cannot read (another operator version): left out, not an
    # error that hides the rest of the summary.
    assert reevaluation_of({"recommendation": {"trial": "three"}}) == (None, None)


def test_the_progress_cell_shows_the_re_runs_then_the_recommendation() -> None:
    def api(model: Any) -> Any:
        return model.model_dump(mode="json", by_alias=True)

    assert recommended({}) == ""
    going = {"reevaluation": api(SINGLE.model_copy(update={"finished": 2}))}
    assert recommended(going) == "2/6 re-runs"
    going["recommendation"] = api(RECOMMENDATION)
    assert recommended(going) == "2/6 re-runs; trial 3: 0.85 ± 0.071 (n=2, gap +0.1)"
    done = {"reevaluation": api(SINGLE.model_copy(update={"finished": 6}))}
    done["recommendation"] = api(RECOMMENDATION.model_copy(update={"generalization_gap": None}))
    assert recommended(done) == "trial 3: 0.85 ± 0.071 (n=2)"
    front = ReevaluationStatus(
        runs=8,
        finished=8,
        configurations=[
            configuration(n, ("accuracy", 0.9 - n / 100, 0.9), ("latency_ms", None, 10.0))
            for n in range(4)
        ],
    )
    assert recommended({"reevaluation": api(front)}) == (
        "0.9, - (trial 0); 0.89, - (trial 1); 0.88, - (trial 2); 1 more"
    )


def header_of(studies: list[dict[str, Any]]) -> str:
    console = Console(file=io.StringIO(), width=300)
    console.print(progress_table(studies, None))
    output = console.file.getvalue()  # type: ignore[attr-defined]
    return str(output.splitlines()[2])


def test_the_progress_table_has_a_recommended_column_only_when_a_study_re_evaluates() -> None:
    plain = {"metadata": {"name": "plain"}, "spec": {}, "status": {"phase": "Running"}}
    assert "recommended" not in header_of([plain])
    # From the start (the spec asks for it), not only once the search has ended.
    reevaluating = {"metadata": {"name": "r"}, "spec": {"reevaluation": {}}, "status": {}}
    assert "recommended" in header_of([plain, reevaluating])

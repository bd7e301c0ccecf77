"""How studies and trials show to people: the tables and lines `kubetune up` and `kubetune
trials` print when a study ends, and `kubetune up`'s live progress table and event lines.

Pure formatting of the API's objects (rich tables, text); printing stays with the commands.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, Final

from rich.console import Group
from rich.table import Table
from rich.text import Text

from kubetune.budget import format_amount
from kubetune.spec import api
from kubetune.spec.bounds import MAX_PARETO_FRONT_IN_STATUS
from kubetune.spec.study_status import MetricSummary, Recommendation, ReevaluationStatus
from kubetune.spec.trial import TuningTrial, is_search_trial
from kubetune.spec.values import format_params

QUIET_EVENTS: Final = frozenset({"TrialStarted"})
"""Events not printed as they happen: one line per trial start would drown the others."""


def trials_tables(
    trials: list[TuningTrial],
    study: str | None = None,
    reevaluation: ReevaluationStatus | None = None,
    recommendation: Recommendation | None = None,
) -> list[Table]:
    """The search trials as a table (number, state, params, value, duration, reason, and each
    re-evaluated configuration's means), then the re-evaluation runs as a table of their own."""
    of = f" of {study}" if study else ""
    configurations = {c.trial: c for c in reevaluation.configurations} if reevaluation else {}
    table = Table(title=f"Trials{of}")
    columns = ["#", "state", "params", "value", "duration", "reason"]
    if configurations:
        columns.append("re-evaluated (mean ± std)")
    for column in columns:
        table.add_column(column, justify="right" if column in ("#", "value") else "left")
    search = sorted((t for t in trials if is_search_trial(t)), key=lambda t: t.spec.number)
    for trial in search:
        status = trial.status
        cells = [
            str(trial.spec.number),
            status.state.value,
            format_params(trial.spec.params),
            ", ".join(f"{v:.6g}" for v in status.values or []),
            trial_duration(trial),
            status.reason or "",
        ]
        if configurations:
            configuration = configurations.get(trial.spec.number)
            cell = "" if configuration is None else scores_text(configuration.scores)
            if recommendation is not None and recommendation.trial == trial.spec.number:
                cell += " <- recommended"
            cells.append(cell)
        table.add_row(*cells)
    tables = [table]
    reruns = [t for t in trials if t.spec.reevaluation is not None]
    if reruns:
        tables.append(reruns_table(reruns, of, reevaluation, recommendation))
    return tables


def reruns_table(
    reruns: list[TuningTrial],
    of: str,
    reevaluation: ReevaluationStatus | None,
    recommendation: Recommendation | None,
) -> Table:
    """The re-evaluation runs: which configuration and repeat, seed, state, the re-evaluated
    metrics (the objective values when the study does not say which), duration and reason."""
    metrics: list[str] = []
    if reevaluation is not None and reevaluation.configurations:
        metrics = [score.metric for score in reevaluation.configurations[0].scores]
    caption = None
    if recommendation is not None:
        caption = f"trial {recommendation.trial}'s configuration is recommended"
    table = Table(title=f"Re-evaluation runs{of}", caption=caption)
    for column in ("run", "seed", "state", *(metrics or ["value"]), "duration", "reason"):
        numeric = column in ("seed", "value", *metrics)
        table.add_column(column, justify="right" if numeric else "left")

    def order(trial: TuningTrial) -> tuple[int, int]:
        run = trial.spec.reevaluation
        return (run.trial, run.repeat) if run else (trial.spec.number, 0)

    for trial in sorted(reruns, key=order):
        run, status = trial.spec.reevaluation, trial.status
        assert run is not None  # only re-runs are given
        if metrics:
            shown = [status.metrics.get(name) for name in metrics]
            values = ["" if v is None else f"{v:.6g}" for v in shown]
        else:
            values = [", ".join(f"{v:.6g}" for v in status.values or [])]
        table.add_row(
            f"r{run.repeat} of {run.trial}",
            "" if trial.spec.seed is None else str(trial.spec.seed),
            status.state.value,
            *values,
            trial_duration(trial),
            status.reason or "",
        )
    return table


def trial_duration(trial: TuningTrial) -> str:
    """How long a finished trial ran, e.g. `42.0s`; empty while it runs or if it never did."""
    status = trial.status
    if status.start_time is None or status.completion_time is None:
        return ""
    return f"{(status.completion_time - status.start_time).total_seconds():.1f}s"


FRONT_MEMBERS_SHOWN = 5
"""Pareto-optimal trials the command line prints (the first of status.paretoFront's order)."""


def front_lines(
    front: list[tuple[int, list[float]]], size: int, metrics: list[dict[str, Any]]
) -> list[str]:
    """The Pareto front's size, its order, and its first members with their values by name.

    `front` is status.paretoFront as (number, values), in its order: best first in the first
    objective, ties by trial number. `metrics` is spec.objective.metrics.
    """
    names = [str(m.get("name", f"objective {i}")) for i, m in enumerate(metrics)]
    direction = str(metrics[0].get("direction", "minimize")) if metrics else "minimize"
    order = f", best first by {names[0]} ({direction})" if names else ""
    shown = front[:FRONT_MEMBERS_SHOWN]
    lines = [f"Pareto front: {size} trials{order}:"]
    for number, values in shown:
        named = ", ".join(
            f"{names[i] if i < len(names) else f'objective {i}'}={value:.6g}"
            for i, value in enumerate(values)
        )
        lines.append(f"  trial {number}: {named}")
    if size > len(shown):
        lines.append(
            f"  ... and {size - len(shown)} more (status.paretoFront lists the first "
            f"{MAX_PARETO_FRONT_IN_STATUS})"
        )
    return lines


IMPORTANCES_SHOWN = 5
"""Parameters whose importance the command line lists, the most important first."""


def importance_lines(
    importances: Mapping[str, float] | None, trials_count: int | None = None
) -> list[str]:
    """The most important parameters (status.importances), most important first; nothing
    before enough trials completed for the operator to compute them."""
    ranked = ranked_importances(importances)
    if not ranked:
        return []
    shown = ", ".join(f"{name} {value:.2f}" for name, value in ranked[:IMPORTANCES_SHOWN])
    more = len(ranked) - IMPORTANCES_SHOWN
    if more > 0:
        shown += f", and {more} more"
    over = f" (PED-ANOVA over {trials_count} trials)" if trials_count else ""
    return [f"Importances{over}: {shown}"]


def held_out_lines(
    best: int, trials: Sequence[TuningTrial], additional_metrics: Sequence[str] | None
) -> list[str]:
    """The best trial's additional metrics (spec.objective.additionalMetrics, such as a
    held-out test accuracy) as it recorded them; nothing when it recorded none."""
    record = next((t for t in trials if is_search_trial(t) and t.spec.number == best), None)
    if record is None or not additional_metrics:
        return []
    recorded = record.status.metrics
    shown = [f"{name} {recorded[name]:.6g}" for name in additional_metrics if name in recorded]
    return [f"Best trial {best} also recorded: {', '.join(shown)}"] if shown else []


REEVALUATED_SHOWN = 5
"""Re-evaluated configurations the command line lists (the first of status.reevaluation's)."""


def reevaluation_of(
    status: Mapping[str, Any],
) -> tuple[ReevaluationStatus | None, Recommendation | None]:
    """status.reevaluation and status.recommendation of a study as the API returned it; None
    for one that is absent or that these models cannot read (an operator of another version)."""
    reevaluation = recommendation = None
    with contextlib.suppress(ValueError):
        if status.get("reevaluation"):
            reevaluation = ReevaluationStatus.model_validate(status["reevaluation"])
    with contextlib.suppress(ValueError):
        if status.get("recommendation"):
            recommendation = Recommendation.model_validate(status["recommendation"])
    return reevaluation, recommendation


def reevaluation_lines(
    reevaluation: ReevaluationStatus | None,
    recommendation: Recommendation | None,
    trials: Sequence[TuningTrial] = (),
) -> list[str]:
    """The re-evaluation for people: the recommended configuration (its metric's mean ± std
    over n seeds, its value in the search and the generalization gap), then each re-evaluated
    configuration's means (several objectives: one per objective, in the front's order).
    The recommended parameters are read from its trial when `trials` has it (in the search
    space's order, as the trials table shows them)."""
    lines = []
    if recommendation is not None:
        n = len(recommendation.values)
        seeds = ", ".join(str(seed) for seed in recommendation.seeds)
        params = next(
            (
                t.spec.params
                for t in trials
                if is_search_trial(t) and t.spec.number == recommendation.trial
            ),
            recommendation.params,
        )
        lines.append(f"Recommended: trial {recommendation.trial} with {format_params(params)}")
        lines.append(
            f"  {recommendation.metric} {recommendation.mean:.4g} ± {recommendation.std:.2g} "
            f"over {n} seed{'' if n == 1 else 's'} ({seeds})"
        )
        if recommendation.validation_value is not None:
            search = f"  search value {recommendation.validation_value:.4g}"
            gap = recommendation.generalization_gap
            if gap is not None:
                search += f", generalization gap {gap:+.4g}"
                if gap > 0:
                    search += " (the search's value was optimistic)"
            lines.append(search)
    if reevaluation is None or not reevaluation.configurations:
        return lines
    configurations = reevaluation.configurations
    if any(len(c.scores) > 1 for c in configurations):
        order = "means per objective, in the Pareto front's order"
    else:
        metric = configurations[0].scores[0].metric if configurations[0].scores else "metric"
        order = f"best first by mean {metric}"
    lines.append(
        f"Re-evaluation: {reevaluation.finished} of {reevaluation.runs} runs finished, "
        f"{len(configurations)} configurations, {order}:"
    )
    for configuration in configurations[:REEVALUATED_SHOWN]:
        n = len(configuration.seeds)
        runs = f"{n} seed{'' if n == 1 else 's'}"
        if configuration.failed_runs:
            runs += f", {configuration.failed_runs} failed"
        mark = ""
        if recommendation is not None and recommendation.trial == configuration.trial:
            mark = " <- recommended"
        lines.append(
            f"  trial {configuration.trial}, {runs}: {scores_text(configuration.scores)}{mark}"
        )
    if len(configurations) > REEVALUATED_SHOWN:
        lines.append(
            f"  ... and {len(configurations) - REEVALUATED_SHOWN} more (status.reevaluation "
            "lists them all)"
        )
    return lines


def scores_text(scores: list[MetricSummary]) -> str:
    """Each metric's mean ± std over the re-runs and its value in the search, e.g.
    `loss 0.31 ± 0.02 (search 0.29)`."""
    shown = []
    for score in scores:
        if score.mean is None:
            text = f"{score.metric}: no value yet"
        else:
            text = f"{score.metric} {score.mean:.4g} ± {score.std or 0.0:.2g}"
        if score.validation_value is not None:
            text += f" (search {score.validation_value:.4g})"
        shown.append(text)
    return ", ".join(shown)


def new_event_lines(events: Sequence[Mapping[str, Any]], seen: set[str]) -> list[Text]:
    """One line per study event not shown before (its uid goes into `seen`), oldest first."""
    lines = []
    for event in sorted(events, key=_event_order):
        uid = event["metadata"].get("uid") or event["metadata"]["name"]
        involved = event.get("involvedObject") or {}
        if uid in seen or involved.get("kind") != api.STUDY_KIND:
            continue
        seen.add(uid)
        reason = event.get("reason") or ""
        if reason in QUIET_EVENTS:
            continue
        style = "yellow" if event.get("type") == "Warning" else "green"
        if reason == "TrialPruned":
            style = "magenta"
        line = Text.assemble(
            (f"{involved.get('name', '')} ", "bold"),
            (f"{reason}: ", style),
            event.get("message") or "",
        )
        lines.append(line)
    return lines


def _event_order(event: Mapping[str, Any]) -> tuple[int, str]:
    version = event["metadata"].get("resourceVersion") or ""
    return (int(version) if version.isdigit() else 0, event["metadata"].get("name", ""))


def progress_table(studies: Sequence[Mapping[str, Any]], hint: str | None) -> Group | Table:
    """Per study: phase, trials by state, best so far, the re-evaluation, the most important
    parameters, budget used."""
    table = Table(title="Studies", title_justify="left")
    for column in ("study", "phase", "done", "running", "succeeded", "pruned", "failed"):
        table.add_column(column, justify="left" if column in ("study", "phase") else "right")
    table.add_column("best so far")
    # Only when a study re-evaluates (spec.reevaluation): the table stays narrow otherwise.
    # (`reevaluation: {}` asks for it with every default.)
    reevaluated = any(
        (study.get("spec") or {}).get("reevaluation") is not None
        or (study.get("status") or {}).get("reevaluation")
        for study in studies
    )
    if reevaluated:
        table.add_column("recommended")
    # Only once a study has importances (enough completed trials).
    weighed = any((study.get("status") or {}).get("importances") for study in studies)
    if weighed:
        table.add_column("most important")
    table.add_column("budget used")
    for study in studies:
        status = study.get("status") or {}
        trials = status.get("trials") or {}
        failed = sum(trials.get(state, 0) for state in ("failed", "timedOut", "metricsUnavailable"))
        table.add_row(
            study["metadata"]["name"],
            status.get("phase") or "Pending",
            status.get("progress") or "",
            str(trials.get("running", 0) + trials.get("pending", 0)),
            str(trials.get("succeeded", 0)),
            str(trials.get("pruned", 0)),
            str(failed),
            best_cell(status),
            *([recommended(status)] if reevaluated else []),
            *([most_important(status)] if weighed else []),
            budget_used(status.get("budget") or {}),
        )
    if hint is None:
        return table
    return Group(table, Text(hint, style="bold"))


FRONT_MEMBERS_SHOWN = 3
"""Pareto-optimal trials the progress table names (the first of status.paretoFront's order)."""


def best_cell(status: Mapping[str, Any]) -> str:
    """The best value and its trial; with several objectives, the size of the Pareto front and
    its first members (best first in the first objective, as status.paretoFront lists them)."""
    best = status.get("bestTrial")
    if not best:
        return ""
    value = best.get("value")
    if value is not None:
        return f"{value:.4g} (trial {best['number']})"
    front = status.get("paretoFront") or [best]
    size = status.get("paretoFrontSize") or len(front)
    shown = [
        f"{', '.join(f'{v:.4g}' for v in member['values'])} (trial {member['number']})"
        for member in front[:FRONT_MEMBERS_SHOWN]
    ]
    more = size - len(shown)
    return f"front of {size}: " + "; ".join(shown) + (f"; {more} more" if more > 0 else "")


IMPORTANT_SHOWN = 3
"""Parameters the progress table names, the most important first."""


def ranked_importances(importances: Mapping[str, float] | None) -> list[tuple[str, float]]:
    """status.importances, the most important parameter first (ties by name)."""
    return sorted((importances or {}).items(), key=lambda item: (-item[1], item[0]))


def most_important(status: Mapping[str, Any]) -> str:
    """The most important parameters with their importance, e.g. `x 0.61, y 0.3`."""
    ranked = ranked_importances(status.get("importances"))[:IMPORTANT_SHOWN]
    return ", ".join(f"{name} {value:.2g}" for name, value in ranked)


def recommended(status: Mapping[str, Any]) -> str:
    """The re-evaluation (spec.reevaluation) in one cell: the runs finished while it goes on,
    the recommended trial with its mean ± std over n seeds and the generalization gap; with
    several objectives, the first configurations' means per objective. Empty without one."""
    reevaluation = status.get("reevaluation") or {}
    runs, finished = reevaluation.get("runs") or 0, reevaluation.get("finished") or 0
    parts = [f"{finished}/{runs} re-runs"] if finished < runs else []
    recommendation = status.get("recommendation")
    if recommendation:
        shown = (
            f"trial {recommendation['trial']}: {recommendation['mean']:.4g} ± "
            f"{recommendation['std']:.2g} (n={len(recommendation.get('values') or [])}"
        )
        gap = recommendation.get("generalizationGap")
        parts.append(shown + ("" if gap is None else f", gap {gap:+.4g}") + ")")
        return "; ".join(parts)
    configurations = reevaluation.get("configurations") or []
    if any(len(c.get("scores") or []) > 1 for c in configurations):
        for configuration in configurations[:FRONT_MEMBERS_SHOWN]:
            means = [score.get("mean") for score in configuration["scores"]]
            text = ", ".join("-" if mean is None else f"{mean:.4g}" for mean in means)
            parts.append(f"{text} (trial {configuration['trial']})")
        if len(configurations) > FRONT_MEMBERS_SHOWN:
            parts.append(f"{len(configurations) - FRONT_MEMBERS_SHOWN} more")
    return "; ".join(parts)


def budget_used(budget: Mapping[str, Any]) -> str:
    """What the study has spent next to its limits, e.g. `0:42 of 8:00:00, 0.05/12 GPU-h`."""
    parts = [clock_duration(budget.get("elapsedSeconds", 0.0))]
    if budget.get("maxDurationSeconds"):
        parts[0] += f" of {clock_duration(budget['maxDurationSeconds'])}"
    if budget.get("maxGpuHours") or budget.get("gpuHours"):
        limit = f"/{format_amount(budget['maxGpuHours'])}" if budget.get("maxGpuHours") else ""
        parts.append(f"{format_amount(budget.get('gpuHours', 0.0))}{limit} GPU-h")
    if budget.get("moneyLimit") or budget.get("money"):
        limit = f"/{format_amount(budget['moneyLimit'])}" if budget.get("moneyLimit") else ""
        spent = format_amount(budget.get("money", 0.0))
        parts.append(f"{spent}{limit} {budget.get('currency') or ''}")
    return ", ".join(part.strip() for part in parts)


def clock_duration(seconds: float) -> str:
    minutes, second = divmod(int(seconds), 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours}:{minute:02d}:{second:02d}" if hours else f"{minute}:{second:02d}"

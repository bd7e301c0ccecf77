"""The Kubetune Grafana dashboard as code (grafana-foundation-sdk): studies, trials, their
parameter importances, the re-evaluation's recommendation, budgets and the operator's health,
from the operator's metrics (kubetune.metrics).

It writes charts/kubetune/files/grafana-dashboard.json, which the Helm chart ships as a
ConfigMap for Grafana's dashboard sidecar; a test fails when that file differs from what this
generator writes. Regenerate it after a change here:

    python -m monitoring.dashboard
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge, stat, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    Row,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    BarGaugeDisplayMode,
    BigValueGraphMode,
    BigValueTextMode,
    GraphDrawStyle,
    LegendDisplayMode,
    LegendPlacement,
    StackingMode,
    VizOrientation,
)
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    VariableRefresh,
    VariableSort,
)

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "charts" / "kubetune" / "files" / "grafana-dashboard.json"

UID = "kubetune-studies"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
STUDY = 'namespace=~"$namespace", study=~"$study"'
"""The label matchers of the namespace and study variables (both allow All)."""


def _query(expr: str, legend: str, ref: str = "A") -> Dataquery:
    return Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)


def _timeseries(
    panel_id: int, title: str, description: str, unit: str, *queries: Dataquery
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .id(panel_id)
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(8)
        .span(12)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(LegendDisplayMode.LIST)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )
    for query in queries:
        panel = panel.with_target(query)
    return panel


def _quantiles(metric: str, matchers: str, by: str = "") -> list[Dataquery]:
    grouping = f"le{', ' + by if by else ''}"
    legend = f"p{{q}}{' {{' + by + '}}' if by else ''}"
    return [
        _query(
            f"histogram_quantile({q / 100}, sum by ({grouping}) "
            f"(rate({metric}_bucket{{{matchers}}}[$__rate_interval])))",
            legend.format(q=q),
            ref,
        )
        for q, ref in ((50, "A"), (90, "B"), (99, "C"))
    ]


def build() -> Dashboard:
    """The dashboard."""
    datasource = (
        DatasourceVariable("datasource").id("datasource").label("Data source").type("prometheus")
    )
    namespace = (
        QueryVariable("namespace")
        .id("namespace")
        .label("Namespace")
        .datasource(DATASOURCE)
        .query("label_values(kubetune_study_phase, namespace)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .include_all(True)
        .all_value(".*")
    )
    study = (
        QueryVariable("study")
        .id("study")
        .label("Study")
        .datasource(DATASOURCE)
        .query('label_values(kubetune_study_phase{namespace=~"$namespace"}, study)')
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )
    by_study = "{{namespace}}/{{study}}"
    return (
        Dashboard("Kubetune studies")
        .uid(UID)
        .description("Hyperparameter tuning studies run by the Kubetune operator.")
        .tags(["kubetune"])
        .time("now-6h", "now")
        .refresh("30s")
        .with_variable(datasource)
        .with_variable(namespace)
        .with_variable(study)
        .with_row(Row("Studies").id(100))
        .with_panel(
            _timeseries(
                1,
                "Best objective value",
                "The best trial's objective value over time (one line per objective of a "
                "multi-objective study).",
                "none",
                _query(
                    f"kubetune_best_objective_value{{{STUDY}}}",
                    f"{by_study} objective {{{{objective}}}}",
                ),
            )
        )
        .with_panel(
            stat.Panel()
            .id(2)
            .title("Study phase")
            .description("The phase each study is in.")
            .datasource(DATASOURCE)
            .height(8)
            .span(12)
            .text_mode(BigValueTextMode.NAME)
            .graph_mode(BigValueGraphMode.NONE)
            .with_target(
                _query(f"kubetune_study_phase{{{STUDY}}} == 1", f"{by_study}: {{{{phase}}}}")
            )
        )
        .with_panel(
            _timeseries(
                3,
                "Trials by state",
                "Trials of the selected studies by state, stacked.",
                "none",
                _query(f"sum by (state) (kubetune_trials{{{STUDY}}})", "{{state}}"),
            ).stacking(common_builders.StackingConfig().mode(StackingMode.NORMAL))
        )
        .with_panel(
            _timeseries(
                4,
                "Running trials against parallelism",
                "Running and Pending trials against spec.budget.parallelism: a study below its "
                "parallelism with Pending trials is waiting for the cluster.",
                "none",
                _query(f'kubetune_trials{{{STUDY}, state="Running"}}', f"{by_study} running"),
                _query(f'kubetune_trials{{{STUDY}, state="Pending"}}', f"{by_study} pending", "B"),
                _query(f"kubetune_study_parallelism{{{STUDY}}}", f"{by_study} parallelism", "C"),
            )
        )
        .with_panel(
            _timeseries(
                5,
                "Pruned fraction",
                "Pruned trials over finished trials: how much training the pruner saves.",
                "percentunit",
                _query(
                    f'sum by (namespace, study) (kubetune_trials{{{STUDY}, state="Pruned"}}) / '
                    f"clamp_min(sum by (namespace, study) "
                    f'(kubetune_trials{{{STUDY}, state!~"Pending|Running"}}), 1)',
                    by_study,
                ),
            )
        )
        .with_panel(
            _timeseries(
                6,
                "Trials finished by outcome",
                "Trials finishing per interval, by outcome (Succeeded, Pruned, Failed, ...).",
                "none",
                _query(
                    f"sum by (outcome) "
                    f"(increase(kubetune_trials_finished_total{{{STUDY}}}[$__rate_interval]))",
                    "{{outcome}}",
                ),
            ).draw_style(GraphDrawStyle.BARS)
        )
        .with_panel(
            _timeseries(
                7,
                "Trial duration quantiles",
                "Running time of the trials finishing, 50th, 90th and 99th percentiles.",
                "s",
                *_quantiles("kubetune_trial_duration_seconds", STUDY),
            )
        )
        .with_panel(
            _timeseries(
                8,
                "Oldest Pending trial",
                "Age of each study's oldest Pending trial: a pod the cluster cannot schedule "
                "or whose image does not pull.",
                "s",
                _query(f"kubetune_trials_pending_oldest_age_seconds{{{STUDY}}}", by_study),
            )
        )
        .with_panel(
            bargauge.Panel()
            .id(19)
            .title("Parameter importances")
            .description(
                "How much each parameter matters to the objective (status.importances, "
                "PED-ANOVA over the completed trials), most important first; empty until "
                "enough trials completed. Narrow the search space to the top ones, or fix the "
                "rest."
            )
            .datasource(DATASOURCE)
            .height(8)
            .span(24)
            .min(0)
            .max(1)
            .orientation(VizOrientation.HORIZONTAL)
            .display_mode(BarGaugeDisplayMode.GRADIENT)
            .with_target(
                _query(
                    f"sort_desc(kubetune_study_parameter_importance{{{STUDY}}})",
                    f"{by_study} {{{{parameter}}}}",
                ).instant()
            )
        )
        .with_row(Row("Re-evaluation").id(103))
        .with_panel(
            _timeseries(
                16,
                "Recommended configuration: mean ± std",
                "After the search (spec.reevaluation), the best configurations run again with "
                "new seeds: the recommended one's mean of the re-evaluation metric, and one "
                "standard deviation either side.",
                "none",
                _query(
                    f"kubetune_study_recommended_mean{{{STUDY}}}",
                    f"{by_study} {{{{metric}}}} mean",
                ),
                *(
                    _query(
                        f"kubetune_study_recommended_mean{{{STUDY}}} {sign} "
                        f"kubetune_study_recommended_std{{{STUDY}}}",
                        f"{by_study} {{{{metric}}}} mean {sign} std",
                        ref,
                    )
                    for sign, ref in (("+", "B"), ("-", "C"))
                ),
            )
        )
        .with_panel(
            stat.Panel()
            .id(17)
            .title("Generalization gap")
            .description(
                "How much worse the recommended configuration's re-evaluated mean is than its "
                "value in the search, in the metric's direction: positive when the search's "
                "value was optimistic (validation overfitting, a lucky seed)."
            )
            .datasource(DATASOURCE)
            .height(8)
            .span(6)
            .graph_mode(BigValueGraphMode.NONE)
            .with_target(_query(f"kubetune_study_generalization_gap{{{STUDY}}}", by_study))
        )
        .with_panel(
            stat.Panel()
            .id(18)
            .title("Re-evaluation runs finished")
            .description("Re-evaluation runs that have ended, as a fraction of those planned.")
            .datasource(DATASOURCE)
            .unit("percentunit")
            .height(8)
            .span(6)
            .graph_mode(BigValueGraphMode.NONE)
            .with_target(
                _query(
                    f"kubetune_reevaluation_runs_finished{{{STUDY}}} / "
                    f"clamp_min(kubetune_reevaluation_runs_planned{{{STUDY}}}, 1)",
                    by_study,
                )
            )
        )
        .with_row(Row("Budget").id(101))
        .with_panel(
            _timeseries(
                9,
                "GPU-hours against budget",
                "GPU-hours used (running trials included), GPU-hours of finished trials, and "
                "spec.budget.maxGpuHours.",
                "h",
                _query(
                    f'kubetune_budget_used{{{STUDY}, budget="gpu_seconds"}} / 3600',
                    f"{by_study} used",
                ),
                _query(
                    f"kubetune_gpu_seconds_total{{{STUDY}}} / 3600",
                    f"{by_study} finished trials",
                    "B",
                ),
                _query(
                    f'kubetune_budget_limit{{{STUDY}, budget="gpu_seconds"}} / 3600',
                    f"{by_study} limit",
                    "C",
                ),
            )
        )
        .with_panel(
            _timeseries(
                10,
                "Money against budget",
                "Money spent (running trials included) and spec.budget.money.limit, in the "
                "study's currency.",
                "none",
                _query(f'kubetune_budget_used{{{STUDY}, budget="money"}}', f"{by_study} spent"),
                _query(
                    f'kubetune_budget_limit{{{STUDY}, budget="money"}}', f"{by_study} limit", "B"
                ),
            )
        )
        .with_panel(
            stat.Panel()
            .id(11)
            .title("Budget used")
            .description("Each limited budget's use as a fraction of its limit.")
            .datasource(DATASOURCE)
            .unit("percentunit")
            .height(8)
            .span(24)
            .graph_mode(BigValueGraphMode.NONE)
            .with_target(
                _query(
                    f"kubetune_budget_used{{{STUDY}}} / kubetune_budget_limit{{{STUDY}}}",
                    f"{by_study} {{{{budget}}}}",
                )
            )
        )
        .with_row(Row("Operator").id(102))
        .with_panel(
            _timeseries(
                12,
                "Handler errors",
                "Handler calls that raised, per second (each is retried and shown as a "
                "ReconcileFailed event on the study).",
                "ops",
                _query(
                    "sum by (handler) (rate(kubetune_handler_errors_total[$__rate_interval]))",
                    "{{handler}}",
                ),
            )
        )
        .with_panel(
            _timeseries(
                13,
                "Handler latency",
                "Time a handler call takes (a reconcile: read, decide, act).",
                "s",
                *_quantiles("kubetune_handler_duration_seconds", "", by="handler"),
            )
        )
        .with_panel(
            _timeseries(
                14,
                "Suggestion latency",
                "Time Optuna takes to suggest a trial (one ask).",
                "s",
                *_quantiles("kubetune_suggestion_duration_seconds", STUDY),
            )
        )
        .with_panel(
            stat.Panel()
            .id(15)
            .title("Operator version")
            .description("kubetune_build_info of the running operator.")
            .datasource(DATASOURCE)
            .height(8)
            .span(12)
            .text_mode(BigValueTextMode.NAME)
            .graph_mode(BigValueGraphMode.NONE)
            .with_target(
                _query(
                    "max by (version, python, optuna) (kubetune_build_info)",
                    "kubetune {{version}} (Python {{python}}, Optuna {{optuna}})",
                )
            )
        )
    )


def render() -> str:
    """The dashboard as the JSON Grafana imports (stable: sorted keys, one trailing newline)."""
    document: dict[str, Any] = json.loads(json.dumps(build().build(), cls=JSONEncoder))
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    output = Path(argv[0]) if argv else OUTPUT
    output.write_text(render())
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The rules of a TuningStudy spec that a schema cannot express (settings that fit the algorithm
and pruner, budgets that leave room for a trial, warm-start parameters the search space can take,
PromQL templates, ...): every problem is reported, not only the first."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

from pydantic.alias_generators import to_camel

from kubetune.spec import api, promql, values
from kubetune.spec.algorithm import (
    ALGORITHM_SETTINGS,
    SINGLE_OBJECTIVE_ALGORITHMS,
    Algorithm,
    AlgorithmName,
)
from kubetune.spec.bounds import MAX_GRID_POINTS, MAX_GRID_POINTS_PER_PARAMETER, ParameterValue
from kubetune.spec.duration import parse_duration
from kubetune.spec.metrics_source import PROMETHEUS_URL_PATTERN
from kubetune.spec.problems import Problem, shown
from kubetune.spec.pruner import PATIENCE_SETTINGS, PRUNER_SETTINGS, Pruner, PrunerName
from kubetune.spec.reevaluation import Reevaluation
from kubetune.spec.search_space import ParameterType
from kubetune.spec.search_space_rules import (
    ChoiceKeys,
    check_search_space,
    choice_keys,
    impossible_value,
    parameter_path,
)
from kubetune.spec.study import TuningStudy, TuningStudySpec
from kubetune.spec.warm_start import STUDY_NAME_PATTERN

PARAM_REFERENCE = re.compile(api.PARAM_PLACEHOLDER)


def check_study_spec(spec: TuningStudySpec) -> list[Problem]:
    """Every rule the schema cannot express; all problems, not only the first."""
    return [
        *_check_objective(spec),
        *check_search_space(spec),
        *_check_algorithm(spec),
        *_check_pruner(spec),
        *_check_budget(spec),
        *_check_warm_start(spec),
        *_check_reevaluation(spec),
        *_check_template(spec),
        *_check_metrics_source(spec),
    ]


def _check_objective(spec: TuningStudySpec) -> list[Problem]:
    problems = []
    first_at: dict[str, int] = {}
    for i, metric in enumerate(spec.objective.metrics):
        if metric.name in first_at:
            problems.append(
                Problem(
                    f"spec.objective.metrics[{i}].name",
                    f"{metric.name!r} is already metrics[{first_at[metric.name]}]",
                    "list each objective metric once",
                )
            )
        first_at.setdefault(metric.name, i)
    seen: set[str] = set()
    for i, name in enumerate(spec.objective.additional_metrics):
        path = f"spec.objective.additionalMetrics[{i}]"
        if name in first_at:
            problems.append(
                Problem(
                    path,
                    f"{name!r} is already an objective metric",
                    "remove it from additionalMetrics; objective metrics are always recorded",
                )
            )
        elif name in seen:
            problems.append(Problem(path, f"{name!r} is listed twice", "list it once"))
        seen.add(name)
    return problems


def _camel_settings(names: Iterable[str]) -> str:
    return ", ".join(sorted(to_camel(name) for name in names))


def _check_algorithm(spec: TuningStudySpec) -> list[Problem]:
    algorithm = spec.algorithm
    name = algorithm.name
    problems = []
    for setting in Algorithm.model_fields:
        if setting in ("name", "seed") or getattr(algorithm, setting) is None:
            continue
        if setting not in ALGORITHM_SETTINGS[name]:
            users = [a.value for a, allowed in ALGORITHM_SETTINGS.items() if setting in allowed]
            problems.append(
                Problem(
                    f"spec.algorithm.{to_camel(setting)}",
                    f"does not apply to algorithm {name.value}",
                    f"remove it (it applies to {', '.join(users)}); settings of "
                    f"{name.value}: {_camel_settings(ALGORITHM_SETTINGS[name]) or 'none'}",
                )
            )
    objectives = len(spec.objective.metrics)
    if name in SINGLE_OBJECTIVE_ALGORITHMS and objectives > 1:
        others = [a.value for a in AlgorithmName if a not in SINGLE_OBJECTIVE_ALGORITHMS]
        problems.append(
            Problem(
                "spec.algorithm.name",
                f"{name.value} optimizes a single objective, and spec.objective.metrics "
                f"lists {objectives}",
                f"use {', '.join(others)} for several objectives, or keep one metric and move "
                "the others to additionalMetrics",
            )
        )
    if name is AlgorithmName.TPE and algorithm.group and algorithm.multivariate is False:
        problems.append(
            Problem(
                "spec.algorithm.group",
                "group needs multivariate (Optuna refuses group without it)",
                "remove multivariate: false, or remove group",
            )
        )
    if name is AlgorithmName.CMAES and algorithm.separable and algorithm.with_margin:
        problems.append(
            Problem(
                "spec.algorithm.withMargin",
                "separable CMA-ES with margin is not supported by Optuna",
                "set only one of separable and withMargin",
            )
        )
    if name is AlgorithmName.GRID:
        problems.extend(_check_grid_size(spec))
        for i, p in enumerate(spec.search_space):
            ranged = p.type in (ParameterType.FLOAT, ParameterType.INT)
            points = values.grid_points(p) if ranged else None
            if points is not None and points > MAX_GRID_POINTS_PER_PARAMETER:
                problems.append(
                    Problem(
                        parameter_path(i, "step"),
                        f"{p.name} has {points if points < 10**15 else 'over 10^15'} grid "
                        f"points, more than "
                        f"{MAX_GRID_POINTS_PER_PARAMETER} (an int range without a step?)",
                        "set a larger step, or use another algorithm (tpe, random, qmc)",
                    )
                )
            if p.type is ParameterType.FLOAT and p.step is None:
                problems.append(
                    Problem(
                        parameter_path(i),
                        f"grid needs a finite set of values, and {p.name} is a continuous float",
                        "add a step (without log), list its values as categorical choices, or "
                        "use another algorithm (tpe, random, qmc)",
                    )
                )
            if p.condition is not None:
                problems.append(
                    Problem(
                        parameter_path(i, "condition"),
                        "grid cannot search conditional parameters (it enumerates one fixed "
                        "product of values)",
                        "remove the condition, or use another algorithm (tpe, random)",
                    )
                )
    return problems


def _check_grid_size(spec: TuningStudySpec) -> list[Problem]:
    """The grid's size as a product of its axes' sizes, stopping once it is too large."""
    size = 1
    for p in spec.search_space:
        points = values.grid_points(p)
        ranged = p.type in (ParameterType.FLOAT, ParameterType.INT)
        if points is None or (ranged and points > MAX_GRID_POINTS_PER_PARAMETER):
            return []  # that axis is a problem of its own, reported with its field
        size *= points
        if size > MAX_GRID_POINTS:
            return [
                Problem(
                    "spec.searchSpace",
                    f"the grid has more than {MAX_GRID_POINTS} points (the product of every "
                    "parameter's values), more than a study could ever run",
                    "use larger steps or fewer choices, or another algorithm (tpe, random, qmc)",
                )
            ]
    return []


def _check_pruner(spec: TuningStudySpec) -> list[Problem]:
    pruner = spec.pruner
    name = pruner.name
    problems = []
    objectives = len(spec.objective.metrics)
    if name is not PrunerName.NONE and objectives > 1:
        problems.append(
            Problem(
                "spec.pruner.name",
                f"pruning needs a single objective (Optuna does not take intermediate reports "
                f"of multi-objective studies), and spec.objective.metrics lists {objectives}",
                "set pruner name: none, or keep one objective metric",
            )
        )
    allowed = PRUNER_SETTINGS[name] | (PATIENCE_SETTINGS if name is not PrunerName.NONE else set())
    for setting in Pruner.model_fields:
        if setting == "name" or getattr(pruner, setting) is None or setting in allowed:
            continue
        if name is PrunerName.NONE and setting in PATIENCE_SETTINGS:
            fix = "set pruner name: patient to prune on patience alone, or remove it"
        else:
            users = [p.value for p, fields in PRUNER_SETTINGS.items() if setting in fields]
            if setting in PATIENCE_SETTINGS:
                users = ["every pruner but none"]
            fix = (
                f"remove it (it applies to {', '.join(users)}); settings of {name.value}: "
                f"{_camel_settings(allowed) or 'none'}"
            )
        problems.append(
            Problem(
                f"spec.pruner.{to_camel(setting)}", f"does not apply to pruner {name.value}", fix
            )
        )
    if name is PrunerName.PERCENTILE and pruner.percentile is None:
        problems.append(
            Problem(
                "spec.pruner.percentile",
                "the percentile pruner needs percentile",
                "set percentile (0-100), e.g. 25 prunes trials below the best quarter",
            )
        )
    if name is PrunerName.PATIENT and pruner.patience is None:
        problems.append(
            Problem(
                "spec.pruner.patience",
                "the patient pruner needs patience",
                "set patience: the steps without improvement after which a trial is pruned",
            )
        )
    if name is PrunerName.THRESHOLD:
        if pruner.lower is None and pruner.upper is None:
            problems.append(
                Problem(
                    "spec.pruner",
                    "the threshold pruner needs lower or upper",
                    "set lower, upper or both: a trial reporting a value outside is pruned",
                )
            )
        elif pruner.lower is not None and pruner.upper is not None and pruner.lower > pruner.upper:
            problems.append(
                Problem(
                    "spec.pruner.lower",
                    f"lower ({shown(pruner.lower)}) is above upper ({shown(pruner.upper)}), "
                    "so every trial would be pruned",
                    "swap lower and upper",
                )
            )
    if (
        name is PrunerName.HYPERBAND
        and pruner.min_resource is not None
        and pruner.max_resource is not None
        and pruner.min_resource > pruner.max_resource
    ):
        problems.append(
            Problem(
                "spec.pruner.minResource",
                f"minResource ({pruner.min_resource}) is above maxResource ({pruner.max_resource})",
                "set minResource at most maxResource",
            )
        )
    return problems


def _check_budget(spec: TuningStudySpec) -> list[Problem]:
    budget = spec.budget
    problems = []
    if budget.trial_timeout is None and (budget.max_gpu_hours is not None or budget.money):
        which = "maxGpuHours" if budget.max_gpu_hours is not None else "money"
        problems.append(
            Problem(
                "spec.budget.trialTimeout",
                f"is required with {which}: a trial starts only when its worst case "
                "(trialTimeout x GPUs x price) fits in what remains, and without trialTimeout a "
                "trial's worst case is unbounded",
                "set trialTimeout to the longest a trial may run, e.g. 2h",
            )
        )
    prices = budget.money.price_per_gpu_hour if budget.money else {}
    try:
        gpus = spec.trial_template.gpu_resources(prices)
    except ValueError as error:
        return [
            *problems,
            Problem(
                "spec.trialTemplate.spec.containers",
                f"GPU resource {error}",
                "request GPUs as a whole number, e.g. nvidia.com/gpu: 1",
            ),
        ]
    if budget.max_gpu_hours is not None and not gpus:
        problems.append(
            Problem(
                "spec.budget.maxGpuHours",
                "is set but the trial template requests no GPU, so it would never count anything",
                "request GPUs in the trainer container (resources.limits, e.g. "
                "nvidia.com/gpu: 1), or remove maxGpuHours",
            )
        )
    if budget.money is not None:
        requested = set(gpus)
        if not requested.intersection(budget.money.price_per_gpu_hour):
            problems.append(
                Problem(
                    "spec.budget.money.pricePerGpuHour",
                    f"prices {', '.join(sorted(budget.money.price_per_gpu_hour))}, which the "
                    "trial template does not request "
                    f"(it requests {', '.join(sorted(requested)) or 'nothing'}), so the money "
                    "budget would never count anything",
                    "key the price by the GPU resource the trainer container requests "
                    "(e.g. nvidia.com/gpu under resources.limits)",
                )
            )
    return problems


def _check_warm_start(spec: TuningStudySpec) -> list[Problem]:
    if spec.warm_start is None:
        return []
    problems = []
    searched = [p.name for p in spec.search_space if p.type is not ParameterType.FIXED]
    choices = choice_keys(spec.search_space)
    for i, configuration in enumerate(spec.warm_start.configurations):
        path = f"spec.warmStart.configurations[{i}]"
        problems.extend(_check_params(spec, path, configuration, choices))
        missing = [name for name in searched if name not in configuration]
        if spec.algorithm.name is AlgorithmName.GRID and missing:
            problems.append(
                Problem(
                    path,
                    "grid search needs every parameter in a configuration, and this one "
                    f"lacks {', '.join(missing)}",
                    f"add {', '.join(missing)}",
                )
            )
    objectives = [m.name for m in spec.objective.metrics]
    for i, result in enumerate(spec.warm_start.results):
        path = f"spec.warmStart.results[{i}]"
        problems.extend(_check_params(spec, f"{path}.params", result.params, choices))
        if len(result.values) != len(objectives):
            problems.append(
                Problem(
                    f"{path}.values",
                    f"has {len(result.values)} value(s), and the study has {len(objectives)} "
                    f"objective(s) ({', '.join(objectives)})",
                    "give one value per objective metric, in the order of spec.objective.metrics",
                )
            )
        for j, value in enumerate(result.values):
            if not math.isfinite(value):
                problems.append(
                    Problem(
                        f"{path}.values[{j}]",
                        f"{value} is not a finite number",
                        "leave out results that failed or diverged",
                    )
                )
    return problems


def check_from_studies(study: TuningStudy) -> list[Problem]:
    """Each source study named once, and not this study: the rest (it exists, it optimizes
    the same objective) depends on the cluster, and kubetune.controller.warm_start checks it."""
    if study.spec.warm_start is None:
        return []
    problems = []
    first_at: dict[str, int] = {}
    for i, name in enumerate(study.spec.warm_start.from_studies):
        path = f"spec.warmStart.fromStudies[{i}]"
        if not re.fullmatch(STUDY_NAME_PATTERN, name):
            problems.append(
                Problem(
                    path,
                    f"{shown(name)} is not a study name: lower-case letters, digits, '-' and "
                    "'.', beginning and ending with a letter or digit",
                    "write the metadata.name of a TuningStudy of this namespace",
                )
            )
        elif name == study.metadata.name:
            problems.append(
                Problem(
                    path,
                    f"{name!r} is this study: a study cannot learn from its own trials",
                    "name another study of this namespace, or remove the entry",
                )
            )
        elif name in first_at:
            problems.append(
                Problem(
                    path,
                    f"{name!r} is already fromStudies[{first_at[name]}]",
                    "list each study once",
                )
            )
        first_at.setdefault(name, i)
    return problems


def _check_params(
    spec: TuningStudySpec, path: str, params: Mapping[str, ParameterValue], choices: ChoiceKeys
) -> list[Problem]:
    by_name = {p.name: p for p in spec.search_space}
    problems = []
    for name, value in params.items():
        where = f"{path}.{name}"
        parameter = by_name.get(name)
        if parameter is None:
            problems.append(
                Problem(
                    where,
                    f"{name!r} is not a parameter of searchSpace",
                    f"remove it or use one of {', '.join(by_name)}",
                )
            )
            continue
        reason = impossible_value(parameter, value, choices)
        if reason is not None:
            problems.append(
                Problem(
                    where,
                    f"{shown(value)} is not a value {name} can take: {reason}",
                    "use a value inside the search space",
                )
            )
        condition = parameter.condition
        if condition is not None and condition.parameter in params:
            parent_value = params[condition.parameter]
            if values.value_key(parent_value) not in values.value_keys(condition.values):
                problems.append(
                    Problem(
                        where,
                        f"{name} is sampled only when {condition.parameter} is one of "
                        f"{shown(condition.values)}, and here it is {shown(parent_value)}",
                        f"remove {name} from this entry, or change {condition.parameter}",
                    )
                )
    return problems


def _check_reevaluation(spec: TuningStudySpec) -> list[Problem]:
    reevaluation = spec.reevaluation
    if reevaluation is None:
        return []
    path = "spec.reevaluation"
    objective = spec.objective
    metric = reevaluation.metric
    problems = []
    if objective.is_multi_objective and (metric is not None or reevaluation.direction):
        which = "metric" if metric is not None else "direction"
        problems.append(
            Problem(
                f"{path}.{which}",
                "applies to single-objective studies: a multi-objective study re-evaluates "
                "its Pareto front on every objective",
                f"remove {which}",
            )
        )
    elif metric is not None:
        objectives = {m.name: m.direction for m in objective.metrics}
        if metric not in objectives and metric not in objective.additional_metrics:
            problems.append(
                Problem(
                    f"{path}.metric",
                    f"{metric!r} is not a metric the study records",
                    f"add {metric!r} to spec.objective.additionalMetrics (what the trainer "
                    "reports in its final report), or name an objective metric",
                )
            )
        direction = reevaluation.direction
        if metric in objectives and direction is not None and direction != objectives[metric]:
            problems.append(
                Problem(
                    f"{path}.direction",
                    f"is {direction.value}, but the objective {metric!r} is "
                    f"{objectives[metric].value}d",
                    "remove direction: an objective metric keeps its own",
                )
            )
    elif reevaluation.direction is not None:
        problems.append(
            Problem(
                f"{path}.direction",
                "applies to `metric`, which is not set (the objective keeps its own direction)",
                "remove direction, or set metric to the held-out metric it ranks",
            )
        )
    problems.extend(_check_reevaluation_budget(spec, reevaluation))
    return problems


def _check_reevaluation_budget(spec: TuningStudySpec, reevaluation: Reevaluation) -> list[Problem]:
    """The GPU-hour and money budgets reserve the re-evaluation's worst case before the search
    may start a trial: a budget too small for both is a mistake to name now, not a study that
    ends at its first reconcile."""
    budget = spec.budget
    if budget.trial_timeout is None:
        return []  # _check_budget requires it with maxGpuHours or money
    prices = budget.money.price_per_gpu_hour if budget.money else {}
    try:
        gpus = spec.trial_template.gpu_resources(prices)
    except ValueError:
        return []  # _check_budget names the amount
    runs = reevaluation.top_trials * reevaluation.repeats
    worst_hours = (
        parse_duration(budget.trial_timeout) + spec.trial_template.spec.stop_seconds
    ) / 3600
    limits = []
    if budget.max_gpu_hours is not None:
        limits.append(("maxGpuHours", budget.max_gpu_hours, float(sum(gpus.values())), "GPU-hours"))
    if budget.money is not None:
        per_hour = spec.trial_template.money_per_hour(prices)
        limits.append(("money.limit", budget.money.limit, per_hour, budget.money.currency))
    problems = []
    for name, limit, per_hour, unit in limits:
        reserved = runs * worst_hours * per_hour
        if per_hour and reserved + worst_hours * per_hour > limit * (1 + 1e-9):
            problems.append(
                Problem(
                    f"spec.budget.{name}",
                    f"({limit:g}) cannot hold the re-evaluation's worst case ({runs} runs of "
                    f"trialTimeout and the grace period: {reserved:.4g} {unit}) and one search "
                    "trial's",
                    "raise the budget, or lower reevaluation.topTrials, reevaluation.repeats or "
                    "budget.trialTimeout",
                )
            )
    return problems


def _check_template(spec: TuningStudySpec) -> list[Problem]:
    names = [p.name for p in spec.search_space]
    known = ", ".join(f"${{params.{name}}}" for name in dict.fromkeys(names))
    problems = []
    for c, container in enumerate(spec.trial_template.spec.containers):
        base = f"spec.trialTemplate.spec.containers[{c}]"
        for part in ("command", "args"):
            for k, text in enumerate(getattr(container, part) or []):
                for reference in PARAM_REFERENCE.findall(text):
                    if reference not in names:
                        problems.append(
                            Problem(
                                f"{base}.{part}[{k}]",
                                f"${{params.{reference}}} names no parameter of searchSpace",
                                f"use one of {known}",
                            )
                        )
        for k, env in enumerate(container.env or []):
            if (
                env.name.startswith(api.RESERVED_ENV_PREFIX)
                and env.name not in api.TRAINER_SETTINGS_ENV
            ):
                problems.append(
                    Problem(
                        f"{base}.env[{k}].name",
                        f"{env.name} is reserved: Kubetune sets {api.PARAMS_ENV}, "
                        f"{api.PARAM_ENV_PREFIX}<NAME> and the other "
                        f"{api.RESERVED_ENV_PREFIX}* variables in every trial container",
                        "rename the variable, or add a fixed parameter to the search space",
                    )
                )
    return [*problems, *_check_primary_container(spec), *_check_job(spec)]


def _check_primary_container(spec: TuningStudySpec) -> list[Problem]:
    template = spec.trial_template
    names = [container.name for container in template.spec.containers]
    if template.primary_container is None or template.primary_container in names:
        return []
    return [
        Problem(
            "spec.trialTemplate.primaryContainer",
            f"{template.primary_container!r} is no container of spec.trialTemplate.spec",
            f"name one of {', '.join(names)}, or leave it out to read the first",
        )
    ]


def _check_job(spec: TuningStudySpec) -> list[Problem]:
    """A Job's pods at once within its completions; a distributed run with all its ranks at
    once and its variables left to Kubetune."""
    job = spec.trial_template.job
    if job is None:
        return []
    base = "spec.trialTemplate.job"
    problems = []
    if job.parallelism is not None and job.parallelism > job.completions:
        problems.append(
            Problem(
                f"{base}.parallelism",
                f"({job.parallelism}) is more than completions ({job.completions}): the Job "
                "would never run that many pods, and the budgets would count them",
                f"lower parallelism to at most {job.completions}, or leave it out",
            )
        )
    elif job.distributed is not None and job.pods_at_once != job.completions:
        problems.append(
            Problem(
                f"{base}.parallelism",
                f"({job.parallelism}) is less than completions ({job.completions}), but a "
                "distributed run needs all its ranks at once: rank 0 would wait forever for "
                "ranks that start only after it has ended",
                f"leave parallelism out (or set it to {job.completions}), or remove distributed",
            )
        )
    if job.distributed is not None:
        for c, container in enumerate(spec.trial_template.spec.containers):
            for k, env in enumerate(container.env or []):
                if env.name in api.DISTRIBUTED_ENV:
                    problems.append(
                        Problem(
                            f"spec.trialTemplate.spec.containers[{c}].env[{k}].name",
                            f"{env.name} is set by Kubetune in every pod of a distributed trial",
                            "remove it (job.distributed.port sets MASTER_PORT)",
                        )
                    )
    return problems


def _check_metrics_source(spec: TuningStudySpec) -> list[Problem]:
    """Every recorded metric has a query; templates render safely; one CA source."""
    if spec.metrics_source is None:
        return []
    source = spec.metrics_source.prometheus
    base = "spec.metricsSource.prometheus"
    problems = []
    if not re.fullmatch(PROMETHEUS_URL_PATTERN, source.url):
        problems.append(
            Problem(
                f"{base}.url",
                f"{source.url!r} is not an http(s) URL of Prometheus",
                "write the base URL with its scheme and no query, "
                "e.g. http://prometheus-operated.monitoring:9090",
            )
        )
    objective = spec.objective
    recorded = [m.name for m in objective.metrics] + list(objective.additional_metrics)
    for name in source.queries:
        if name not in recorded:
            problems.append(
                Problem(
                    f"{base}.queries.{name}",
                    f"{name!r} is not a metric of the study",
                    f"name one of {', '.join(recorded)}, or add {name} to "
                    "spec.objective.additionalMetrics",
                )
            )
    shared = [name for name in recorded if name not in source.queries]
    if shared and source.query is None:
        problems.append(
            Problem(
                f"{base}.query",
                f"is missing, and queries has no entry for {', '.join(shared)}",
                "add query (a template naming ${metric}) or an entry in queries for each metric",
            )
        )
    if source.query is not None and len(shared) > 1 and "${metric}" not in source.query:
        problems.append(
            Problem(
                f"{base}.query",
                f"serves {len(shared)} metrics ({', '.join(shared)}) but does not name "
                "${metric}, so they would all read the same value",
                'name the metric in it, e.g. metric="${metric}", or add entries to queries',
            )
        )
    templates = [("query", source.query), ("stepQuery", source.step_query)] + [
        (f"queries.{name}", text) for name, text in source.queries.items()
    ]
    for where, text in templates:
        if text is None:
            continue
        for message in promql.check_template(text):
            what, _, fix = message.partition("; ")
            problems.append(
                Problem(f"{base}.{where}", what, fix or "see docs/study-spec.md#metricssource")
            )
    if source.ca_config_map is not None and source.ca_secret is not None:
        problems.append(
            Problem(
                f"{base}.caSecret",
                "is set together with caConfigMap",
                "keep one of caConfigMap and caSecret",
            )
        )
    return problems

"""The TuningStudy API: what a user writes (spec) and what the operator reports (status).

These models are the single source of truth: the CRD schema in crds/ is generated from them,
`kubetune validate` parses manifests with them, and the engine and controller read them.
Rules a schema cannot express (low < high, a step that divides the range, ...) live in
kubetune.spec.rules and kubetune.spec.search_space_rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr

from kubetune.spec import api
from kubetune.spec.base import ApiModel, OpenModel
from kubetune.spec.duration import Duration

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
"""Parameter and metric names: they become environment variable names and Optuna keys."""

ParameterName = Annotated[str, Field(pattern=NAME_PATTERN, min_length=1, max_length=63)]
MetricName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_:.\-/]*$", max_length=128)]
MAX_PARAMETERS = 100
"""Parameters in a search space: samplers slow down long before this (TPE and GP model every
parameter jointly), and each one becomes an environment variable of every trial pod."""
MAX_CHOICES = 1000
"""Values of one categorical parameter or one condition: a choice list longer than this is a
range written out, better searched as an int or float parameter."""
MAX_BOUND = 1e15
"""The largest |low|, |high|, goal or pruner threshold: Optuna's samplers compute in float64
(squares of ranges among them), and integers up to this are exact in a float64."""
MAX_INT64 = 2**63 - 1
"""Integers in a manifest fit Kubernetes' int64 (the API server's and CEL's integer)."""
MAX_COUNT = 2**31 - 1
"""Counts (trials, steps, retained pods): Kubernetes' int32, as its own counts (replicas)."""
MAX_VALUE_LENGTH = 1024
"""Characters in a string choice or fixed value: it becomes an environment variable and a
label-free part of every trial's status."""

ChoiceText = Annotated[StrictStr, Field(max_length=MAX_VALUE_LENGTH)]
ChoiceInt = Annotated[StrictInt, Field(ge=-MAX_INT64 - 1, le=MAX_INT64)]
ChoiceFloat = Annotated[StrictFloat, Field(allow_inf_nan=False)]
ParameterValue = StrictBool | ChoiceInt | ChoiceFloat | ChoiceText
"""A categorical choice or a fixed value: a string, a number or a boolean."""
Bound = Annotated[float, Field(ge=-MAX_BOUND, le=MAX_BOUND)]
"""A range bound or threshold, finite and small enough for float64 arithmetic."""
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
PositiveCount = Annotated[int, Field(ge=1, le=MAX_COUNT)]

MAX_OBJECTIVES = 8
MAX_ADDITIONAL_METRICS = 32
MAX_GRID_POINTS_PER_PARAMETER = 100_000
"""A grid axis larger than this is a mistake (an int range without a step, say)."""
MAX_GRID_POINTS = 10_000_000
"""A grid larger than this (the product of its axes) could never be run to the end."""
MAX_PARETO_FRONT_IN_STATUS = 50
"""The most Pareto-optimal trials `status.paretoFront` lists (the first in its order; see
TuningStudyStatus.pareto_front); `status.paretoFrontSize` counts them all. An entry is a name,
a number and at most MAX_OBJECTIVES values, so 50 of them stay a few kilobytes, far under
etcd's object size limit."""


# --- objective -------------------------------------------------------------------------------


class Direction(StrEnum):
    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"


class Aggregation(StrEnum):
    """How the values a trial reports become its final value."""

    LAST = "last"
    MIN = "min"
    MAX = "max"


class ObjectiveMetric(ApiModel):
    name: MetricName
    """Name of the metric the trainer reports, for example val_loss."""
    direction: Direction = Direction.MINIMIZE
    """Whether smaller (minimize) or larger (maximize) values are better."""
    goal: Bound | None = None
    """The study completes with reason GoalReached once a trial reaches this value (with
    several objectives: once one trial reaches every goal that is set)."""


class Objective(ApiModel):
    metrics: Annotated[list[ObjectiveMetric], Field(min_length=1, max_length=MAX_OBJECTIVES)]
    """The metrics to optimize. One metric is single-objective; several make a multi-objective
    study whose result is a Pareto front."""
    aggregation: Aggregation = Aggregation.LAST
    """How a trial's reports become its final value: the last value reported (last), or the
    best-in-direction minimum (min) or maximum (max) over all its reports."""
    additional_metrics: Annotated[list[MetricName], Field(max_length=MAX_ADDITIONAL_METRICS)] = []
    """Further metrics to record with each trial (not optimized)."""

    @property
    def is_multi_objective(self) -> bool:
        return len(self.metrics) > 1


# --- metrics source --------------------------------------------------------------------------


PROMETHEUS_URL_PATTERN = r"^https?://[^\s/?#]+[^\s?#]*$"


class KeySelector(ApiModel):
    name: Annotated[str, Field(min_length=1, max_length=253)]
    """The Secret or ConfigMap, in the study's namespace."""
    key: Annotated[str, Field(min_length=1, max_length=253)]
    """The key within it."""


class PrometheusSource(ApiModel):
    # The pattern is in the CRD; the validator says what is wrong in words.
    url: Annotated[
        str, Field(max_length=2048, json_schema_extra={"pattern": PROMETHEUS_URL_PATTERN})
    ]
    """Base URL of the Prometheus HTTP API, for example http://prometheus-operated.monitoring:9090
    (the operator queries <url>/api/v1/query)."""
    query: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    """PromQL template for every metric without an entry in queries; ${metric} stands for the
    metric's name. Placeholders (${study.name}, ${study.namespace}, ${trial.name},
    ${trial.number}, ${trial.pod}, ${trial.namespace}, ${metric}) must stand inside a quoted
    string; their values are escaped. The query must return one series."""
    queries: Annotated[
        dict[MetricName, Annotated[str, Field(min_length=1, max_length=4096)]],
        Field(max_length=40),
    ] = {}
    """PromQL template per metric name (objective or additional metric), overriding query."""
    step_query: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    """PromQL template giving the trainer's current step, the pruner's resource (for example
    kubetune_trial_step{...}). Without it the step is the number of whole pollIntervals since
    the trial's pod started."""
    poll_interval: Duration = "15s"
    """How often the intermediate values of a running trial are read (they feed the pruner)."""
    final_delay: Duration = "5s"
    """How long after the pod finished the final values are read (evaluated at the time the pod
    finished), so the last scrape before it ended is stored."""
    timeout: Duration = "10s"
    """Timeout of one query."""
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    """Retries of a query that failed for a transient reason (unreachable, timeout, 429, 5xx),
    with exponential backoff. A bad query (400, 422) is not retried."""
    bearer_token_secret: KeySelector | None = None
    """A Secret key holding a bearer token sent with each query."""
    ca_config_map: KeySelector | None = None
    """A ConfigMap key holding the PEM CA bundle that signs Prometheus's certificate."""
    ca_secret: KeySelector | None = None
    """A Secret key holding the PEM CA bundle (instead of caConfigMap)."""

    def template_for(self, metric: str) -> str | None:
        """The query template of a metric: its own, else the shared one."""
        return self.queries.get(metric, self.query)


class MetricsSource(ApiModel):
    prometheus: PrometheusSource
    """Read the objective and additional metrics from Prometheus instead of the trainer's pod
    annotation and termination message."""


# --- search space ----------------------------------------------------------------------------


class ParameterType(StrEnum):
    FLOAT = "float"
    INT = "int"
    CATEGORICAL = "categorical"
    FIXED = "fixed"


class ParameterCondition(ApiModel):
    parameter: ParameterName
    """A parameter listed earlier in searchSpace."""
    values: Annotated[list[ParameterValue], Field(min_length=1, max_length=MAX_CHOICES)]
    """The values of that parameter for which this parameter is sampled."""


class Parameter(ApiModel):
    name: ParameterName
    """Name of the hyperparameter. The trainer receives it as KUBETUNE_PARAM_<NAME> (upper case),
    in KUBETUNE_PARAMS and as ${params.<name>} in command and args."""
    type: ParameterType
    """float, int, categorical, or fixed (a constant, to search a subspace)."""
    low: Bound | None = None
    """Lower bound, inclusive (float and int)."""
    high: Bound | None = None
    """Upper bound, inclusive (float and int)."""
    log: bool = False
    """Sample on a log scale (float and int; needs low > 0; cannot be combined with step)."""
    step: Annotated[float, Field(gt=0, le=2 * MAX_BOUND)] | None = None
    """Discretization step; it must divide high - low (float and int; int defaults to 1)."""
    choices: Annotated[list[ParameterValue], Field(min_length=1, max_length=MAX_CHOICES)] | None = (
        None
    )
    """The values to choose from (categorical): strings, numbers or booleans."""
    value: ParameterValue | None = None
    """The constant value (fixed)."""
    condition: ParameterCondition | None = None
    """Sample this parameter only when another parameter has one of the given values (for
    example momentum only when optimizer is sgd). Otherwise the trial does not receive it."""


# --- algorithm -------------------------------------------------------------------------------


class AlgorithmName(StrEnum):
    RANDOM = "random"
    GRID = "grid"
    TPE = "tpe"
    GP = "gp"
    CMAES = "cmaes"
    QMC = "qmc"
    NSGA2 = "nsga2"
    NSGA3 = "nsga3"


class QmcType(StrEnum):
    SOBOL = "sobol"
    HALTON = "halton"


class Algorithm(ApiModel):
    name: AlgorithmName = AlgorithmName.TPE
    """The Optuna sampler: random, grid, tpe (default; multivariate with constant liar), gp
    (Gaussian-process Bayesian optimization), cmaes, qmc (sobol/halton), nsga2 or nsga3."""
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
    """Seed for reproducible suggestions. A study rebuilt after an operator restart continues
    with exactly the suggestions it would have made."""
    startup_trials: Count | None = None
    """Random trials before the model is used (tpe, gp, cmaes)."""
    multivariate: bool | None = None
    """Model parameters jointly (tpe; default true)."""
    constant_liar: bool | None = None
    """Treat running trials as bad results so parallel trials spread out (tpe; default true)."""
    group: bool | None = None
    """Model conditional parameter groups separately (tpe with multivariate)."""
    candidates: PositiveCount | None = None
    """Candidates scored per suggestion (tpe; default 24)."""
    qmc_type: QmcType | None = None
    """The low-discrepancy sequence (qmc; default sobol)."""
    scramble: bool | None = None
    """Scramble the sequence (qmc; default false)."""
    population_size: Annotated[int, Field(ge=2, le=MAX_COUNT)] | None = None
    """Individuals per generation (nsga2, nsga3; default 50) or CMA-ES population (cmaes)."""
    mutation_prob: Annotated[float, Field(ge=0, le=1)] | None = None
    """Probability of mutating a parameter (nsga2, nsga3)."""
    crossover_prob: Annotated[float, Field(ge=0, le=1)] | None = None
    """Probability of crossover between parents (nsga2, nsga3; default 0.9)."""
    swapping_prob: Annotated[float, Field(ge=0, le=1)] | None = None
    """Probability of swapping each parameter of the parents (nsga2, nsga3; default 0.5)."""
    separable: bool | None = None
    """Use separable CMA-ES, faster in high dimensions (cmaes)."""
    with_margin: bool | None = None
    """CMA-ES with margin, for integer and discrete parameters (cmaes)."""
    deterministic_objective: bool | None = None
    """The objective has no noise (gp)."""


# Which algorithm settings apply to which algorithm. The validator and the engine read this.
ALGORITHM_SETTINGS: dict[AlgorithmName, frozenset[str]] = {
    AlgorithmName.RANDOM: frozenset(),
    AlgorithmName.GRID: frozenset(),
    AlgorithmName.TPE: frozenset(
        {"startup_trials", "multivariate", "constant_liar", "group", "candidates"}
    ),
    AlgorithmName.GP: frozenset({"startup_trials", "deterministic_objective"}),
    AlgorithmName.CMAES: frozenset(
        {
            "startup_trials",
            "population_size",
            "separable",
            "with_margin",
        }
    ),
    AlgorithmName.QMC: frozenset({"qmc_type", "scramble"}),
    AlgorithmName.NSGA2: frozenset(
        {"population_size", "mutation_prob", "crossover_prob", "swapping_prob"}
    ),
    AlgorithmName.NSGA3: frozenset(
        {"population_size", "mutation_prob", "crossover_prob", "swapping_prob"}
    ),
}
SINGLE_OBJECTIVE_ALGORITHMS = frozenset({AlgorithmName.CMAES})
MULTI_OBJECTIVE_ONLY_ALGORITHMS = frozenset({AlgorithmName.NSGA2, AlgorithmName.NSGA3})


MAX_WARM_START_STUDIES = 20
"""Studies one study warm-starts from at most (spec.warmStart.fromStudies)."""
STUDY_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""A TuningStudy's name, as Kubernetes names objects (a DNS-1123 subdomain)."""
# The pattern is in the CRD; the validator says what is wrong in words.
StudyName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=api.MAX_STUDY_NAME_LENGTH,
        json_schema_extra={"pattern": STUDY_NAME_PATTERN},
    ),
]


class WarmStartResult(ApiModel):
    params: Annotated[dict[ParameterName, ParameterValue], Field(max_length=MAX_PARAMETERS)]
    """The parameters of a completed run."""
    values: Annotated[list[float], Field(min_length=1, max_length=MAX_OBJECTIVES)]
    """Its objective values, one per objective metric, in the same order."""


class WarmStart(ApiModel):
    configurations: Annotated[
        list[Annotated[dict[ParameterName, ParameterValue], Field(max_length=MAX_PARAMETERS)]],
        Field(max_length=1000),
    ] = []
    """Configurations to try first, in order (for example known good defaults). Parameters left
    out are sampled."""
    results: Annotated[list[WarmStartResult], Field(max_length=10000)] = []
    """Completed results from earlier runs, given to the algorithm before the first suggestion.
    They inform the search but are not run again and do not count toward maxTrials."""
    from_studies: Annotated[list[StudyName], Field(max_length=MAX_WARM_START_STUDIES)] = []
    """Other studies of this namespace to learn from (a smaller dataset's, say): the trials of
    their searches that succeeded are given to the algorithm like results, over the parameters
    this study searches too. Each must optimize the same objective metrics, in the same order
    and directions. This study starts once their searches have ended."""


MAX_REEVALUATED_TRIALS = 20
"""Configurations re-evaluated at most: the status lists each, with one value per repeat."""
MAX_REPEATS = 20
"""Re-runs per configuration at most (with MAX_REEVALUATED_TRIALS: 400 runs)."""


class Reevaluation(ApiModel):
    top_trials: Annotated[int, Field(ge=1, le=MAX_REEVALUATED_TRIALS)] = 3
    """How many of the best search trials have their configuration re-run (with several
    objectives: members of the Pareto front, at most this many)."""
    repeats: Annotated[int, Field(ge=1, le=MAX_REPEATS)] = 3
    """Runs of each configuration, each with a new seed (KUBETUNE_SEED)."""
    metric: MetricName | None = None
    """The metric that ranks the re-run configurations, by its mean over the repeats: a
    held-out metric the trainer reports (test_accuracy, say), listed in the objective's
    metrics or additionalMetrics. By default the (single) objective. Multi-objective studies
    leave it unset: every objective is re-evaluated."""
    direction: Direction | None = None
    """Whether a smaller or larger `metric` is better; by default the objective's
    direction."""


# --- pruner ----------------------------------------------------------------------------------


class PrunerName(StrEnum):
    NONE = "none"
    MEDIAN = "median"
    PERCENTILE = "percentile"
    SUCCESSIVE_HALVING = "successiveHalving"
    HYPERBAND = "hyperband"
    THRESHOLD = "threshold"
    PATIENT = "patient"


class Pruner(ApiModel):
    name: PrunerName = PrunerName.NONE
    """Early stopping of hopeless trials from their intermediate reports: none (default),
    median, percentile, successiveHalving (ASHA), hyperband, threshold, or patient."""
    startup_trials: Count | None = None
    """Trials that complete before pruning starts (median, percentile; default 5)."""
    warmup_steps: Count | None = None
    """Steps of each trial that are never pruned (median, percentile, threshold; default 0)."""
    interval_steps: PositiveCount | None = None
    """Check every this many steps (median, percentile, threshold; default 1)."""
    min_trials: PositiveCount | None = None
    """Trials that must have reported a step before it is compared (median, percentile)."""
    percentile: Annotated[float, Field(ge=0, le=100)] | None = None
    """Prune below this percentile of other trials (percentile; required there)."""
    min_resource: PositiveCount | None = None
    """Steps before the first rung (successiveHalving, hyperband; default derived by Optuna)."""
    max_resource: PositiveCount | None = None
    """Steps of a full trial (hyperband; default derived by Optuna)."""
    reduction_factor: Annotated[int, Field(ge=2, le=MAX_COUNT)] | None = None
    """Keep one in this many trials at each rung (successiveHalving, default 4; hyperband,
    default 3)."""
    min_early_stopping_rate: Count | None = None
    """Rung offset s of ASHA (successiveHalving; default 0)."""
    bootstrap_count: Count | None = None
    """Trials that must reach a rung before promotion decisions (successiveHalving, hyperband)."""
    lower: Bound | None = None
    """Prune a trial that reports a value below this (threshold)."""
    upper: Bound | None = None
    """Prune a trial that reports a value above this (threshold)."""
    patience: Count | None = None
    """Prune once this many reported steps in a row brought no improvement of at least
    minDelta over the trial's best value (required for patient; on another pruner, that pruner
    then decides)."""
    min_delta: Annotated[float, Field(ge=0, le=MAX_BOUND)] | None = None
    """Smallest improvement over the trial's best value that counts, for patience (default 0:
    any strict improvement)."""


PRUNER_SETTINGS: dict[PrunerName, frozenset[str]] = {
    PrunerName.NONE: frozenset(),
    PrunerName.MEDIAN: frozenset(
        {"startup_trials", "warmup_steps", "interval_steps", "min_trials"}
    ),
    PrunerName.PERCENTILE: frozenset(
        {"startup_trials", "warmup_steps", "interval_steps", "min_trials", "percentile"}
    ),
    PrunerName.SUCCESSIVE_HALVING: frozenset(
        {"min_resource", "reduction_factor", "min_early_stopping_rate", "bootstrap_count"}
    ),
    PrunerName.HYPERBAND: frozenset(
        {"min_resource", "max_resource", "reduction_factor", "bootstrap_count"}
    ),
    PrunerName.THRESHOLD: frozenset({"lower", "upper", "warmup_steps", "interval_steps"}),
    PrunerName.PATIENT: frozenset(),
}
PATIENCE_SETTINGS = frozenset({"patience", "min_delta"})


# --- budget ----------------------------------------------------------------------------------


class MoneyBudget(ApiModel):
    limit: Annotated[float, Field(gt=0, le=MAX_BOUND)]
    """The most the study may spend on GPU time."""
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$", max_length=3)] = "USD"
    """ISO 4217 code of the currency, shown with the amounts."""
    price_per_gpu_hour: Annotated[
        dict[
            Annotated[str, Field(min_length=1, max_length=253)],
            Annotated[float, Field(ge=0, le=MAX_BOUND)],
        ],
        Field(min_length=1, max_length=32),
    ]
    """Price of one GPU-hour by extended resource name, for example {"nvidia.com/gpu": 2.5}."""


class Budget(ApiModel):
    max_trials: Annotated[int, Field(gt=0, le=MAX_COUNT)] | None = None
    """Trials to start at most (warm-start results do not count)."""
    parallelism: Annotated[int, Field(gt=0, le=10_000)] = 1
    """Trials that may run at the same time. May change while the study runs."""
    max_failed_trials: Count | None = None
    """The study fails when more trials than this fail (Failed, TimedOut, MetricsUnavailable)."""
    trial_timeout: Duration | None = None
    """Wall clock a trial may run; its pod gets activeDeadlineSeconds and the trial is TimedOut.
    Required with maxGpuHours or money: it bounds what a trial can cost."""
    pending_timeout: Duration | None = None
    """A trial whose pod stays Pending (unschedulable, image pull errors) longer fails."""
    metrics_timeout: Duration | None = None
    """A running trial that reports nothing for this long is stopped and fails."""
    max_duration: Duration | None = None
    """Wall clock for the whole study, from its start; running trials are stopped then."""
    max_gpu_hours: Annotated[float, Field(gt=0, le=MAX_BOUND)] | None = None
    """GPU-hours the study may use: GPUs requested by a trial pod times its running time."""
    money: MoneyBudget | None = None
    """A money budget computed from GPU-hours and a price table."""
    patience: Annotated[int, Field(gt=0, le=MAX_COUNT)] | None = None
    """Complete the study after this many completed trials in a row without a new best."""


# --- trial template --------------------------------------------------------------------------

Quantity = int | str


class ResourceRequirements(OpenModel):
    limits: dict[str, Quantity] | None = None
    """Resource limits, for example {"nvidia.com/gpu": 1}."""
    requests: dict[str, Quantity] | None = None
    """Resource requests."""


class EnvVar(OpenModel):
    name: str
    """Environment variable name."""
    value: str | None = None
    """Its value."""


class Container(OpenModel):
    name: Annotated[str, Field(min_length=1)]
    """Container name."""
    image: str | None = None
    """Container image of the trainer."""
    command: list[str] | None = None
    """Entrypoint; ${params.<name>} is replaced by the trial's value."""
    args: list[str] | None = None
    """Arguments; ${params.<name>} is replaced by the trial's value."""
    env: list[EnvVar] | None = None
    """Environment; Kubetune adds KUBETUNE_PARAMS and KUBETUNE_PARAM_<NAME>."""
    resources: ResourceRequirements | None = None
    """Resources; GPUs requested here are what GPU-hour and money budgets count."""


DEFAULT_TRIAL_GRACE_SECONDS = 10
"""terminationGracePeriodSeconds of a trial pod whose template sets none (Kubernetes' own default
is 30): a stopped trainer's GPUs count until its pod has terminated, so the grace period is
part of every trial's worst case."""


KUBELET_MINIMUM_GRACE_SECONDS = 2
"""The kubelet gives a container at least this long between SIGTERM and SIGKILL, whatever the
pod's grace period says (kuberuntime's minimumGracePeriodInSeconds)."""


class PodSpec(OpenModel):
    containers: Annotated[list[Container], Field(min_length=1)]
    """The containers of a trial pod; the first one is the trainer."""
    restart_policy: Literal["Never", "OnFailure"] | None = None
    """Never (default) or OnFailure; Always would keep a trial from ever finishing."""
    termination_grace_period_seconds: Annotated[int, Field(ge=0)] | None = None
    """Seconds a stopped trainer gets between SIGTERM and SIGKILL; 10 when not set. Counted in
    each trial's worst case for GPU-hour and money budgets."""

    @property
    def grace_seconds(self) -> int:
        """The grace period trial pods get."""
        if self.termination_grace_period_seconds is None:
            return DEFAULT_TRIAL_GRACE_SECONDS
        return self.termination_grace_period_seconds

    @property
    def stop_seconds(self) -> int:
        """The longest a stopped trial pod may still run: its grace period, and never less
        than the kubelet's minimum."""
        return max(self.grace_seconds, KUBELET_MINIMUM_GRACE_SECONDS)


class TemplateMetadata(ApiModel):
    labels: dict[str, str] | None = None
    """Labels for each trial pod (Kubetune adds its own)."""
    annotations: dict[str, str] | None = None
    """Annotations for each trial pod."""


class TrialTemplate(ApiModel):
    metadata: TemplateMetadata | None = None
    """Labels and annotations of each trial pod."""
    spec: PodSpec
    """The pod spec of one training run (core/v1 PodSpec)."""

    def gpu_resources(self, price_table: Mapping[str, float] | None = None) -> dict[str, int]:
        """GPUs a trial pod asks for, by extended resource name, summed over its containers.

        A resource counts as a GPU when the price table names it or its name ends in "/gpu"
        (nvidia.com/gpu, amd.com/gpu). Extended resources are whole numbers and their requests
        equal their limits, so the limit is read, or the request when no limit is given.
        Raises ValueError for an amount that is not a whole number.
        """
        prices = price_table or {}
        gpus: dict[str, int] = {}
        for container in self.spec.containers:
            resources = container.resources
            if resources is None:
                continue
            amounts = {**(resources.requests or {}), **(resources.limits or {})}
            for name, amount in amounts.items():
                if name in prices or name.endswith("/gpu"):
                    if not str(amount).isdigit():
                        raise ValueError(f"{name}: {amount!r} is not a whole number of devices")
                    gpus[name] = gpus.get(name, 0) + int(str(amount))
        return gpus

    def money_per_hour(self, price_table: Mapping[str, float]) -> float:
        """What one running hour of a trial pod costs at these prices per GPU-hour. Raises
        ValueError as gpu_resources does."""
        gpus = self.gpu_resources(price_table)
        return sum(count * price_table.get(name, 0.0) for name, count in gpus.items())


class PodRetention(ApiModel):
    succeeded: Count = 20
    """Pods kept of trials that ended Succeeded or Pruned, the most recently ended ones."""
    failed: Count = 100
    """Pods kept of trials that ended Failed, TimedOut, MetricsUnavailable or Stopped, the most
    recently ended ones: their logs are what debugging needs."""


# --- the study -------------------------------------------------------------------------------


class TuningStudySpec(ApiModel):
    objective: Objective
    """What to optimize."""
    search_space: Annotated[list[Parameter], Field(min_length=1, max_length=MAX_PARAMETERS)]
    """The hyperparameters and their ranges."""
    algorithm: Algorithm = Algorithm()
    """How configurations are suggested."""
    pruner: Pruner = Pruner()
    """How hopeless trials are stopped early."""
    budget: Budget = Budget()
    """Limits on trials, parallelism, failures, time, GPU-hours and money."""
    warm_start: WarmStart | None = None
    """Configurations to try first, results of earlier runs, and earlier studies to learn
    from."""
    reevaluation: Reevaluation | None = None
    """Once the search ends (for any reason but failure), re-run the best configurations with
    new seeds and recommend the one whose held-out metric is best on average
    (status.recommendation). The re-runs are trials of their own that never inform the
    search."""
    trial_template: TrialTemplate
    """The pod each trial runs."""
    pod_retention: PodRetention = PodRetention()
    """How many pods of ended trials stay in the cluster (with their logs); older ones are
    deleted, the best trial's always stays. May change while the study runs."""
    metrics_source: MetricsSource | None = None
    """Where trial metrics come from: by default the trainer's reports (pod annotation,
    termination message); with prometheus, PromQL queries. May change while the study runs
    (to fix a URL or a query)."""


IMMUTABLE_SPEC_FIELDS = (
    "objective",
    "search_space",
    "algorithm",
    "pruner",
    "warm_start",
    "reevaluation",
    "trial_template",
)
"""Fields that may not change once a study exists: changing them would make the trials already
run incomparable. Budget (parallelism included) may change at any time."""


class StudyPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    REEVALUATING = "Reevaluating"
    COMPLETED = "Completed"
    FAILED = "Failed"
    INVALID = "Invalid"


class ConditionType(StrEnum):
    VALID = "Valid"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    METRICS_SOURCE = "MetricsSource"
    SEARCH_ENDED = "SearchEnded"
    WARM_START = "WarmStart"


class StudyConditionReason(StrEnum):
    """Why a study is in its phase; the reason of its Completed or Failed condition."""

    VALID = "SpecValid"
    INVALID = "SpecInvalid"
    TRIALS_RUNNING = "TrialsRunning"
    GOAL_REACHED = "GoalReached"
    MAX_TRIALS_REACHED = "MaxTrialsReached"
    MAX_DURATION_REACHED = "MaxDurationReached"
    GPU_HOURS_EXHAUSTED = "GpuHoursExhausted"
    MONEY_EXHAUSTED = "MoneyExhausted"
    PATIENCE_EXHAUSTED = "PatienceExhausted"
    SEARCH_SPACE_EXHAUSTED = "SearchSpaceExhausted"
    TOO_MANY_FAILURES = "TooManyFailures"
    NO_TRIAL_SUCCEEDED = "NoTrialSucceeded"
    METRICS_SOURCE_READY = "MetricsSourceReady"
    METRICS_QUERY_INVALID = "MetricsQueryInvalid"
    METRICS_SOURCE_UNREACHABLE = "MetricsSourceUnreachable"
    REEVALUATING = "Reevaluating"
    WAITING_FOR_STUDIES = "WaitingForStudies"
    TRIALS_IMPORTED = "TrialsImported"


class Condition(ApiModel):
    type: str
    """Valid, Running, Completed, Failed, MetricsSource (whether the last Prometheus read
    worked), SearchEnded (the search is over and why; the re-evaluation runs), or WarmStart
    (the trials imported from spec.warmStart.fromStudies, or the studies waited for)."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: str
    """A CamelCase word saying why, for example GoalReached or GpuHoursExhausted."""
    message: str = ""
    """A sentence for people."""
    last_transition_time: datetime
    """When the status last changed."""
    observed_generation: int | None = None
    """The spec generation the condition was computed from."""


class TrialCounts(ApiModel):
    total: int = 0
    """Trials created."""
    pending: int = 0
    """Trials whose pod has not started."""
    running: int = 0
    """Trials whose pod runs."""
    succeeded: int = 0
    """Trials completed with a value."""
    pruned: int = 0
    """Trials stopped early by the pruner."""
    failed: int = 0
    """Trials whose pod failed or that reported nothing in time."""
    metrics_unavailable: int = 0
    """Trials whose pod succeeded without reporting the objective."""
    timed_out: int = 0
    """Trials stopped by trialTimeout."""
    stopped: int = 0
    """Trials stopped because the study ended (budget, goal, ...)."""


class BestTrial(ApiModel):
    name: str
    """The TuningTrial object."""
    number: int
    """Its trial number."""
    params: dict[str, ParameterValue]
    """Its parameters."""
    value: float | None = None
    """Its objective value (single objective)."""
    values: list[float] | None = None
    """Its objective values (several objectives)."""


class ParetoTrial(ApiModel):
    name: str
    """The TuningTrial object."""
    number: int
    """Its trial number."""
    values: list[float]
    """Its objective values."""


class MetricSummary(ApiModel):
    metric: str
    """The metric re-evaluated."""
    values: Annotated[list[float], Field(max_length=MAX_REPEATS)] = []
    """Its value in each re-run that reported it, in the order of `seeds`."""
    mean: float | None = None
    """The mean of values."""
    std: float | None = None
    """Their sample standard deviation (0 with a single value)."""
    validation_value: float | None = None
    """The configuration's objective value in the search (the matching objective)."""


class ReevaluatedConfiguration(ApiModel):
    trial: int
    """The search trial whose configuration was re-run."""
    params: dict[str, ParameterValue]
    """Its parameters."""
    seeds: Annotated[list[int], Field(max_length=MAX_REPEATS)] = []
    """The seed of each re-run that reported, in the order of the values."""
    failed_runs: int = 0
    """Re-runs that ended without a value (failed, timed out, stopped)."""
    scores: Annotated[list[MetricSummary], Field(max_length=MAX_OBJECTIVES)] = []
    """The reevaluation metric (one objective), or every objective (several)."""


class Recommendation(ApiModel):
    trial: int
    """The search trial whose configuration wins on the re-evaluation's mean."""
    params: dict[str, ParameterValue]
    """Its parameters: the configuration to use."""
    metric: str
    """The metric it was chosen by."""
    values: Annotated[list[float], Field(max_length=MAX_REPEATS)]
    """The metric in each re-run, one per seed."""
    seeds: Annotated[list[int], Field(max_length=MAX_REPEATS)]
    """The seed of each re-run, in the order of values."""
    mean: float
    """The mean of values."""
    std: float
    """Their sample standard deviation (0 with a single value)."""
    validation_value: float | None = None
    """The configuration's objective value in the search."""
    generalization_gap: float | None = None
    """How much worse the re-evaluated mean is than the search's value, in the metric's
    direction (positive: the search's value was optimistic; validation overfitting or a lucky
    seed)."""


class ReevaluationStatus(ApiModel):
    runs: int = 0
    """Re-runs planned (configurations x repeats)."""
    finished: int = 0
    """Re-runs that have ended."""
    configurations: Annotated[
        list[ReevaluatedConfiguration], Field(max_length=MAX_REEVALUATED_TRIALS)
    ] = []
    """Each re-evaluated configuration, best first by its mean (several objectives: in the
    Pareto front's order)."""


class BudgetUsage(ApiModel):
    trials: int = 0
    """Trials started."""
    max_trials: int | None = None
    """The limit, when set."""
    gpu_hours: float = 0.0
    """GPU-hours used so far, running trials included."""
    max_gpu_hours: float | None = None
    """The limit, when set."""
    money: float = 0.0
    """Money spent so far, running trials included."""
    money_limit: float | None = None
    """The limit, when set."""
    currency: str | None = None
    """The currency of money and moneyLimit."""
    elapsed_seconds: float = 0.0
    """Wall clock since the study started."""
    max_duration_seconds: float | None = None
    """The limit, when set."""


class TuningStudyStatus(ApiModel):
    phase: StudyPhase = StudyPhase.PENDING
    """Pending, Running, Reevaluating (the search ended; the best configurations run again
    with new seeds), Completed, Failed or Invalid."""
    conditions: list[Condition] = []
    """Valid, Running, Completed and Failed, with reasons."""
    observed_generation: int | None = None
    """The spec generation this status reflects."""
    start_time: datetime | None = None
    """When the first trial was started."""
    completion_time: datetime | None = None
    """When the study completed or failed."""
    trials: TrialCounts = TrialCounts()
    """Trials by state."""
    progress: str = ""
    """Finished trials over maxTrials, for kubectl get (for example 12/50)."""
    best_trial: BestTrial | None = None
    """The best trial so far (single objective); with several objectives, the first trial of
    paretoFront (the best in the first objective)."""
    pareto_front: Annotated[list[ParetoTrial], Field(max_length=MAX_PARETO_FRONT_IN_STATUS)] = []
    """The Pareto-optimal trials (several objectives), best first in the first objective's
    direction, ties by trial number; the first 50 of them when the front is larger."""
    pareto_front_size: int = 0
    """Trials on the Pareto front, all of them (0 with a single objective)."""
    budget: BudgetUsage = BudgetUsage()
    """What the study has used of its budget."""
    importances: dict[str, float] | None = None
    """Parameter importances (PED-ANOVA), once enough trials completed."""
    importances_trials: int | None = None
    """Completed trials the importances were computed from."""
    reevaluation: ReevaluationStatus | None = None
    """The re-runs of the best configurations (spec.reevaluation), once the search ended."""
    recommendation: Recommendation | None = None
    """The configuration to use: the best on average over the re-runs (single objective)."""
    message: str = ""
    """The latest thing a person should know, for example why the study is Invalid."""
    spec_fingerprints: dict[str, str] = {}
    """A hash of each immutable spec field as the study started, to refuse later changes."""
    kopf: dict[str, Any] = {}
    """kopf's bookkeeping (progress of handlers); not for users."""


class ObjectMeta(OpenModel):
    name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    creation_timestamp: datetime | None = None
    owner_references: list[dict[str, Any]] | None = None
    generation: int | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class TuningStudy(ApiModel):
    api_version: Literal["kubetune.io/v1alpha1"] = "kubetune.io/v1alpha1"
    kind: Literal["TuningStudy"] = "TuningStudy"
    metadata: ObjectMeta = ObjectMeta()
    spec: TuningStudySpec
    status: TuningStudyStatus | None = None

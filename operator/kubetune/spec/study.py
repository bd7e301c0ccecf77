"""The TuningStudy API: the object and its spec. The models of the spec's parts are the
modules beside this one (objective, search_space, algorithm, pruner, budget_spec, warm_start,
reevaluation, trial_template, metrics_source), what the operator reports is study_status's.

These models are the single source of truth: the CRD schema in crds/ is generated from them,
`kubetune validate` parses manifests with them, and the engine and controller read them.
Rules a schema cannot express (low < high, a step that divides the range, ...) live in
kubetune.spec.rules and kubetune.spec.search_space_rules.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from kubetune.spec.algorithm import Algorithm
from kubetune.spec.base import ApiModel, OpenModel
from kubetune.spec.bounds import MAX_PARAMETERS, Count
from kubetune.spec.budget_spec import Budget
from kubetune.spec.metrics_source import MetricsSource
from kubetune.spec.objective import Objective
from kubetune.spec.pruner import Pruner
from kubetune.spec.reevaluation import Reevaluation
from kubetune.spec.search_space import Parameter
from kubetune.spec.study_status import TuningStudyStatus
from kubetune.spec.trial_template import TrialTemplate
from kubetune.spec.warm_start import WarmStart


class PodRetention(ApiModel):
    succeeded: Count = 20
    """Pods kept of trials that ended Succeeded or Pruned, the most recently ended ones."""
    failed: Count = 100
    """Pods kept of trials that ended Failed, TimedOut, MetricsUnavailable or Stopped, the most
    recently ended ones: their logs are what debugging needs."""


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

"""The limits of a study (spec.budget): trials, parallelism, failures, time, GPU-hours and
money. kubetune.budget accounts for them.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from kubetune.spec.base import ApiModel
from kubetune.spec.bounds import MAX_BOUND, MAX_COUNT, Count
from kubetune.spec.duration import Duration


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

"""How a study suggests configurations (spec.algorithm): the Optuna sampler, its settings, and
which settings apply to which sampler.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from kubetune.spec.base import ApiModel
from kubetune.spec.bounds import MAX_COUNT, Count, PositiveCount


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

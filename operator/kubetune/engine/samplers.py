"""Which Optuna sampler a study's algorithm becomes, built afresh for each trial number.

The seed rule, on which rebuild exactness rests:

An Optuna sampler keeps its random state in memory, so a sampler rebuilt after an operator
restart would replay the suggestions it made before. Kubetune therefore makes every ask a pure
function of (spec, study seed, trial number, stored trials): the sampler for trial `n` is built
for that ask alone, seeded with `trial_seed(seed, n)`, a stable mix (SplitMix64) of the study
seed and the trial number. Nothing a sampler learns in memory outlives one ask (GPSampler's
kernel cache and CmaEsSampler's warning flag included), and what samplers keep in storage (trial
and study system attributes) is persisted with the trial records and replayed on rebuild.

Two exceptions keep the study seed, because it defines something that stored attributes refer to:
- grid: GridSampler's seed shuffles the grid, and each trial's `grid_id` system attribute indexes
  that shuffled grid. Only its in-memory RNG (which picks an unvisited point once the first pass
  is over) gets the per-trial seed. The grid itself is built once per study.
- qmc: QMCSampler's seed defines the scrambled sequence, and its position in the sequence is a
  counter in the study's system attributes. Its independent sampler (for parameters outside the
  first trial's space) gets the per-trial seed.

`seed` is spec.algorithm.seed, or a default the controller derives from the study's uid, so even
a study without a seed rebuilds exactly.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from optuna.exceptions import ExperimentalWarning
from optuna.samplers import (
    BaseSampler,
    CmaEsSampler,
    GPSampler,
    GridSampler,
    NSGAIIISampler,
    NSGAIISampler,
    QMCSampler,
    RandomSampler,
    TPESampler,
)
from optuna.samplers._lazy_random_state import LazyRandomState

from kubetune.spec.algorithm import ALGORITHM_SETTINGS, Algorithm, AlgorithmName, QmcType
from kubetune.spec.bounds import MAX_GRID_POINTS
from kubetune.spec.objective import Objective
from kubetune.spec.search_space import Parameter, ParameterType

from . import space

_GOLDEN_GAMMA = 0x9E3779B97F4A7C15
_MASK64 = 2**64 - 1


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial `number`'s sampler: the upper 32 bits of SplitMix64's output number
    `number + 1` for the study seed (Steele, Lea and Flood 2014; Vigna's reference code).

    Stable across processes and platforms (never Python's salted hash()), and cheaper than a
    cryptographic hash; nearby trial numbers get unrelated seeds.
    """
    z = (seed + (number + 1) * _GOLDEN_GAMMA) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 32


def _settings(algorithm: Algorithm) -> dict[str, Any]:
    """The algorithm settings the user set (unset ones keep Optuna's defaults)."""
    allowed = ALGORITHM_SETTINGS[algorithm.name]
    return {
        name: getattr(algorithm, name)
        for name in sorted(allowed)
        if getattr(algorithm, name) is not None
    }


def grid_search_space(search_space: Sequence[Parameter]) -> dict[str, list[Any]]:
    """Every searched parameter's discrete values, as GridSampler takes them."""
    grid = {
        p.name: space.grid_values(p, i)
        for i, p in enumerate(search_space)
        if p.type is not ParameterType.FIXED
    }
    size = grid_size(grid)
    # Validation refuses such a spec; checked again because GridSampler materializes the
    # whole grid, and a larger one would not fit in the operator's memory.
    if size > MAX_GRID_POINTS:
        raise ValueError(
            f"spec.searchSpace: the grid has {size} points, more than {MAX_GRID_POINTS};"
            " use larger steps, fewer parameters, or another algorithm"
        )
    return grid


def grid_size(grid: dict[str, list[Any]]) -> int:
    """How many points a grid has: the product of its axes."""
    size = 1
    for values in grid.values():
        size *= len(values)
    return size


def create_sampler(
    algorithm: Algorithm,
    objective: Objective,
    search_space: Sequence[Parameter],
    number: int,
    seed: int,
) -> BaseSampler:
    """The sampler that asks trial `number` (see the module docstring for the seed rule).

    For grid prefer `Samplers`, which builds the (possibly large) grid once per study.
    """
    del objective  # Optuna reads the directions from the study; kept for a uniform signature.
    settings = _settings(algorithm)
    per_trial = trial_seed(seed, number)
    name = algorithm.name
    # Some samplers are marked experimental; being built for every ask, they would warn each time.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        if name is AlgorithmName.RANDOM:
            return RandomSampler(seed=per_trial)
        if name is AlgorithmName.GRID:
            sampler = GridSampler(grid_search_space(search_space), seed=seed)
            sampler._rng = LazyRandomState(per_trial)
            return sampler
        if name is AlgorithmName.TPE:
            return TPESampler(
                seed=per_trial,
                n_startup_trials=settings.get("startup_trials", 10),
                n_ei_candidates=settings.get("candidates", 24),
                multivariate=settings.get("multivariate"),
                group=settings.get("group", False),
                constant_liar=settings.get("constant_liar", True),
            )
        if name is AlgorithmName.GP:
            return GPSampler(
                seed=per_trial,
                n_startup_trials=settings.get("startup_trials", 10),
                deterministic_objective=settings.get("deterministic_objective", False),
            )
        if name is AlgorithmName.CMAES:
            return CmaEsSampler(
                seed=per_trial,
                n_startup_trials=settings.get("startup_trials", 1),
                popsize=settings.get("population_size"),
                use_separable_cma=settings.get("separable", False),
                with_margin=settings.get("with_margin", False),
            )
        if name is AlgorithmName.QMC:
            return QMCSampler(
                qmc_type=str(settings.get("qmc_type", QmcType.SOBOL)),
                scramble=settings.get("scramble", False),
                seed=seed,
                independent_sampler=RandomSampler(seed=per_trial),
            )
        if name in (AlgorithmName.NSGA2, AlgorithmName.NSGA3):
            genetic: dict[str, Any] = {
                "population_size": settings.get("population_size", 50),
                "mutation_prob": settings.get("mutation_prob"),
                "crossover_prob": settings.get("crossover_prob", 0.9),
                "swapping_prob": settings.get("swapping_prob", 0.5),
            }
            if name is AlgorithmName.NSGA2:
                return NSGAIISampler(seed=per_trial, **genetic)
            return NSGAIIISampler(seed=per_trial, **genetic)
    raise ValueError(f"spec.algorithm.name: unknown algorithm {name!r}")


class Samplers:
    """The study's sampler, made ready to ask trial `n` as if it had been built for it alone.

    Building a sampler per ask is the reference semantics (`create_sampler`), but numpy seeds a
    fresh RandomState from OS entropy before Optuna reseeds it, which alone costs more than a
    random or NSGA-II ask. So one sampler is built per study and, before each ask, every random
    state it holds is reseeded in place with `trial_seed(seed, n)` and the only in-memory cache that
    changes results (GPSampler's kernel parameters) is dropped. The intersection-search-space
    caches of TPE and CMA-ES are kept: they equal a recomputation from the stored trials. A test
    checks that this gives exactly what a fresh `create_sampler` gives, sampler by sampler.
    """

    def __init__(
        self,
        algorithm: Algorithm,
        objective: Objective,
        search_space: Sequence[Parameter],
        seed: int,
    ) -> None:
        self._seed = seed
        self.grid_size: int | None = None
        if algorithm.name is AlgorithmName.GRID:
            self.grid_size = grid_size(grid_search_space(search_space))
        self._sampler = create_sampler(algorithm, objective, search_space, 0, seed)
        self._random_states = _random_states(self._sampler)
        self._is_gp = isinstance(self._sampler, GPSampler)

    @property
    def sampler(self) -> BaseSampler:
        """The sampler as last prepared (tell uses it: after_trial draws no random numbers)."""
        return self._sampler

    def for_trial(self, number: int) -> BaseSampler:
        per_trial = trial_seed(self._seed, number)
        for state in self._random_states:
            state.rng.seed(per_trial)
        if self._is_gp:
            assert isinstance(self._sampler, GPSampler)
            # The kernel parameters of the last fit seed the next fit: history a rebuild lacks.
            self._sampler._gprs_cache_list = None
            self._sampler._constraints_gprs_cache_list = None
        return self._sampler


def _random_states(sampler: BaseSampler) -> list[LazyRandomState]:
    """Every random state inside a sampler (its own, its fallback sampler's, its strategies')."""
    found: list[LazyRandomState] = []
    seen: set[int] = set()
    stack: list[object] = [sampler]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, LazyRandomState):
            found.append(item)
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif type(item).__module__.startswith("optuna.") and hasattr(item, "__dict__"):
            stack.extend(vars(item).values())
    return found

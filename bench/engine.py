"""Benchmark: ask+tell latency through kubetune's Engine against bare Optuna, and rebuild time.

For each sampler and study size, two studies are prefilled with the same completed trials: an
Engine rebuilt from TuningTrial records, and a bare Optuna study with the same sampler settings
built once (as a long-running Optuna process would hold it). Then N ask+tell cycles run on each,
interleaved side by side so that both see the same machine load. Finally it times
Engine.rebuild from 10,000 TuningTrial records.

    .venv/bin/python bench/engine.py                       # 100/1000/3000 trials, all samplers
    .venv/bin/python bench/engine.py --sizes 100 --cycles 10 --rebuild 1000   # a quick look
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.samplers import (
    BaseSampler,
    CmaEsSampler,
    GPSampler,
    NSGAIISampler,
    QMCSampler,
    RandomSampler,
    TPESampler,
)

from kubetune.engine import Engine
from kubetune.spec.study import TuningStudySpec
from kubetune.spec.trial import TrialState, TuningTrial, TuningTrialSpec, TuningTrialStatus

SEED = 42
SAMPLERS = ("random", "tpe", "cmaes", "qmc", "nsga2", "gp")
GP_MAX_SIZE = 100  # GPSampler's cost grows cubically; larger sizes take minutes per ask.


def spec_for(algorithm: str) -> TuningStudySpec:
    objectives = 2 if algorithm == "nsga2" else 1
    return TuningStudySpec.model_validate(
        {
            "objective": {
                "metrics": [
                    {"name": f"loss{i}", "direction": "minimize"} for i in range(objectives)
                ]
            },
            "searchSpace": [
                {"name": "lr", "type": "float", "low": 1e-5, "high": 1e-1, "log": True},
                {"name": "dropout", "type": "float", "low": 0.0, "high": 0.5},
                {"name": "layers", "type": "int", "low": 1, "high": 8},
                {"name": "width", "type": "int", "low": 16, "high": 512, "step": 16},
            ],
            "algorithm": {"name": algorithm, "seed": SEED},
            "trialTemplate": {"spec": {"containers": [{"name": "trainer", "image": "t:1"}]}},
        }
    )


def bare_sampler(algorithm: str) -> BaseSampler:
    """The sampler a plain Optuna user would create with the engine's settings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        factories: dict[str, Callable[[], BaseSampler]] = {
            "random": lambda: RandomSampler(seed=SEED),
            "tpe": lambda: TPESampler(seed=SEED, constant_liar=True),
            "cmaes": lambda: CmaEsSampler(seed=SEED),
            "qmc": lambda: QMCSampler(seed=SEED),
            "nsga2": lambda: NSGAIISampler(seed=SEED),
            "gp": lambda: GPSampler(seed=SEED),
        }
        return factories[algorithm]()


def objective(params: dict[str, Any], objectives: int) -> list[float]:
    base = (params["dropout"] - 0.2) ** 2 + abs(params["layers"] - 4) / 10 + params["lr"] * 3
    return [base + i * params["width"] / 512 for i in range(objectives)]


def random_params(rng: random.Random) -> dict[str, Any]:
    return {
        "lr": 10 ** rng.uniform(-5, -1),
        "dropout": rng.uniform(0.0, 0.5),
        "layers": rng.randint(1, 8),
        "width": 16 * rng.randint(1, 32),
    }


def records(count: int, objectives: int, study: str = "bench") -> list[TuningTrial]:
    rng = random.Random(SEED)
    out = []
    for number in range(count):
        params = random_params(rng)
        out.append(
            TuningTrial(
                spec=TuningTrialSpec(study=study, number=number, params=params),
                status=TuningTrialStatus(
                    state=TrialState.SUCCEEDED, values=objective(params, objectives)
                ),
            )
        )
    return out


def bare_study(algorithm: str, spec: TuningStudySpec, prefill: list[TuningTrial]) -> optuna.Study:
    from kubetune.engine.space import distributions

    dists = distributions(spec.search_space)
    study = optuna.create_study(
        sampler=bare_sampler(algorithm),
        directions=["minimize"] * len(spec.objective.metrics),
        study_name="bench",
    )
    study.add_trials(
        optuna.trial.create_trial(
            params=dict(r.spec.params), distributions=dists, values=r.status.values
        )
        for r in prefill
    )
    return study


def bare_cycle(study: optuna.Study, objectives: int) -> None:
    trial = study.ask()
    params = {
        "lr": trial.suggest_float("lr", 1e-5, 1e-1, log=True),
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        "layers": trial.suggest_int("layers", 1, 8),
        "width": trial.suggest_int("width", 16, 512, step=16),
    }
    study.tell(trial, objective(params, objectives))


def engine_cycle(engine: Engine, objectives: int) -> None:
    suggestion = engine.ask()
    engine.tell(suggestion.number, TrialState.SUCCEEDED, objective(suggestion.params, objectives))


def measure(algorithm: str, size: int, cycles: int) -> tuple[float, float]:
    """Median seconds per ask+tell (engine, bare), interleaved cycle by cycle."""
    spec = spec_for(algorithm)
    objectives = len(spec.objective.metrics)
    prefill = records(size, objectives)
    # The bare study is built first: built right after an Engine.rebuild, its trials landed in
    # the holes the rebuild's temporaries left, and samplers that scan every trial per ask
    # (NSGA-II, CMA-ES, QMC) then ran 10-20% slower on it at 3000 trials than on the same
    # study built first, which flattered the engine.
    study = bare_study(algorithm, spec, prefill)
    engine = Engine.rebuild(spec, "bench", SEED, prefill)
    engine_times: list[float] = []
    bare_times: list[float] = []
    for i in range(cycles):
        # Alternate which goes first so that neither always runs on a warmer cache.
        order = [("engine", engine_cycle), ("bare", bare_cycle)]
        if i % 2:
            order.reverse()
        for name, cycle in order:
            target: Any = engine if name == "engine" else study
            start = time.perf_counter()
            cycle(target, objectives)
            elapsed = time.perf_counter() - start
            (engine_times if name == "engine" else bare_times).append(elapsed)
    return statistics.median(engine_times), statistics.median(bare_times)


def measure_rebuild(count: int) -> float:
    spec = spec_for("tpe")
    prefill = records(count, 1)
    gc.collect()
    start = time.perf_counter()
    Engine.rebuild(spec, "bench", SEED, prefill)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,3000", help="completed trials to prefill")
    parser.add_argument("--cycles", type=int, default=20, help="ask+tell cycles per measurement")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--rebuild", type=int, default=10_000, help="records to rebuild from")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    sizes = [int(s) for s in args.sizes.split(",") if s]

    print(f"{'sampler':8} {'trials':>6} {'engine ms':>10} {'optuna ms':>10} {'ratio':>6}")
    for algorithm in args.samplers.split(","):
        for size in sizes:
            if algorithm == "gp" and size > GP_MAX_SIZE:
                continue
            cycles = min(args.cycles, 5) if algorithm == "gp" else args.cycles
            engine_s, bare_s = measure(algorithm, size, cycles)
            print(
                f"{algorithm:8} {size:>6} {engine_s * 1e3:>10.2f} {bare_s * 1e3:>10.2f}"
                f" {engine_s / bare_s:>6.2f}",
                flush=True,
            )
    if args.rebuild:
        seconds = measure_rebuild(args.rebuild)
        print(f"\nrebuild from {args.rebuild} TuningTrial records: {seconds:.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

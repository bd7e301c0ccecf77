"""bench/ runs as scripts (`python bench/engine.py`), which puts bench/ first on sys.path: a file
there named as a standard module (bench/operator.py once) would replace it for every library
the benchmark imports."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_no_benchmark_is_named_as_a_standard_module() -> None:
    names = {path.stem for path in BENCH.glob("*.py")}
    assert names, "bench/ has no benchmarks"
    assert names & sys.stdlib_module_names == set()

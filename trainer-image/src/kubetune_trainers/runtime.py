"""What both trainers share: the device, seeding, mixed precision, timing, and the entry point
that turns bad hyperparameters into a clear error and exit status 2."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from kubetune_trainers.params import Param, ParameterError, read_params


class ReportSink(Protocol):
    """Where a trainer's reports go: kubetune_report.Reporter, or a recorder in tests."""

    def report(self, step: int, **metrics: float) -> None: ...

    def report_final(self, **metrics: float) -> None: ...


class SilentSink:
    """Reports that go nowhere: the sink of a data-parallel rank other than 0."""

    def report(self, step: int, **metrics: float) -> None:
        pass

    def report_final(self, **metrics: float) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Result:
    """What a training run ends with: the final metrics (as reported) and its speed."""

    final: dict[str, float]
    samples: int
    """Training samples processed (sequences for the language model)."""
    seconds: float
    """Time spent in training steps, evaluation excluded."""
    device: str
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


def pick_device(choice: str) -> torch.device:
    """CUDA when asked for or ("auto") available, else the CPU."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise ParameterError("--device=cuda was asked for but torch sees no CUDA device")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def seed_everything(seed: int, device: torch.device) -> torch.Generator:
    """Seed torch (initial weights, dropout) and return the CPU generator for the data order
    and augmentation. The CPU kernels these models use are deterministic for a given thread
    count, so a seed gives identical reports (tests/trainers proves it); on a GPU, atomics in
    some kernels and TF32/bf16 rounding make runs close but not identical."""
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return torch.Generator().manual_seed(seed)


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on a GPU; plain float32 on the CPU (where bf16 is slow and inexact)."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Stopwatch:
    """Seconds spent inside `with stopwatch.running():`, waiting for the GPU to finish."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = 0.0

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds += time.perf_counter() - start

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def log(message: str) -> None:
    print(message, flush=True)


def run_trainer(
    *,
    prog: str,
    description: str,
    params: Sequence[Param],
    train: Callable[[Mapping[str, Any], torch.device, ReportSink], Result],
    checks: Sequence[Callable[[Mapping[str, Any]], str | None]] = (),
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    reports: bool = True,
) -> int:
    """The `python -m kubetune_trainers.<name>` entry point: read the hyperparameters, train,
    report through kubetune_report (unless `reports` is false: a data-parallel rank other than
    0 sends nothing), print the speed. Returns the exit status."""
    from kubetune_report import Reporter

    environ = os.environ if environ is None else environ
    try:
        config, options = read_params(
            params,
            environ,
            sys.argv[1:] if argv is None else argv,
            prog=prog,
            description=description,
            checks=checks,
        )
        device = pick_device(options.device)
    except ParameterError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
    shown = " ".join(f"{name}={value}" for name, value in config.items())
    log(f"{prog}: {shown} on {device}")
    reporter = Reporter.from_environment(environ) if reports else SilentSink()
    try:
        result = train(config, device, reporter)
    finally:
        reporter.close()
    final = " ".join(
        f"{name}={value:.4f}" if isinstance(value, float) else f"{name}={value}"
        for name, value in result.final.items()
    )
    log(f"{prog}: final {final}")
    log(
        f"{prog}: {result.samples} samples in {result.seconds:.2f} s on {result.device}: "
        f"{result.samples_per_second:.0f} samples/s"
        + "".join(f", {value:.0f} {name}" for name, value in result.extra.items())
    )
    return 0

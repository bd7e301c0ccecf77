"""Data-parallel training across the pods of a trial (torch.distributed), read from the
environment a multi-pod trial (or torchrun) sets: WORLD_SIZE, RANK (else JOB_COMPLETION_INDEX),
MASTER_ADDR, MASTER_PORT.

One process per pod. With WORLD_SIZE unset or 1 a trainer runs alone and none of this is used.
TRAINER_DIST_BACKEND overrides the backend (default: nccl when training on CUDA, else gloo);
TRAINER_DIST_TIMEOUT (seconds) bounds how long a rank waits for its peers, at the rendezvous
and in every collective, so that a rank whose peer died exits instead of hanging. Neither
starts with KUBETUNE_: a study's template may not set that prefix.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from kubetune_trainers.params import ParameterError

BACKEND_ENV = "TRAINER_DIST_BACKEND"
TIMEOUT_ENV = "TRAINER_DIST_TIMEOUT"
BACKENDS = ("gloo", "nccl")
DEFAULT_TIMEOUT_SECONDS = 600.0
"""Generous for the rendezvous (a trial's pods may start minutes apart, each pulling the
image) and still a bound on a collective whose peer is gone."""


@dataclass(frozen=True)
class World:
    """This process's place in a data-parallel run of `size` processes."""

    rank: int
    size: int
    backend: str | None
    """As asked for in TRAINER_DIST_BACKEND; None picks one from the device."""
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS

    @property
    def reports(self) -> bool:
        """Whether this rank reports metrics: only rank 0 (the operator reads the index-0 pod)."""
        return self.rank == 0

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> World | None:
        """The run WORLD_SIZE and RANK describe, or None when WORLD_SIZE is unset or 1.
        MASTER_ADDR and MASTER_PORT are read by torch (init_method env://)."""
        size_text = environ.get("WORLD_SIZE", "").strip()
        if not size_text:
            return None
        size = _whole(size_text, "WORLD_SIZE", low=1)
        if size == 1:
            return None
        # Kubernetes numbers an Indexed Job's pods with JOB_COMPLETION_INDEX; RANK wins.
        rank_variable = next(
            (name for name in ("RANK", "JOB_COMPLETION_INDEX") if environ.get(name, "").strip()),
            None,
        )
        if rank_variable is None:
            raise ParameterError(f"WORLD_SIZE={size} needs RANK (or JOB_COMPLETION_INDEX)")
        rank = _whole(environ.get(rank_variable, ""), rank_variable, low=0)
        if rank >= size:
            raise ParameterError(f"{rank_variable}={rank} must be below WORLD_SIZE={size}")
        for variable in ("MASTER_ADDR", "MASTER_PORT"):
            if not environ.get(variable, "").strip():
                raise ParameterError(f"WORLD_SIZE={size} needs {variable} (rank 0's address)")
        backend = environ.get(BACKEND_ENV, "").strip().lower() or None
        if backend is not None and backend not in BACKENDS:
            raise ParameterError(f"{BACKEND_ENV}={backend!r} is not one of {', '.join(BACKENDS)}")
        timeout_text = environ.get(TIMEOUT_ENV, "").strip()
        timeout = DEFAULT_TIMEOUT_SECONDS
        if timeout_text:
            try:
                timeout = float(timeout_text)
            except ValueError:
                timeout = 0.0
            if not timeout > 0:
                raise ParameterError(f"{TIMEOUT_ENV}={timeout_text!r} must be seconds > 0")
        return cls(rank, size, backend, timeout)

    def backend_for(self, device: torch.device) -> str:
        """The backend asked for, else nccl for CUDA tensors and gloo for CPU ones."""
        if self.backend is not None:
            return self.backend
        return "nccl" if device.type == "cuda" else "gloo"

    def start(self, device: torch.device) -> None:
        """Join the process group (blocks until every rank has joined, or the timeout)."""
        dist.init_process_group(
            backend=self.backend_for(device),
            init_method="env://",
            rank=self.rank,
            world_size=self.size,
            timeout=datetime.timedelta(seconds=self.timeout_seconds),
        )

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """`values` summed over every rank (a collective: every rank must call it)."""
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def stop(self) -> None:
        """Leave the process group."""
        if dist.is_initialized():
            dist.destroy_process_group()


def _whole(text: str, variable: str, low: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ParameterError(f"{variable}={text!r} must be a whole number") from None
    if value < low:
        raise ParameterError(f"{variable}={value} must be >= {low}")
    return value

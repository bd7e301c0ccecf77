"""charlm's data-parallel mode, as the pods of a multi-pod trial run it: one process per rank,
rendezvous on 127.0.0.1 (gloo), only rank 0 reporting."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from kubetune.controller.trial_pod import param_env
from kubetune.spec import api
from kubetune_trainers import charlm
from kubetune_trainers.distributed import BACKEND_ENV, TIMEOUT_ENV, World
from kubetune_trainers.params import ParameterError, read_params
from tests.eventually import eventually
from tests.trainers.conftest import ApiServer

TINY = {
    "layers": 1,
    "width": 32,
    "heads": 2,
    "context": 32,
    "batch_size": 16,
    "steps": 20,
    "warmup_steps": 5,
    "eval_interval": 10,
}
EVALUATION = {"val_loss", "val_perplexity", "train_loss"}


class Recorder:
    """Keeps the final report of a run in this process."""

    def __init__(self) -> None:
        self.final: dict[str, float] | None = None

    def report(self, step: int, **metrics: float) -> None:
        pass

    def report_final(self, **metrics: float) -> None:
        self.final = metrics


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Ranks:
    """The trainer's processes of one run, each with its own output and termination log."""

    def __init__(self, tmp_path: Path, server: ApiServer, params: Mapping[str, Any]) -> None:
        self.tmp_path = tmp_path
        self.server = server
        self.params = params
        self.port = free_port()
        self.processes: dict[int, subprocess.Popen[str]] = {}
        self.kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")

    def termination_log(self, rank: int) -> Path:
        return self.tmp_path / f"termination-log-{rank}"

    def output(self, rank: int) -> str:
        return (self.tmp_path / f"rank-{rank}.out").read_text()

    def start(self, rank: int, extra: Mapping[str, str] | None = None) -> None:
        environ = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.tmp_path),
            "OMP_NUM_THREADS": "1",
            "KUBECONFIG": str(self.kubeconfig),
            api.POD_NAME_ENV: f"trial-{rank}",
            api.POD_NAMESPACE_ENV: "ml",
            api.STUDY_ENV: "study",
            api.TRIAL_ENV: "study-0",
            api.TERMINATION_LOG_ENV: str(self.termination_log(rank)),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(self.port),
            "WORLD_SIZE": "2",
            "RANK": str(rank),
            **{item["name"]: item["value"] for item in param_env(dict(self.params))},
            **(extra or {}),
        }
        with (self.tmp_path / f"rank-{rank}.out").open("w") as output:
            self.processes[rank] = subprocess.Popen(
                [sys.executable, "-m", "kubetune_trainers.charlm", "--device=cpu"],
                env=environ,
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def await_output(self, rank: int, text: str, timeout: float = 60) -> None:
        eventually(
            lambda: text in self.output(rank),
            timeout=timeout,
            message=f"rank {rank} printing {text!r}",
        )

    def wait(self, rank: int, timeout: float = 120) -> int:
        return self.processes[rank].wait(timeout=timeout)

    def kill_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def ranks(tmp_path: Path, api_server: ApiServer) -> Iterator[Ranks]:
    started = Ranks(tmp_path, api_server, TINY)
    try:
        yield started
    finally:
        started.kill_all()


def test_two_ranks_train_in_step_and_only_rank_0_reports(
    ranks: Ranks, api_server: ApiServer
) -> None:
    # Rank 1 first: its pod may well start before rank 0's, whose address it must wait for.
    ranks.start(1)
    ranks.await_output(1, "rank 1 of 2")
    ranks.start(0)
    assert ranks.wait(0) == 0, ranks.output(0)
    assert ranks.wait(1) == 0, ranks.output(1)

    final = json.loads(ranks.termination_log(0).read_text())
    assert set(final) == {*EVALUATION, "test_loss", "test_perplexity"}
    assert not ranks.termination_log(1).exists()
    annotations = [request.annotation for request in api_server.requests]
    assert [(a["step"], a["final"]) for a in annotations] == [(10, False), (20, False), (20, True)]
    assert {request.path for request in api_server.requests} == {
        "/api/v1/namespaces/ml/pods/trial-0"
    }
    assert annotations[-1]["metrics"] == final
    # Evaluation is shared and summed, so both ranks hold the same metrics at every step.
    evaluations = [
        [line for line in ranks.output(rank).splitlines() if line.startswith(("step ", "test:"))]
        for rank in (0, 1)
    ]
    assert len(evaluations[0]) == 3
    assert evaluations[0] == evaluations[1]

    # Two ranks of batch_size sequences each learn what one process learns from twice as many:
    # the same sequences (shared out), the same averaged gradient, up to rounding.
    config, _ = read_params(charlm.PARAMS, {}, [], prog="test", description="")
    for batch_size, alike in ((2 * TINY["batch_size"], True), (TINY["batch_size"], False)):
        alone = Recorder()
        charlm.train({**config, **TINY, "batch_size": batch_size}, torch.device("cpu"), alone)
        assert alone.final is not None
        assert (alone.final == pytest.approx(final, rel=1e-5)) is alike, (batch_size, alone.final)


def test_a_rank_whose_peer_died_exits_instead_of_waiting(ranks: Ranks) -> None:
    ranks.params = {**TINY, "steps": 1_000_000, "eval_interval": 10}
    for rank in (0, 1):
        ranks.start(rank, {TIMEOUT_ENV: "30"})
    ranks.await_output(1, "step 10/")
    ranks.processes[1].send_signal(signal.SIGKILL)
    assert ranks.wait(0, timeout=60) != 0
    assert not ranks.termination_log(0).exists()


def test_a_wrong_rank_exits_2_before_training(ranks: Ranks) -> None:
    ranks.start(2)
    assert ranks.wait(2) == 2
    assert "RANK=2 must be below WORLD_SIZE=2" in ranks.output(2)


@pytest.mark.parametrize(
    "environ",
    [{}, {"WORLD_SIZE": "1"}, {"WORLD_SIZE": " 1 ", "RANK": "0"}],
)
def test_one_process_or_none_is_not_distributed(environ: dict[str, str]) -> None:
    assert World.from_environment(environ) is None


RENDEZVOUS = {"MASTER_ADDR": "trial-0.study", "MASTER_PORT": "29500", "WORLD_SIZE": "4"}


def test_the_world_is_read_from_the_environment() -> None:
    world = World.from_environment({**RENDEZVOUS, "RANK": "3"})
    assert world == World(rank=3, size=4, backend=None)
    assert not world.reports
    assert world.backend_for(torch.device("cpu")) == "gloo"
    assert world.backend_for(torch.device("cuda")) == "nccl"
    chosen = World.from_environment(
        {**RENDEZVOUS, "JOB_COMPLETION_INDEX": "0", BACKEND_ENV: "GLOO", TIMEOUT_ENV: "30"}
    )
    assert chosen == World(rank=0, size=4, backend="gloo", timeout_seconds=30.0)
    assert chosen.reports
    assert chosen.backend_for(torch.device("cuda")) == "gloo"


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({**RENDEZVOUS}, "needs RANK"),
        ({**RENDEZVOUS, "RANK": "one"}, "RANK='one' must be a whole number"),
        ({**RENDEZVOUS, "RANK": "4"}, "RANK=4 must be below WORLD_SIZE=4"),
        ({**RENDEZVOUS, "RANK": "-1"}, "RANK=-1 must be >= 0"),
        ({**RENDEZVOUS, "WORLD_SIZE": "two", "RANK": "0"}, "WORLD_SIZE='two' must be a whole"),
        ({**RENDEZVOUS, "RANK": "0", "MASTER_ADDR": ""}, "needs MASTER_ADDR"),
        ({**RENDEZVOUS, "RANK": "0", BACKEND_ENV: "mpi"}, "'mpi' is not one of gloo, nccl"),
        ({**RENDEZVOUS, "RANK": "0", TIMEOUT_ENV: "0"}, "must be seconds > 0"),
    ],
)
def test_a_bad_world_is_refused_by_name(environ: dict[str, str], problem: str) -> None:
    with pytest.raises(ParameterError, match=problem):
        World.from_environment(environ)

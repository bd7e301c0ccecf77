"""End-to-end fixtures: a local cluster with Kubetune's CRDs, kubectl on it, and the operator
started as its own process (`kubetune operator`, as in a cluster). The cluster is each control
plane in turn (tests/planes.py): every e2e test runs on the embedded and the real one."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.localcluster.conftest import Kube, install_crds
from tests.planes import kube_on_both_planes  # noqa: F401 (the fixture `kube`, both planes)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def crds(kube: Kube) -> Kube:
    install_crds(kube)
    return kube


class Operator:
    """`kubetune operator` as a subprocess; its log goes to a file shown on failure."""

    def __init__(
        self,
        kube: Kube,
        log: Path,
        args: tuple[str, ...] = ("--metrics-port", "0"),
    ) -> None:
        self.kube = kube
        self.log = log
        # No metrics server by default: operators of concurrent tests would compete for a port.
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kubetune", "operator", *self.args],
                env=self.kube.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as when a node dies."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def operator(crds: Kube, tmp_path: Path) -> Iterator[Operator]:
    running = Operator(crds, tmp_path / "operator.log")
    running.start()
    yield running
    running.stop()
    print(running.log.read_text()[-20000:])


@contextlib.contextmanager
def module_operator(kube: Kube, log: Path) -> Iterator[Operator]:
    """One operator for a module's tests (a module-scoped fixture yields from this)."""
    operator = Operator(kube, log)
    operator.start()
    yield operator
    operator.stop()


@contextlib.contextmanager
def printing_this_tests_log(operator: Operator) -> Iterator[Kube]:
    """The operator's cluster, with what its log gained during the test printed afterwards
    (pytest shows it when the test fails)."""
    start = operator.log.stat().st_size if operator.log.exists() else 0
    yield operator.kube
    with operator.log.open("rb") as text:
        text.seek(start)
        print(text.read()[-20000:].decode(errors="replace"))

"""Fixtures of the monitoring tests: a local cluster whose node has two (fake) GPUs, with
Kubetune's CRDs, and the operator as its own process serving /metrics on a free port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kubetune_localcluster.environment import free_port
from tests.e2e.conftest import Operator
from tests.localcluster.conftest import Kube, local_kube

GPU = "nvidia.com/gpu"


@pytest.fixture(scope="module")
def gpu_kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    """A local cluster whose node has two nvidia.com/gpu, with Kubetune's CRDs: trials that
    request GPUs count GPU-seconds and money."""
    with local_kube(tmp_path_factory.mktemp("monitoring"), crds=True, capacity={GPU: "2"}) as kube:
        yield kube


class MetricsOperator(Operator):
    """`kubetune operator --metrics-port PORT`, on a free port."""

    def __init__(self, kube: Kube, log: Path) -> None:
        self.metrics_port = free_port()
        super().__init__(kube, log, args=("--metrics-port", str(self.metrics_port)))


@pytest.fixture
def metrics_operator(gpu_kube: Kube, tmp_path: Path) -> Iterator[MetricsOperator]:
    running = MetricsOperator(gpu_kube, tmp_path / "operator.log")
    running.start()
    yield running
    running.stop()
    print(running.log.read_text()[-20000:])

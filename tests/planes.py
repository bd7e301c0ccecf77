"""`kube` on both control planes: a test module that imports this fixture (in place of the
embedded-only one of tests/localcluster/conftest.py) runs each of its tests on the embedded API
server and on the real kube-apiserver. A test narrows it with
`@pytest.mark.parametrize("kube", ["embedded"], indirect=True)` where it needs what only the
emulator has (request hooks), and says why."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.localcluster.conftest import PLANES, Kube, local_kube


@pytest.fixture(scope="module", params=PLANES, name="kube")
def kube_on_both_planes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Kube]:
    plane = request.param
    with local_kube(tmp_path_factory.mktemp(f"kube-{plane}"), plane=plane) as kube:
        yield kube

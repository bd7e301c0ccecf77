"""The watch's echo of a study's own writes does not wake its daemon (kubetune.handlers): the
plan that wrote it was decided already. What someone else wrote after it does wake it, and the
studies that warm-start from it are woken by every change of its trials."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kopf
import pytest

from kubetune import handlers
from kubetune.spec import api

NAMESPACE = "ns"
STUDY = "s"
KEY = (NAMESPACE, STUDY)


def trial(version: str, state: str = "Running") -> kopf.Body:
    return kopf.Body(
        {
            "apiVersion": api.API_VERSION,
            "kind": api.TRIAL_KIND,
            "metadata": {
                "name": "s-0",
                "namespace": NAMESPACE,
                "resourceVersion": version,
                "labels": {api.STUDY_LABEL: STUDY},
            },
            "status": {"state": state},
        }
    )


def pod(version: str, phase: str = "Pending") -> kopf.Body:
    return kopf.Body(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "s-0",
                "namespace": NAMESPACE,
                "resourceVersion": version,
                "labels": {api.STUDY_LABEL: STUDY},
            },
            "spec": {"containers": [{"name": "trainer", "image": "t:1"}]},
            "status": {"phase": phase},
        }
    )


@pytest.fixture
def view() -> Iterator[handlers.StudyView]:
    """A study with a running daemon, as handlers.study_daemon registers it."""
    view = handlers._views[KEY] = handlers.StudyView()
    yield view
    handlers._views.pop(KEY, None)
    handlers._importers.pop(KEY, None)
    handlers._wakeups.pop(KEY, None)
    handlers._wakeups.pop((NAMESPACE, "importer"), None)


def woken(study: str = STUDY) -> bool:
    event = handlers._wakeups.get((NAMESPACE, study))
    return event is not None and event.is_set()


async def index_trial(body: kopf.Body) -> Any:
    return await handlers.trials_by_study(
        namespace=NAMESPACE, labels=body.metadata.labels, body=body
    )


async def test_the_echo_of_a_trial_write_wakes_nobody_but_news_does(
    view: handlers.StudyView,
) -> None:
    view.trial_writes.remember(dict(trial("5")))
    indexed = await index_trial(trial("5"))
    assert indexed == {KEY: dict(trial("5"))}  # the index has it all the same
    assert not woken()
    await index_trial(trial("4", state="Pending"))  # a late event of an older version
    assert not woken()
    await index_trial(trial("6", state="Failed"))  # someone wrote after the study did
    assert woken()


async def test_the_studies_that_warm_start_from_it_are_woken_by_its_echoes(
    view: handlers.StudyView,
) -> None:
    handlers._importers[KEY].add("importer")
    view.trial_writes.remember(dict(trial("5")))
    await index_trial(trial("5"))
    assert not woken()
    assert woken("importer")  # it reads this study's trials from the index alone


async def test_a_pod_created_by_the_study_wakes_it_once_the_kubelet_moves_it(
    view: handlers.StudyView,
) -> None:
    view.pod_writes.remember(dict(pod("7")))

    async def index(body: kopf.Body) -> None:
        await handlers.pods_by_study(namespace=NAMESPACE, labels=body.metadata.labels, body=body)

    await index(pod("7"))  # the create's echo
    assert not woken()
    await index(pod("8", phase="Running"))
    assert woken()


async def test_a_study_without_a_daemon_is_woken_by_every_event() -> None:
    try:
        await index_trial(trial("5"))
        assert woken()
    finally:
        handlers._wakeups.pop(KEY, None)

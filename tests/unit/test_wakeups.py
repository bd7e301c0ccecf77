"""What wakes a study's daemon (kubetune.handlers). The watch's echo of its own writes does
not: the plan that wrote it was decided already. What someone else wrote after it does, and the
studies that warm-start from it are woken by every change of its trials. A change of the study's
status alone wakes it only when its last plan was refused for a stale view."""

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


async def study_event(generation: int) -> None:
    meta = {"name": STUDY, "namespace": NAMESPACE, "generation": generation}
    await handlers.study_changed(
        namespace=NAMESPACE, name=STUDY, meta=kopf.Body({"metadata": meta}).metadata
    )


async def test_a_status_change_wakes_the_study_only_after_a_stale_plan(
    view: handlers.StudyView,
) -> None:
    try:
        await study_event(generation=1)  # first seen: a new generation
        assert woken()
        handlers._wakeups[KEY].clear()
        await study_event(generation=1)  # its own status write, say
        assert not woken()
        view.stale = True  # the last plan's write was refused (kopf wrote the study meanwhile)
        await study_event(generation=1)
        assert woken()
    finally:
        handlers._generations.pop(KEY, None)

"""kubetune.dashboard.feed: watch events and re-lists become the storage's snapshots."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from kubetune.dashboard import feed as feed_module
from kubetune.dashboard.feed import Feed
from kubetune.dashboard.storage import SnapshotStorage
from kubetune.spec.trial import TrialState
from tests.eventually import eventually
from tests.factories import study, study_spec, trial


def study_doc(name: str, version: str = "1") -> dict[str, Any]:
    body = study(study_spec(), name).model_dump(mode="json", by_alias=True, exclude_none=True)
    body["metadata"]["resourceVersion"] = version
    return body


def trial_doc(number: int, study_name: str = "demo", version: str = "1") -> dict[str, Any]:
    record = trial(
        number, TrialState.SUCCEEDED, ended=1, values=[float(number)], study_name=study_name
    )
    body = record.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["metadata"]["resourceVersion"] = version
    return body


def shown(storage: SnapshotStorage, name: str) -> list[list[float] | None]:
    return [t.values for t in storage.get_all_trials(storage.get_study_id_from_name(name))]


def test_events_add_update_and_remove_studies_and_trials() -> None:
    storage = SnapshotStorage()
    feed = Feed(api=None, storage=storage, namespace=None)  # type: ignore[arg-type]
    feed._replace_all("tuningstudies", [])
    feed._replace_all("tuningtrials", [trial_doc(0)])  # a trial seen before its study
    assert feed.listed.is_set()
    assert storage.names() == []

    feed._apply("tuningstudies", "ADDED", study_doc("demo"))
    assert shown(storage, "default/demo") == [[0.0]]
    feed._apply("tuningtrials", "ADDED", trial_doc(1))
    assert shown(storage, "default/demo") == [[0.0], [1.0]]
    feed._apply("tuningtrials", "DELETED", trial_doc(0))
    assert shown(storage, "default/demo") == [None, [1.0]]  # a deleted record: a failed trial
    feed._apply("tuningstudies", "DELETED", study_doc("demo"))
    assert storage.names() == []


def test_an_unreadable_study_keeps_its_last_readable_snapshot() -> None:
    storage = SnapshotStorage()
    feed = Feed(api=None, storage=storage, namespace=None)  # type: ignore[arg-type]
    feed._apply("tuningstudies", "ADDED", study_doc("demo"))
    broken = study_doc("demo")
    broken["spec"]["searchSpace"] = "not a list"
    feed._apply("tuningstudies", "MODIFIED", broken)
    assert storage.names() == ["default/demo"]


class FakeApi:
    """list_*_custom_object answering from `items`, by plural; counts the lists."""

    def __init__(self) -> None:
        self.items: dict[str, list[dict[str, Any]]] = {"tuningstudies": [], "tuningtrials": []}
        self.lists: dict[str, int] = {"tuningstudies": 0, "tuningtrials": 0}

    def list_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, **kwargs: Any
    ) -> dict[str, Any]:
        self.lists[plural] += 1
        return {"metadata": {"resourceVersion": "5"}, "items": list(self.items[plural])}


def test_an_expired_resource_version_lists_again(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi()
    api.items["tuningstudies"] = [study_doc("demo")]
    expired = threading.Event()

    class FakeWatch:
        def stream(self, list_call: object, **kwargs: Any) -> Iterator[dict[str, Any]]:
            assert kwargs["resource_version"] == "5"
            # The trials' watch (in the feed's thread of that name) expires once.
            if threading.current_thread().name == "feed-tuningtrials" and not expired.is_set():
                expired.set()
                # Meanwhile a trial was created; the watch cannot resume and says 410.
                api.items["tuningtrials"] = [trial_doc(0)]
                yield {"type": "ERROR", "object": {"code": 410, "reason": "Expired"}}
            else:
                threading.Event().wait()  # no more events
                yield from ()

    monkeypatch.setattr(feed_module.watch, "Watch", FakeWatch)
    storage = SnapshotStorage()
    Feed(api, storage, "default").start()  # type: ignore[arg-type]

    eventually(
        lambda: "default/demo" in storage.names() and shown(storage, "default/demo") == [[0.0]],
        timeout=10,
        interval=0.01,
        message="default/demo shown with its trial after the list again",
    )
    assert api.lists["tuningtrials"] == 2

"""Read-your-writes for a study's daemon: its own writes win over older watched versions until
the watch delivers them, and each trial version is parsed once."""

from __future__ import annotations

from typing import Any

from kubetune.k8s.cache import OwnWrites, ParsedTrials, resource_version, without_managed_fields


def obj(name: str, version: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": version}, "status": status}


def trial(name: str, number: int, version: str, state: str = "Running") -> dict[str, Any]:
    return {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuningTrial",
        "metadata": {"name": name, "resourceVersion": version},
        "spec": {"study": "s", "number": number, "params": {"x": 1.0}},
        "status": {"state": state},
    }


def test_resource_versions_compare_as_numbers_and_unknown_ones_as_oldest() -> None:
    assert resource_version(obj("a", "10")) > resource_version(obj("a", "9"))
    assert resource_version(obj("a", "opaque")) == -1
    assert resource_version({"metadata": {}}) == -1


def test_a_write_the_watch_has_not_delivered_is_seen() -> None:
    writes = OwnWrites()
    writes.remember(obj("t-0", "5", state="Succeeded"))
    writes.remember(obj("t-1", "6"))  # created, never watched yet
    merged = {o["metadata"]["name"]: o for o in writes.merged([obj("t-0", "3", state="Running")])}
    assert merged["t-0"]["status"]["state"] == "Succeeded"
    assert set(merged) == {"t-0", "t-1"}
    assert len(writes) == 2


def test_a_write_is_forgotten_once_the_watch_has_it_or_something_newer() -> None:
    writes = OwnWrites()
    writes.remember(obj("t-0", "5", state="Succeeded"))
    writes.remember(obj("t-1", "6", state="Running"))
    newer = obj("t-1", "9", state="Failed")  # someone else wrote after us
    merged = writes.merged([obj("t-0", "5", state="Succeeded"), newer])
    assert [o["status"]["state"] for o in merged] == ["Succeeded", "Failed"]
    assert len(writes) == 0


def test_the_echo_of_a_write_is_told_from_news() -> None:
    writes = OwnWrites()
    writes.remember(obj("t-0", "5", state="Running"))
    assert writes.holds(obj("t-0", "5", state="Running"))  # the write's own echo
    assert writes.holds(obj("t-0", "4", state="Pending"))  # older than what was written
    assert not writes.holds(obj("t-0", "6", state="Failed"))  # someone wrote after us
    assert not writes.holds(obj("t-1", "5"))  # never written by us
    assert not writes.holds(obj("t-0", "opaque"))  # a version that cannot be compared
    writes.merged([obj("t-0", "6", state="Failed")])
    assert not writes.holds(obj("t-0", "5"))  # forgotten once the watch caught up


def test_an_older_write_never_replaces_a_newer_one() -> None:
    writes = OwnWrites()
    writes.remember(obj("s", "8", phase="Running"))
    writes.remember(obj("s", "7", phase="Pending"))  # a response that arrived late
    assert writes.newest(obj("s", "2"))["status"] == {"phase": "Running"}


def test_trials_are_parsed_once_per_version_and_errors_named() -> None:
    parsed = ParsedTrials()
    first, errors = parsed.parse([trial("s-0", 0, "1"), trial("s-1", 1, "2")])
    assert errors == {}
    again, _ = parsed.parse([trial("s-0", 0, "1"), trial("s-1", 1, "3", "Succeeded")])
    assert again[0] is first[0]  # same version: the same model, not parsed again
    assert again[1] is not first[1]
    assert again[1].status.state.value == "Succeeded"
    broken = trial("s-2", 2, "4")
    broken["spec"]["number"] = "two"
    _, errors = parsed.parse([broken])
    assert list(errors) == ["s-2"]
    assert "number" in errors["s-2"]


def test_a_deleted_object_drops_its_write_even_if_the_response_comes_late() -> None:
    writes = OwnWrites()
    writes.remember(obj("pod-0", "4"))
    writes.deleted(obj("pod-0", "7"))  # pruned: the watch delivered its deletion
    assert writes.merged([]) == []
    writes.deleted(obj("pod-1", "9"))  # created and deleted before our create returned
    writes.remember(obj("pod-1", "8"))
    assert writes.merged([]) == []
    writes.remember(obj("pod-1", "12"))  # created again later (a newer version)
    assert [o["metadata"]["resourceVersion"] for o in writes.merged([])] == ["12"]


def test_an_indexed_object_keeps_everything_but_its_managed_fields() -> None:
    trial = {
        "metadata": {
            "name": "s-1",
            "resourceVersion": "7",
            "managedFields": [{"manager": "kubetune", "fieldsV1": {"f:status": {}}}],
        },
        "spec": {"params": {"x": 1}},
        "status": {"state": "Running"},
    }
    kept = without_managed_fields(trial)
    assert kept == {
        "metadata": {"name": "s-1", "resourceVersion": "7"},
        "spec": {"params": {"x": 1}},
        "status": {"state": "Running"},
    }
    assert "managedFields" in trial["metadata"]  # the watched body is kopf's, left as it is

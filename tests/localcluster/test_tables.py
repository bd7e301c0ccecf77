"""The Tables `kubectl get` asks for (kubetune_localcluster.tables): printer columns evaluated
as the API server does, ages as kubectl prints them, and the built-in kinds' columns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune_localcluster.ages import human_duration
from kubetune_localcluster.jsonpath import jsonpath_values
from kubetune_localcluster.printers import builtin_columns
from kubetune_localcluster.tables import table

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 1, 10, 12, 0, 0, tzinfo=UTC)
STUDY_COLUMNS = yaml.safe_load((ROOT / "crds" / "tuningstudies.kubetune.io.yaml").read_text())[
    "spec"
]["versions"][0]["additionalPrinterColumns"]


def stamp(ago: timedelta) -> str:
    return (NOW - ago).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(-5, "<invalid>"), (-1, "0s"), (0, "0s"), (119, "119s"), (120, "2m"), (200, "3m20s"),
     (600, "10m"), (179 * 60, "179m"), (3 * 3600, "3h"), (2 * 3600 + 1800 + 3 * 3600, "5h30m"),
     (8 * 3600, "8h"), (47 * 3600, "47h"), (52 * 3600, "2d4h"), (7 * 86400, "7d"),
     (30 * 86400, "30d"), (800 * 86400, "2y70d"), (9 * 365 * 86400, "9y")],
)  # fmt: skip
def test_ages_are_kubectls_human_durations(seconds: int, text: str) -> None:
    assert human_duration(timedelta(seconds=seconds)) == text


def test_a_study_table_has_the_crd_columns_typed_and_empty_cells_for_missing_values() -> None:
    running = {
        "metadata": {"name": "digits", "namespace": "ml",
                     "creationTimestamp": stamp(timedelta(minutes=5))},
        "status": {"phase": "Running", "progress": "3/40", "trials": {"running": 2},
                   "bestTrial": {"value": 1}, "paretoFrontSize": 0,
                   "budget": {"gpuHours": 0.25}},
    }  # fmt: skip
    fresh = {"metadata": {"name": "new", "creationTimestamp": stamp(timedelta(seconds=4))}}
    result = table([running, fresh], STUDY_COLUMNS, kind="TuningStudy", now=NOW)
    assert result["kind"] == "Table"
    assert result["apiVersion"] == "meta.k8s.io/v1"
    names = [c["name"] for c in result["columnDefinitions"]]
    assert names == [
        "Name", "Phase", "Trials", "Running", "Best", "Front", "Recommended", "Gap", "Mean",
        "GPU-Hours", "Age",
    ]  # fmt: skip
    assert result["columnDefinitions"][0]["format"] == "name"
    assert result["columnDefinitions"][3] == {
        "name": "Running",
        "type": "integer",
        "format": "",
        "description": "Trials running now.",
        "priority": 0,
    }
    # The server sends every column; kubectl hides those of priority 1 (Mean) without -o wide.
    assert [c["priority"] for c in result["columnDefinitions"]].count(1) == 1
    assert result["columnDefinitions"][8]["priority"] == 1
    assert result["rows"][0]["cells"] == [
        "digits", "Running", "3/40", 2, 1.0, 0, None, None, None, 0.25, "5m"
    ]  # fmt: skip
    assert result["rows"][1]["cells"] == ["new", *[None] * 9, "4s"]
    assert result["rows"][0]["object"] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": running["metadata"],
    }


def test_include_object_and_default_description() -> None:
    columns = [{"name": "Size", "type": "integer", "jsonPath": ".spec.size", "priority": 1}]
    obj: dict[str, Any] = {"metadata": {"name": "w"}, "spec": {"size": "big"}}
    whole = table([obj], columns, kind="Widget", include_object="Object", now=NOW)
    assert whole["rows"] == [{"cells": ["w", None], "object": obj}]  # wrong type: empty cell
    assert whole["columnDefinitions"][1]["description"] == (
        "Custom resource definition column (in JSONPath format): .spec.size"
    )
    assert (
        "object"
        not in table([obj], columns, kind="Widget", include_object="None", now=NOW)["rows"][0]
    )
    with pytest.raises(ValueError, match="includeObject"):
        table([obj], columns, kind="Widget", include_object="All", now=NOW)


def test_jsonpath_subset_of_printer_columns() -> None:
    pod = {
        "metadata": {"labels": {"app.kubernetes.io/name": "trainer"}},
        "status": {"conditions": [{"type": "PodScheduled", "status": "True"},
                                  {"type": "Ready", "status": "False"}]},
    }  # fmt: skip
    assert jsonpath_values(pod, '.status.conditions[?(@.type=="Ready")].status') == ["False"]
    assert jsonpath_values(pod, ".status.conditions[0].type") == ["PodScheduled"]
    assert jsonpath_values(pod, ".status.conditions[-1].type") == ["Ready"]
    assert jsonpath_values(pod, r".metadata.labels.app\.kubernetes\.io/name") == ["trainer"]
    assert jsonpath_values(pod, "{.metadata.labels['app.kubernetes.io/name']}") == ["trainer"]
    assert jsonpath_values(pod, ".status.missing.deeper") == []


def pod(phase: str, statuses: list[dict[str, Any]], **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "creationTimestamp": stamp(timedelta(hours=3)), **meta},
        "spec": {"containers": [{"name": "trainer"}]},
        "status": {"phase": phase, "containerStatuses": statuses},
    }


@pytest.mark.parametrize(
    ("obj", "cells"),
    [
        (pod("Pending", []), ["p", "0/1", "Pending", 0, "3h"]),
        (pod("Pending", [{"ready": False, "restartCount": 0,
                          "state": {"waiting": {"reason": "ContainerCreating"}}}]),
         ["p", "0/1", "ContainerCreating", 0, "3h"]),
        (pod("Running", [{"ready": True, "restartCount": 2, "state": {"running": {}}}]),
         ["p", "1/1", "Running", 2, "3h"]),
        (pod("Succeeded", [{"ready": False, "restartCount": 0,
                            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]),
         ["p", "0/1", "Completed", 0, "3h"]),
        (pod("Failed", [{"ready": False, "restartCount": 0,
                         "state": {"terminated": {"exitCode": 3}}}]),
         ["p", "0/1", "ExitCode:3", 0, "3h"]),
        (pod("Running", [{"ready": True, "restartCount": 0, "state": {"running": {}}}],
             deletionTimestamp=stamp(timedelta(0))),
         ["p", "1/1", "Terminating", 0, "3h"]),
    ],
)  # fmt: skip
def test_pods_show_ready_status_restarts_and_age(obj: dict[str, Any], cells: list[Any]) -> None:
    result = table([obj], None, kind="Pod", now=NOW)
    assert result["rows"][0]["cells"][:5] == cells
    wide = [c["name"] for c in result["columnDefinitions"] if c["priority"] == 1]
    assert wide == ["IP", "Node"]


def test_events_namespaces_and_other_kinds() -> None:
    event = {
        "metadata": {"name": "e"},
        "type": "Warning",
        "reason": "TrialFailed",
        "involvedObject": {"kind": "TuningStudy", "name": "digits"},
        "message": "trial 3 failed",
        "lastTimestamp": stamp(timedelta(seconds=30)),
    }
    assert table([event], None, kind="Event", now=NOW)["rows"][0]["cells"] == [
        "e", "30s", "Warning", "TrialFailed", "tuningstudy/digits", "trial 3 failed"
    ]  # fmt: skip
    namespace = {"metadata": {"name": "ml", "creationTimestamp": stamp(timedelta(days=2))},
                 "status": {"phase": "Active"}}  # fmt: skip
    assert table([namespace], None, kind="Namespace", now=NOW)["rows"][0]["cells"] == [
        "ml",
        "Active",
        "2d",
    ]
    assert [c["name"] for c in builtin_columns("Secret") or []] == ["Age"]

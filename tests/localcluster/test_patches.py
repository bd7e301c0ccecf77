"""Merge patch, JSON patch, strategic merge patch and server-side apply as the Kubernetes API
applies them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubetune_localcluster.patches import (
    PatchError,
    UnsupportedPatch,
    apply_patch,
    builtin_list_shape,
    json_patch,
    merge_patch,
    schema_list_shapes,
    server_side_apply,
    strategic_merge_patch,
)

POD = {
    "metadata": {
        "name": "p",
        "resourceVersion": "7",
        "finalizers": ["a"],
        "ownerReferences": [{"uid": "u1", "name": "o1"}, {"uid": "u2", "name": "o2"}],
    },
    "spec": {
        "containers": [
            {
                "name": "main",
                "image": "x:1",
                "args": ["--a"],
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "ports": [{"containerPort": 80, "name": "http"}],
                "volumeMounts": [{"mountPath": "/data", "name": "data"}],
            },
            {"name": "side", "image": "y:1"},
        ],
        "volumes": [{"name": "data", "emptyDir": {}}],
    },
    "status": {
        "conditions": [
            {"type": "Ready", "status": "False"},
            {"type": "PodScheduled", "status": "True"},
        ]
    },
}


def test_merge_patch_merges_objects_deletes_nulls_and_replaces_lists() -> None:
    result = merge_patch(
        POD, {"metadata": {"finalizers": ["b"], "labels": {"x": "1"}}, "status": None}
    )
    assert result["metadata"]["finalizers"] == ["b"]
    assert result["metadata"]["labels"] == {"x": "1"}
    assert result["metadata"]["name"] == "p"
    assert "status" not in result
    assert POD["status"]  # the original is left as it was


def test_json_patch_applies_operations_and_checks_test() -> None:
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
        {"op": "add", "path": "/metadata/labels", "value": {"k": "v"}},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]
    result = json_patch(POD, ops)
    assert result["metadata"]["labels"] == {"k": "v"}
    assert result["metadata"]["finalizers"] == []
    with pytest.raises(PatchError, match="test"):
        json_patch(POD, [{"op": "test", "path": "/metadata/resourceVersion", "value": "6"}])
    with pytest.raises(PatchError) as error:
        json_patch(POD, [{"op": "explode", "path": "/x"}])
    assert error.value.decode


def test_strategic_merge_patch_merges_containers_env_ports_and_mounts_by_key() -> None:
    patch = {
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "x:2",
                    "args": ["--b"],
                    "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
                    "ports": [{"containerPort": 81}],
                    "volumeMounts": [{"mountPath": "/data", "readOnly": True}],
                },
                {"name": "new", "image": "z:1"},
            ],
            "volumes": [{"name": "cache", "emptyDir": {}}],
        }
    }
    result = strategic_merge_patch(POD, patch)
    main, side, new = result["spec"]["containers"]
    assert (main["image"], side["name"], new["name"]) == ("x:2", "side", "new")
    assert main["args"] == ["--b"]  # a list with no merge key is replaced
    assert main["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "3"},
        {"name": "C", "value": "4"},
    ]
    assert [p["containerPort"] for p in main["ports"]] == [80, 81]
    assert main["volumeMounts"] == [{"mountPath": "/data", "name": "data", "readOnly": True}]
    assert [v["name"] for v in result["spec"]["volumes"]] == ["data", "cache"]


def test_strategic_merge_patch_conditions_owners_and_finalizers() -> None:
    patch = {
        "metadata": {"finalizers": ["b", "a"], "ownerReferences": [{"uid": "u2", "name": "x"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    result = strategic_merge_patch(POD, patch)
    assert result["metadata"]["finalizers"] == ["a", "b"]  # merged as a set
    assert result["metadata"]["ownerReferences"] == [
        {"uid": "u1", "name": "o1"},
        {"uid": "u2", "name": "x"},
    ]
    assert result["status"]["conditions"] == [
        {"type": "Ready", "status": "True"},
        {"type": "PodScheduled", "status": "True"},
    ]


def test_strategic_merge_patch_directives() -> None:
    patch = {
        "metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]},
        "spec": {
            "$setElementOrder/containers": [{"name": "side"}, {"name": "main"}],
            "containers": [{"name": "main", "$patch": "delete"}],
            "volumes": [{"$patch": "replace"}, {"name": "only", "emptyDir": {}}],
        },
        "status": {"$patch": "replace", "phase": "Running"},
    }
    result = strategic_merge_patch(POD, patch)
    assert result["metadata"]["finalizers"] == []
    assert [c["name"] for c in result["spec"]["containers"]] == ["side"]
    assert result["spec"]["volumes"] == [{"name": "only", "emptyDir": {}}]
    assert result["status"] == {"phase": "Running"}
    retained = strategic_merge_patch(
        {"spec": {"strategy": {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}}},
        {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}},
    )
    assert retained == {"spec": {"strategy": {"type": "Recreate"}}}


def test_service_ports_merge_on_port() -> None:
    service = {"spec": {"ports": [{"port": 80, "name": "http"}]}}
    result = strategic_merge_patch(service, {"spec": {"ports": [{"port": 80, "targetPort": 8080}]}})
    assert result["spec"]["ports"] == [{"port": 80, "name": "http", "targetPort": 8080}]


def test_apply_patch_dispatches_on_the_content_type() -> None:
    body = json.dumps({"metadata": {"labels": {"a": "b"}}}).encode()
    merged = apply_patch("application/merge-patch+json; charset=utf-8", POD, body)
    assert merged["metadata"]["labels"] == {"a": "b"}
    with pytest.raises(UnsupportedPatch):
        apply_patch("application/apply-patch+yaml", POD, b"metadata: {}")
    with pytest.raises(PatchError) as error:
        apply_patch("application/merge-patch+json", POD, b"{not json")
    assert error.value.decode


# --- server-side apply ---------------------------------------------------------------------


def applied(
    live: dict[str, Any] | None, config: dict[str, Any], manager: str = "m", **kw: Any
) -> dict[str, Any]:
    options: dict[str, Any] = {"shapes": builtin_list_shape, **kw}
    return server_side_apply(
        live, config, manager=manager, api_version="v1", time="2026-01-01T00:00:00Z", **options
    )


def test_apply_merges_built_in_lists_by_their_merge_keys_and_finalizers_as_a_set() -> None:
    live = applied(None, POD)
    change = {
        "metadata": {"name": "p", "finalizers": ["b"]},
        "spec": {"containers": [{"name": "main", "image": "x:2"}, {"name": "extra", "image": "e"}]},
    }
    result = applied(live, change, "other")
    assert result["metadata"]["finalizers"] == ["a", "b"]
    containers = result["spec"]["containers"]
    assert [c["name"] for c in containers] == ["main", "side", "extra"]
    assert containers[0]["image"] == "x:2"
    assert containers[0]["args"] == ["--a"]  # kept: an atomic list "other" does not apply
    fields = result["metadata"]["managedFields"][1]["fieldsV1"]
    assert fields["f:metadata"] == {"f:finalizers": {'v:"b"': {}}}
    assert fields["f:spec"]["f:containers"]['k:{"name":"main"}'] == {
        ".": {},
        "f:name": {},
        "f:image": {},
    }


def test_a_manager_that_stops_applying_a_list_item_removes_it() -> None:
    live = applied(None, POD)
    config = {**POD, "spec": {"containers": [POD["spec"]["containers"][0]]}}
    result = applied(live, config)
    assert [c["name"] for c in result["spec"]["containers"]] == ["main"]
    assert live["spec"]["containers"][1]["name"] == "side"  # the live object is untouched
    # An atomic list is replaced whole; a null removes a field.
    result = applied(result, {"spec": {"containers": [{"name": "main", "args": ["--b"]}]}})
    assert result["spec"]["containers"][0]["args"] == ["--b"]
    result = applied(result, {"spec": {"containers": [{"name": "main", "image": None}]}})
    assert "image" not in result["spec"]["containers"][0]


def test_custom_lists_follow_the_schema_list_types() -> None:
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "params": {
                        "type": "array",
                        "x-kubernetes-list-type": "map",
                        "x-kubernetes-list-map-keys": ["name"],
                        "items": {"type": "object"},
                    },
                    "tags": {"type": "array", "x-kubernetes-list-type": "set"},
                    "order": {"type": "array"},
                },
            }
        },
    }
    shapes = schema_list_shapes(schema)
    live = applied(
        None,
        {"spec": {"params": [{"name": "lr", "low": 1}], "tags": ["a"], "order": [1, 2]}},
        "one",
        shapes=shapes,
    )
    result = applied(
        live,
        {
            "spec": {
                "params": [{"name": "lr", "high": 2}, {"name": "wd"}],
                "tags": ["b"],
                "order": [3],
            }
        },
        "two",
        shapes=shapes,
    )
    assert result["spec"] == {
        "params": [{"name": "lr", "low": 1, "high": 2}, {"name": "wd"}],
        "tags": ["a", "b"],
        "order": [3],
    }
    assert shapes(("spec", "params")) == ("map", ("name",))
    assert shapes(("spec", "unknown")) == ("atomic", ())
    assert shapes(("metadata", "finalizers")) == ("set", ())

"""Pod volumes on the local kubelet: the files each kind makes, the mounts of a container, and
the mount namespace its process runs in."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kubetune_localcluster.volumes import (
    Mount,
    VolumeError,
    container_mounts,
    hiding,
    in_mount_namespace,
    mount_order,
    prepare_targets,
    volume_files,
    write_volume,
)

OBJECTS: dict[tuple[str, str], dict[str, Any]] = {
    ("configmaps", "kube-root-ca.crt"): {"data": {"ca.crt": "PEM"}},
    ("configmaps", "settings"): {"data": {"a": "1", "b": "2"}, "binaryData": {"c": "AAE="}},
    ("secrets", "creds"): {"data": {"user": base64.b64encode(b"admin").decode()}},
}
TOKENS: list[tuple[str | None, int]] = []


async def fetch(plural: str, name: str) -> dict[str, Any] | None:
    return OBJECTS.get((plural, name))


async def request_token(audience: str | None, seconds: int) -> str:
    TOKENS.append((audience, seconds))
    return "a-bound-token"


def field(path: str) -> str:
    return {"metadata.namespace": "team-a", "metadata.name": "p"}[path]


async def files(volume: dict[str, Any]) -> dict[str, bytes] | None:
    return await volume_files(volume, fetch, request_token, field)


async def test_the_service_account_volume_the_admission_plugin_adds() -> None:
    """The projected volume kube-apiserver's ServiceAccount admission gives every pod."""
    TOKENS.clear()
    volume = {
        "name": "kube-api-access-x1",
        "projected": {
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ]
        },
    }
    assert await files(volume) == {
        "token": b"a-bound-token",
        "ca.crt": b"PEM",
        "namespace": b"team-a",
    }
    assert TOKENS == [(None, 3607)]


async def test_config_map_secret_and_empty_dir_volumes() -> None:
    assert await files({"name": "v", "emptyDir": {}}) == {}
    assert await files({"name": "v", "configMap": {"name": "settings"}}) == {
        "a": b"1",
        "b": b"2",
        "c": b"\x00\x01",
    }
    listed = {"name": "settings", "items": [{"key": "b", "path": "sub/b.txt"}]}
    assert await files({"name": "v", "configMap": listed}) == {"sub/b.txt": b"2"}
    assert await files({"name": "v", "secret": {"secretName": "creds"}}) == {"user": b"admin"}
    assert await files({"name": "v", "hostPath": {"path": "/"}}) is None


async def test_a_missing_source_waits_unless_optional() -> None:
    with pytest.raises(VolumeError, match='configmap "absent" not found'):
        await files({"name": "v", "configMap": {"name": "absent"}})
    assert await files({"name": "v", "configMap": {"name": "absent", "optional": True}}) == {}
    with pytest.raises(VolumeError, match="no key 'z'"):
        await files(
            {"name": "v", "configMap": {"name": "settings", "items": [{"key": "z", "path": "z"}]}}
        )


def test_mounts_follow_volume_mounts_and_sub_paths(tmp_path: Path) -> None:
    made = {"data": write_volume(tmp_path / "data", {"x/y": b"1"})}
    container = {
        "volumeMounts": [
            {"name": "data", "mountPath": "/srv/data"},
            {"name": "data", "mountPath": "/etc/y", "subPath": "x/y"},
            {"name": "not-made", "mountPath": "/nowhere"},
        ]
    }
    assert container_mounts(container, made) == [
        Mount(tmp_path / "data", "/srv/data"),
        Mount(tmp_path / "data" / "x" / "y", "/etc/y"),
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")
def test_a_process_sees_its_mounts_and_the_host_does_not(tmp_path: Path) -> None:
    source = write_volume(tmp_path / "volume", {"token": b"secret-of-this-pod"})
    target = tmp_path / "serviceaccount"
    mounts = [Mount(source, str(target))]
    prepare_targets(mounts)
    argv = in_mount_namespace(["cat", str(target / "token")], mounts)
    assert subprocess.run(argv, capture_output=True, check=True).stdout == b"secret-of-this-pod"
    assert list(target.iterdir()) == []  # the host's folder stays empty
    assert in_mount_namespace(["true"], []) == ["true"]


def test_parents_are_mounted_before_children() -> None:
    parent = Mount(Path("/v/a"), "/srv")
    child = Mount(Path("/v/b"), "/srv/data")
    token = Mount(Path("/v/t"), "/var/run/secrets/kubernetes.io/serviceaccount")
    assert mount_order([child, token, parent]) == [parent, child, token]


def test_a_mount_that_would_hide_the_installed_code_or_a_source_is_left_out() -> None:
    """The chart's emptyDir on /tmp, with a checkout (its virtualenv) and the pod's folder
    under /tmp: mounted, it would hide the operator's own code."""
    tmp = Mount(Path("/tmp/k/pods/p/volumes/tmp"), "/tmp")
    token = Mount(Path("/tmp/k/pods/p/volumes/token"), "/var/run/secrets/kubernetes.io/x")
    data = Mount(Path("/tmp/k/pods/p/volumes/data"), "/srv/data")
    needed = [Path("/tmp/checkout/.venv"), Path("/tmp/k/pods")]
    assert hiding([tmp, token, data], needed) == [tmp]
    # Elsewhere, nothing is hidden.
    assert hiding([token, data], [Path("/opt/venv"), Path("/var/lib/pods")]) == []

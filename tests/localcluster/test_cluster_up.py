"""`kubetune cluster up` as a user runs it, on each control plane: it writes a kubeconfig
(mode 0600), installs the CRDs, runs pods, and on Ctrl-C (SIGINT) exits 0 promptly, leaving no
pod process (and on the real plane no etcd, kube-apiserver, controller manager or scheduler)
behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from pathlib import Path

import pytest

from tests.localcluster.conftest import PLANES, kube_binaries, kubectl_binary

TIMEOUT = 30.0


def processes_with(marker: str) -> list[int]:
    """The ids of live processes whose command line contains `marker` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # gone meanwhile
            continue
        if marker.encode() in command and state != "Z":
            found.append(int(entry.name))
    return found


async def kubectl(
    env: dict[str, str], *args: str, stdin: str | None = None, check: bool = True
) -> str:
    process = await asyncio.create_subprocess_exec(
        kubectl_binary(),
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(TIMEOUT):
        out, err = await process.communicate(stdin.encode() if stdin else None)
    assert process.returncode == 0 or not check, f"kubectl {' '.join(args)}: {err.decode()}"
    return out.decode()


@pytest.mark.parametrize("plane", PLANES)
async def test_cluster_up_serves_kubectl_and_stops_on_ctrl_c(tmp_path: Path, plane: str) -> None:
    kubeconfig = tmp_path / "kubetune.kubeconfig"
    workdir = tmp_path / "pods"
    binaries = ["--binaries", str(kube_binaries())] if plane == "real" else []
    up = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "kubetune"),
        "cluster",
        "up",
        "--kubeconfig",
        str(kubeconfig),
        "--port",
        "0",
        "--workdir",
        str(workdir),
        *binaries,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    marker = f"kubetune-test-{uuid.uuid4()}"
    try:
        printed = []
        async with asyncio.timeout(TIMEOUT):
            assert up.stdout is not None
            while not printed or not printed[-1].startswith("Ctrl-C stops"):
                line = (await up.stdout.readline()).decode()
                assert line, "cluster up ended early:\n" + "".join(printed)
                printed.append(line)
        text = "".join(printed)
        assert f"export KUBECONFIG={kubeconfig.resolve()}" in text
        # It holds the admin's credentials: readable by its owner alone, as kubeadm writes
        # admin.conf.
        assert kubeconfig.stat().st_mode & 0o777 == 0o600

        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "HOME": str(tmp_path),
            "KUBECACHEDIR": str(tmp_path / "cache"),
        }
        if plane == "real":
            version = json.loads(await kubectl(env, "version", "-o", "json"))
            assert version["serverVersion"]["gitVersion"] == "v1.37.2"
            as_default = ["--as", "system:serviceaccount:default:default"]
            assert (await kubectl(env, "auth", "can-i", "get", "pods")).strip() == "yes"
            denied = await kubectl(env, "auth", "can-i", "get", "pods", *as_default, check=False)
            assert denied.strip() == "no"
        crd = await kubectl(env, "get", "crd", "tuningstudies.kubetune.io", "-o", "name")
        assert (
            crd.strip() == "customresourcedefinition.apiextensions.k8s.io/tuningstudies.kubetune.io"
        )

        sleeper = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "sleeper"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "main",
                        "image": "python:3.12-slim",
                        # The marker finds the pod's process among the machine's.
                        "command": ["python3", "-c", "import time; time.sleep(300)", marker],
                    }
                ],
            },
        }
        await kubectl(env, "apply", "-f", "-", stdin=json.dumps(sleeper))
        await kubectl(
            env, "wait", "--for=jsonpath={.status.phase}=Running", "pod/sleeper", "--timeout=30s"
        )
        assert len(processes_with(marker)) == 2  # the container's init and its command

        up.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            rest, _ = await up.communicate()
        assert up.returncode == 0, rest.decode()
        assert rest.decode().strip().endswith("Stopped.")
        assert processes_with(marker) == []
        # The real plane's components name their folder (certificates, etcd data) in their
        # command lines.
        assert processes_with(str(workdir)) == []
    finally:
        if up.returncode is None:
            up.kill()
            await up.wait()
        for pid in processes_with(marker):  # only if the test failed: leave nothing behind
            os.kill(pid, signal.SIGKILL)

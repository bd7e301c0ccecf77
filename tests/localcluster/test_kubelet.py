"""The local kubelet: scheduling, env, statuses, deadlines, deletion and logs.

End to end, through the API server over HTTP, as kopf and kubectl see it; the pure rules it
applies are tested as functions in test_quantities.py, test_environment.py and
test_pod_status.py.
"""

from __future__ import annotations

import base64
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kubetune_localcluster.apiserver import ApiServer
from kubetune_localcluster.kubelet import Kubelet
from tests import escapees
from tests.escapees import alive
from tests.eventually import eventually_async

PY = sys.executable


STUBBORN = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


class Api:
    """The few API calls the tests make, over HTTP like any client."""

    def __init__(self, client: aiohttp.ClientSession) -> None:
        self.client = client

    async def create(self, plural: str, obj: dict[str, Any], namespace: str = "default") -> None:
        async with self.client.post(f"/api/v1/namespaces/{namespace}/{plural}", json=obj) as r:
            assert r.status == 201, await r.text()

    async def pod(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        async with self.client.get(f"/api/v1/namespaces/{namespace}/pods/{name}") as response:
            if response.status == 404:
                return None
            assert response.status == 200, await response.text()
            result: dict[str, Any] = await response.json()
            return result

    async def delete_pod(
        self, name: str, namespace: str = "default", grace: int | None = None
    ) -> None:
        params = {} if grace is None else {"gracePeriodSeconds": str(grace)}
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        async with self.client.delete(path, params=params) as response:
            assert response.status in (200, 202), await response.text()

    async def patch_pod(self, name: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """A merge patch of a pod: the status and the answer."""
        async with self.client.patch(
            f"/api/v1/namespaces/default/pods/{name}",
            json=body,
            headers={"Content-Type": "application/merge-patch+json"},
        ) as response:
            answer: dict[str, Any] = await response.json()
            return response.status, answer

    async def log(self, name: str, container: str | None = None) -> tuple[int, str]:
        params = {"container": container} if container else {}
        async with self.client.get(
            f"/api/v1/namespaces/default/pods/{name}/log", params=params
        ) as response:
            return response.status, await response.text()


async def phase_is(api: Api, name: str, *phases: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        pod = await api.pod(name)
        return pod if pod and pod.get("status", {}).get("phase") in phases else None

    result: dict[str, Any] = await eventually_async(
        check, message=f"pod {name} in {phases}", timeout=10
    )
    return result


def condition(pod: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in pod["status"]["conditions"] if c["type"] == kind)


def python_pod(name: str, script: str, *, gpus: int = 0, **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": "python:3.11",
        "command": [PY, "-c", script],
    }
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "test"}},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }


def pid_of(pod: dict[str, Any], index: int = 0) -> int:
    return int(pod["status"]["containerStatuses"][index]["containerID"].removeprefix("process://"))


class Cluster:
    def __init__(self, url: str, kubelet: Kubelet, api: Api) -> None:
        self.url = url
        self.kubelet = kubelet
        self.api = api

    async def logged(self, name: str, text: str, container: str | None = None) -> str:
        async def check() -> str | None:
            log = self.kubelet.logs("default", name, container)
            return log if log and text in log else None

        result: str = await eventually_async(
            check, message=f"{text!r} in the log of {name}", timeout=10
        )
        return result


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with ApiServer() as server:
        kubelet = Kubelet(
            server.url,
            capacity={"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"},
            workdir=tmp_path / "kubelet",
            token=server.token,
        )
        server.set_pod_log_provider(kubelet.logs)
        await kubelet.start()
        try:
            async with aiohttp.ClientSession(server.url, headers=server.headers) as client:
                yield Cluster(server.url, kubelet, Api(client))
        finally:
            await kubelet.stop()


REPORTER = """
import json, os, pathlib
print("started", flush=True)
print("setup says", pathlib.Path("setup.txt").read_text(), flush=True)
names = ["NAME", "NS", "STUDY", "TOKEN", "MODE", "KUBERNETES_SERVICE_HOST", "HOSTNAME"]
print(json.dumps({name: os.environ.get(name) for name in names}), flush=True)
print("args", os.environ["ARGV"], flush=True)
config = json.loads(pathlib.Path(os.environ["KUBECONFIG"]).read_text())
port = os.environ["KUBERNETES_SERVICE_PORT"]
assert config["clusters"][0]["cluster"]["server"].endswith(":" + port), config
pathlib.Path(os.environ["KUBETUNE_TERMINATION_LOG"]).write_text('{"loss": 0.25}')
"""


async def test_a_pod_runs_init_then_main_with_its_env_and_succeeds(cluster: Cluster) -> None:
    api = cluster.api
    secret = {
        "metadata": {"name": "creds"},
        "data": {"token": base64.b64encode(b"s3cret").decode()},
    }
    await api.create("secrets", secret)
    await api.create("configmaps", {"metadata": {"name": "settings"}, "data": {"mode": "fast"}})
    pod = python_pod(
        "trial-1",
        REPORTER,
        initContainers=[
            {
                "name": "setup",
                "image": "busybox",
                "command": [PY, "-c", "import pathlib; pathlib.Path('setup.txt').write_text('hi')"],
            }
        ],
        container={
            "env": [
                {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {
                    "name": "STUDY",
                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}},
                },
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                {
                    "name": "MODE",
                    "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}},
                },
                {"name": "KUBETUNE_TERMINATION_LOG", "value": "/dev/termination-log"},
                {"name": "ARGV", "value": "$(NAME)-$(MODE)"},
            ]
        },
    )
    await api.create("pods", pod)
    done = await phase_is(api, "trial-1", "Succeeded", "Failed")
    log = cluster.kubelet.logs("default", "trial-1", None) or ""
    assert done["status"]["phase"] == "Succeeded", log
    assert done["spec"]["nodeName"] == "kubetune-local"
    status = done["status"]
    assert status["hostIP"] == status["podIP"] == "127.0.0.1"
    assert status["startTime"].endswith("Z")
    assert condition(done, "PodScheduled")["status"] == "True"
    assert condition(done, "Initialized")["status"] == "True"
    assert condition(done, "Ready") | {"lastTransitionTime": None} == {
        "type": "Ready",
        "status": "False",
        "reason": "PodCompleted",
        "lastProbeTime": None,
        "lastTransitionTime": None,
    }
    (init,) = status["initContainerStatuses"]
    assert init["state"]["terminated"]["exitCode"] == 0
    (main,) = status["containerStatuses"]
    terminated = main["state"]["terminated"]
    assert terminated["exitCode"] == 0
    assert terminated["reason"] == "Completed"
    assert terminated["message"] == '{"loss": 0.25}'
    assert terminated["startedAt"] <= terminated["finishedAt"]
    assert main["restartCount"] == 0
    assert main["ready"] is False
    assert "setup says hi" in log
    assert '"NAME": "trial-1", "NS": "default", "STUDY": "test"' in log
    assert '"TOKEN": "s3cret", "MODE": "fast", "KUBERNETES_SERVICE_HOST": "127.0.0.1"' in log
    assert '"HOSTNAME": "trial-1"' in log
    assert "args trial-1-fast" in log
    # The same log through the API server's pods/NAME/log.
    assert await api.log("trial-1") == (200, log)
    assert await api.log("trial-1", "setup") == (200, "")
    assert (await api.log("no-such-pod"))[0] == 404


async def test_failures_are_reported_with_exit_code_reason_and_message(
    cluster: Cluster,
) -> None:
    api = cluster.api
    failing = "import sys; print('out of memory at step 3'); sys.exit(3)"
    await api.create(
        "pods",
        python_pod(
            "fails", failing, container={"terminationMessagePolicy": "FallbackToLogsOnError"}
        ),
    )
    no_command = python_pod("no-command", "")
    del no_command["spec"]["containers"][0]["command"]
    await api.create("pods", no_command)
    missing = python_pod("missing", "", container={"command": ["/nonexistent/train"]})
    await api.create("pods", missing)

    failed = await phase_is(api, "fails", "Failed")
    terminated = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3
    assert terminated["reason"] == "Error"
    assert terminated["message"] == "out of memory at step 3\n"

    failed = await phase_is(api, "no-command", "Failed")
    terminated = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["reason"] == "CommandRequired"
    assert "set command in the pod spec" in terminated["message"]

    failed = await phase_is(api, "missing", "Failed")
    terminated = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["reason"], terminated["exitCode"]) == ("StartError", 128)
    assert "/nonexistent/train" in terminated["message"]


async def test_a_pod_waits_for_gpus_and_starts_when_they_free_up(
    cluster: Cluster, tmp_path: Path
) -> None:
    api = cluster.api
    release = tmp_path / "release"
    holder = (
        "import pathlib, time\n"
        "print('holding', flush=True)\n"
        f"while not pathlib.Path({str(release)!r}).exists(): time.sleep(0.02)\n"
    )
    await api.create("pods", python_pod("first", holder, gpus=1))
    await cluster.logged("first", "holding")
    await api.create("pods", python_pod("second", "print('got the gpu')", gpus=1))
    await api.create("pods", python_pod("too-big", "", gpus=2))

    async def unschedulable(name: str) -> dict[str, Any] | None:
        pod = await api.pod(name)
        conditions = (pod or {}).get("status", {}).get("conditions") or []
        return next((c for c in conditions if c.get("reason") == "Unschedulable"), None)

    for name in ("second", "too-big"):
        scheduled = await eventually_async(lambda name=name: unschedulable(name), timeout=10)
        assert scheduled["type"] == "PodScheduled"
        assert scheduled["status"] == "False"
        assert scheduled["message"] == "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
        pod = await api.pod(name)
        assert pod is not None
        assert pod["status"]["phase"] == "Pending"
        assert not pod["spec"].get("nodeName")

    release.touch()
    await phase_is(api, "first", "Succeeded")
    second = await phase_is(api, "second", "Succeeded")
    assert condition(second, "PodScheduled")["status"] == "True"
    assert "got the gpu" in (cluster.kubelet.logs("default", "second", "main") or "")
    still = await api.pod("too-big")
    assert still is not None
    assert still["status"]["phase"] == "Pending"

    async def events() -> set[tuple[str, str]] | None:
        async with api.client.get("/api/v1/namespaces/default/events") as response:
            items = (await response.json())["items"]
        seen = {(e["involvedObject"]["name"], e["reason"]) for e in items}
        wanted = {("first", "Scheduled"), ("second", "FailedScheduling"), ("second", "Scheduled")}
        return seen if wanted <= seen else None

    await eventually_async(events, message="the scheduler's events", timeout=10)


async def test_a_missing_secret_keeps_the_container_waiting_until_it_exists(
    cluster: Cluster,
) -> None:
    api = cluster.api
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "later", "key": "token"}}}]
    await api.create(
        "pods", python_pod("waits", "import os; print(os.environ['TOKEN'])", container={"env": env})
    )

    async def config_error() -> dict[str, Any] | None:
        pod = await api.pod("waits")
        statuses = (pod or {}).get("status", {}).get("containerStatuses") or [{}]
        waiting = statuses[0].get("state", {}).get("waiting", {})
        return waiting if waiting.get("reason") == "CreateContainerConfigError" else None

    waiting = await eventually_async(config_error, timeout=10)
    assert waiting["message"] == 'secret "later" not found'
    token = base64.b64encode(b"finally").decode()
    await api.create("secrets", {"metadata": {"name": "later"}, "data": {"token": token}})
    await phase_is(api, "waits", "Succeeded")
    assert cluster.kubelet.logs("default", "waits", None) == "finally\n"


async def test_on_failure_restarts_a_failed_container(cluster: Cluster) -> None:
    flaky = (
        "import pathlib, sys\n"
        "marker = pathlib.Path('tried')\n"
        "if not marker.exists(): marker.touch(); sys.exit(1)\n"
        "print('second time lucky')\n"
    )
    await cluster.api.create("pods", python_pod("flaky", flaky, restartPolicy="OnFailure"))
    done = await phase_is(cluster.api, "flaky", "Succeeded", "Failed")
    (main,) = done["status"]["containerStatuses"]
    assert done["status"]["phase"] == "Succeeded"
    assert main["restartCount"] == 1
    assert main["lastState"]["terminated"]["exitCode"] == 1
    assert cluster.kubelet.logs("default", "flaky", "main") == "second time lucky\n"


async def test_active_deadline_fails_the_pod_and_stops_its_process(cluster: Cluster) -> None:
    api = cluster.api
    pod = python_pod(
        "slow",
        "import time; print('working', flush=True); time.sleep(60)",
        activeDeadlineSeconds=1,
        terminationGracePeriodSeconds=1,
    )
    await api.create("pods", pod)
    running = await phase_is(api, "slow", "Running")
    pid = pid_of(running)
    failed = await phase_is(api, "slow", "Failed")
    assert failed["status"]["reason"] == "DeadlineExceeded"
    assert failed["status"]["message"] == (
        "Pod was active on the node longer than the specified deadline"
    )
    terminated = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 128 + signal.SIGTERM
    assert not alive(pid)


async def test_a_lowered_deadline_stops_a_running_pod_and_keeps_its_object_and_log(
    cluster: Cluster,
) -> None:
    """How the operator stops a trial and keeps its pod for debugging: it lowers the running
    pod's activeDeadlineSeconds, which the API allows only downwards."""
    api = cluster.api
    script = "import time; print('training step 1', flush=True); time.sleep(60)"
    await api.create("pods", python_pod("lowered", script, terminationGracePeriodSeconds=1))
    await cluster.logged("lowered", "training step 1")
    pid = pid_of(await phase_is(api, "lowered", "Running"))

    # From none to a deadline, then only downwards.
    status, _ = await api.patch_pod("lowered", {"spec": {"activeDeadlineSeconds": 3600}})
    assert status == 200
    status, refused = await api.patch_pod("lowered", {"spec": {"activeDeadlineSeconds": 7200}})
    assert (status, refused["reason"]) == (422, "Invalid"), refused
    assert refused["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "field": "spec.activeDeadlineSeconds",
            "message": "Invalid value: 7200: must be less than or equal to previous value",
        }
    ]
    status, refused = await api.patch_pod("lowered", {"spec": {"activeDeadlineSeconds": None}})
    assert status == 422, refused
    assert "must not update from a positive integer to nil value" in refused["message"]
    assert alive(pid)  # neither refused change reached the kubelet

    # 1 s from startTime: past already, or within the second; either way it ends soon.
    status, _ = await api.patch_pod("lowered", {"spec": {"activeDeadlineSeconds": 1}})
    assert status == 200
    failed = await phase_is(api, "lowered", "Failed")
    assert (failed["status"]["reason"], failed["status"]["message"]) == (
        "DeadlineExceeded",
        "Pod was active on the node longer than the specified deadline",
    )
    terminated = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 128 + signal.SIGTERM
    assert not alive(pid)
    # The object stays (it is not deleted), and so does its log.
    assert await api.pod("lowered") is not None
    assert await api.log("lowered") == (200, "training step 1\n")


TERM_LOGGER = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: print('got SIGTERM', flush=True))\n"
    "print('ready', flush=True)\n"
    "while True: time.sleep(1)\n"
)


async def test_a_lowered_deadline_gives_a_process_ignoring_sigterm_its_grace_period(
    cluster: Cluster,
) -> None:
    api = cluster.api
    grace = 2
    await api.create(
        "pods",
        python_pod(
            "ignores-term",
            TERM_LOGGER,
            activeDeadlineSeconds=3600,
            terminationGracePeriodSeconds=grace,
        ),
    )
    await cluster.logged("ignores-term", "ready")
    pid = pid_of(await phase_is(api, "ignores-term", "Running"))
    patched_at = int(time.time())  # timestamps are whole seconds: this second, rounded down
    status, _ = await api.patch_pod("ignores-term", {"spec": {"activeDeadlineSeconds": 1}})
    assert status == 200

    await cluster.logged("ignores-term", "got SIGTERM")
    # Within its grace period: the process lives on and the pod is not terminal yet (the
    # kubelet reports Failed only once every container has ended).
    during = await api.pod("ignores-term")
    assert during is not None
    assert during["status"]["phase"] == "Running"
    assert "reason" not in during["status"]
    assert alive(pid)

    failed = await phase_is(api, "ignores-term", "Failed")
    assert failed["status"]["reason"] == "DeadlineExceeded"
    terminated = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 128 + signal.SIGKILL
    finished = datetime.fromisoformat(terminated["finishedAt"].replace("Z", "+00:00"))
    assert finished.timestamp() - patched_at >= grace
    assert not alive(pid)
    status, log = await api.log("ignores-term")
    assert (status, log) == (200, "ready\ngot SIGTERM\n")


async def test_deletion_sends_sigterm_then_sigkill_after_the_grace_period(
    cluster: Cluster,
) -> None:
    api = cluster.api
    await api.create("pods", python_pod("stubborn", STUBBORN, terminationGracePeriodSeconds=1))
    polite = "import time; print('ready', flush=True); time.sleep(60)"
    await api.create("pods", python_pod("polite", polite, terminationGracePeriodSeconds=30))
    await api.create("pods", python_pod("forced", STUBBORN, terminationGracePeriodSeconds=30))
    names = ("stubborn", "polite", "forced")
    for name in names:
        await cluster.logged(name, "ready")
    pids = {name: pid_of(await phase_is(api, name, "Running")) for name in names}

    # Deleted with no grace at all: the object goes at once, the process is killed at once.
    await api.delete_pod("forced", grace=0)
    assert await api.pod("forced") is None

    async def killed() -> bool:
        return not alive(pids["forced"])

    await eventually_async(killed, timeout=3, message="the force-deleted pod's process ending")

    began = time.monotonic()
    await api.delete_pod("polite")
    await api.delete_pod("stubborn")

    async def gone(name: str) -> bool:
        return await api.pod(name) is None

    await eventually_async(lambda: gone("polite"), message="polite pod removed", timeout=10)
    # SIGTERM ends it at once: far sooner than its 30 s grace period.
    assert time.monotonic() - began < 5
    assert not alive(pids["polite"])
    assert alive(pids["stubborn"])  # it ignores SIGTERM and has 1 s of grace
    await eventually_async(lambda: gone("stubborn"), message="stubborn pod removed", timeout=10)
    assert time.monotonic() - began >= 0.9
    assert not alive(pids["stubborn"])

    async def forgotten() -> bool:  # the kubelet forgets a pod once the API has removed it
        return cluster.kubelet.logs("default", "stubborn", None) is None

    await eventually_async(forgotten, message="the kubelet forgetting the pod", timeout=5)


def pod_folder(cluster: Cluster, name: str) -> Path:
    (folder,) = cluster.kubelet.workdir.glob(f"default/{name}-*")
    return folder


async def test_a_pod_that_ends_leaves_none_of_its_processes(cluster: Cluster) -> None:
    """Children that setsid or double-fork end with the pod's main process, as the rest of a
    container's PID namespace does."""
    api = cluster.api
    await api.create("pods", python_pod("leaves", escapees.script(exits=True)))
    done = await phase_is(api, "leaves", "Succeeded", "Failed")
    terminated = done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    # Written once every process of the container was reaped: none is left, at once.
    pids = escapees.pids(pod_folder(cluster, "leaves"))
    assert [pid for pid in pids if alive(pid)] == []


async def test_a_deadline_sends_sigterm_to_every_process_of_the_pod_then_sigkill(
    cluster: Cluster,
) -> None:
    api = cluster.api
    pod = python_pod(
        "deadline",
        escapees.script(exits=False),
        activeDeadlineSeconds=3600,
        terminationGracePeriodSeconds=1,
    )
    await api.create("pods", pod)
    await cluster.logged("deadline", escapees.READY)
    pids = escapees.pids(pod_folder(cluster, "deadline"))
    assert all(alive(pid) for pid in pids)
    status, _ = await api.patch_pod("deadline", {"spec": {"activeDeadlineSeconds": 1}})
    assert status == 200
    failed = await phase_is(api, "deadline", "Failed")
    assert failed["status"]["reason"] == "DeadlineExceeded"
    terminated = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 128 + signal.SIGKILL
    assert [pid for pid in pids if alive(pid)] == []
    _, log = await api.log("deadline")
    for who in ("main", "setsid", "double-forked"):
        assert f"{who} got SIGTERM" in log


async def test_deleting_a_pod_ends_every_process_it_started(cluster: Cluster) -> None:
    api = cluster.api
    family = escapees.script(exits=False)
    await api.create("pods", python_pod("deleted", family, terminationGracePeriodSeconds=1))
    await cluster.logged("deleted", escapees.READY)
    pids = escapees.pids(pod_folder(cluster, "deleted"))
    await api.delete_pod("deleted")

    async def gone() -> bool:
        return await api.pod("deleted") is None

    await eventually_async(gone, message="the deleted pod removed", timeout=10)
    # Removed only once its processes ended.
    assert [pid for pid in pids if alive(pid)] == []


CALLER = """
import json, os, pathlib, urllib.request
config = json.loads(pathlib.Path(os.environ["KUBECONFIG"]).read_text())
server = config["clusters"][0]["cluster"]["server"]
token = config["users"][0]["user"]["token"]
path = f"/api/v1/namespaces/default/pods/{os.environ['HOSTNAME']}"
for headers in ({}, {"Authorization": f"Bearer {token}"}):
    try:
        with urllib.request.urlopen(urllib.request.Request(server + path, headers=headers)) as r:
            print("phase", json.loads(r.read())["status"]["phase"], flush=True)
    except urllib.error.HTTPError as error:
        print("refused", error.code, flush=True)
"""


async def test_a_pod_reaches_the_api_server_with_the_token_of_its_kubeconfig(
    cluster: Cluster,
) -> None:
    await cluster.api.create("pods", python_pod("caller", CALLER))
    await phase_is(cluster.api, "caller", "Succeeded")
    log = await cluster.logged("caller", "phase")
    assert log.splitlines() == ["refused 403", "phase Running"]


RENDEZVOUS = """
import json, os, socket
names = ["HOSTNAME", "MASTER_ADDR", "MASTER_PORT", "PEER"]
print(json.dumps({name: os.environ.get(name) for name in names}), flush=True)
address = (os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]))
if os.environ["RANK"] == "0":
    server = socket.create_server(address)
    server.settimeout(20)
    print("listening", flush=True)
    connection, _ = server.accept()
    connection.sendall(b"hello")
    connection.close()
elif os.environ["RANK"] == "1":
    with socket.create_connection(address, timeout=20) as connection:
        print("rank 0 says", connection.recv(5).decode(), flush=True)
"""


def indexed_pod(subdomain: str, index: int, *, peer: str) -> dict[str, Any]:
    """A pod as the job controller makes it for index `index` of an Indexed Job named as its
    subdomain, with a rendezvous port and the DNS name of index 0 in its env."""
    env = [
        {"name": "MASTER_ADDR", "value": f"{subdomain}-0.{subdomain}"},
        {"name": "MASTER_PORT", "value": "29500"},
        {"name": "RANK", "value": str(index) if subdomain == "trial" else "none"},
        {"name": "PEER", "value": peer},
    ]
    return python_pod(
        f"{subdomain}-{index}-x7k2p",
        RENDEZVOUS,
        hostname=f"{subdomain}-{index}",
        subdomain=subdomain,
        container={"env": env, "ports": [{"name": "rendezvous", "containerPort": 29500}]},
    )


async def test_pods_of_a_subdomain_share_their_ports_and_reach_each_other_by_name(
    cluster: Cluster,
) -> None:
    api = cluster.api
    await api.create("pods", indexed_pod("trial", 0, peer="trial-1.trial.default.svc"))
    # Index 1 starts once index 0 listens, so it connects without retrying.
    await cluster.logged("trial-0-x7k2p", "listening")
    fully_qualified = "trial-0.trial.default.svc.cluster.local"
    await api.create("pods", indexed_pod("trial", 1, peer=fully_qualified))
    await api.create("pods", indexed_pod("other", 0, peer="trial-0.trial"))
    for name in ("trial-0-x7k2p", "trial-1-x7k2p", "other-0-x7k2p"):
        done = await phase_is(api, name, "Succeeded", "Failed")
        assert done["status"]["phase"] == "Succeeded", cluster.kubelet.logs("default", name, None)
    seen = {
        name: json.loads((cluster.kubelet.logs("default", name, None) or "").splitlines()[0])
        for name in ("trial-0-x7k2p", "trial-1-x7k2p", "other-0-x7k2p")
    }
    shared_port = seen["trial-0-x7k2p"]["MASTER_PORT"]
    assert shared_port != "29500"
    assert seen["trial-0-x7k2p"] == {
        "HOSTNAME": "trial-0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": shared_port,
        "PEER": "127.0.0.1",
    }
    assert seen["trial-1-x7k2p"] == {
        "HOSTNAME": "trial-1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": shared_port,
        "PEER": "127.0.0.1",
    }
    # Another subdomain: a port of its own, and the first group's names are not its peers.
    other = seen["other-0-x7k2p"]
    assert other["MASTER_PORT"] not in (shared_port, "29500")
    assert other["MASTER_ADDR"] == "127.0.0.1"
    assert other["PEER"] == "trial-0.trial"
    assert "rank 0 says hello" in (cluster.kubelet.logs("default", "trial-1-x7k2p", None) or "")


async def test_a_kubelet_without_the_token_cannot_start(tmp_path: Path) -> None:
    async with ApiServer() as server:
        kubelet = Kubelet(server.url, workdir=tmp_path)
        with pytest.raises(RuntimeError, match="could not list pods"):
            await kubelet.start()


async def test_no_process_outlives_stop(tmp_path: Path) -> None:
    family = escapees.script(exits=False)
    async with ApiServer() as server:
        kubelet = Kubelet(server.url, workdir=tmp_path, token=server.token)
        await kubelet.start()
        async with aiohttp.ClientSession(server.url, headers=server.headers) as client:
            api = Api(client)
            await api.create("pods", python_pod("family", family, terminationGracePeriodSeconds=1))
            running = await phase_is(api, "family", "Running")
            cluster = Cluster(server.url, kubelet, api)
            await cluster.logged("family", escapees.READY)
        (folder,) = tmp_path.glob("default/family-*")
        pids = [pid_of(running), *escapees.pids(folder)]
        assert all(alive(pid) for pid in pids)
        await kubelet.stop()
        assert [pid for pid in pids if alive(pid)] == []


async def test_the_kubelet_relists_when_the_api_server_comes_back(tmp_path: Path) -> None:
    server = ApiServer()
    await server.start()
    port = int(server.url.rsplit(":", 1)[1])
    kubelet = Kubelet(server.url, workdir=tmp_path, token=server.token)
    await kubelet.start()
    try:
        async with aiohttp.ClientSession(server.url, headers=server.headers) as client:
            api = Api(client)
            await api.create("pods", python_pod("before", "import time; time.sleep(60)"))
            pid = pid_of(await phase_is(api, "before", "Running"))
        await server.stop()
        # A fresh, empty server on the same address: the kubelet's watch broke, it lists again,
        # stops the pod that no longer exists and runs the new one.
        server = ApiServer(token=server.token)  # the token the kubelet has
        await server.start(port=port)
        async with aiohttp.ClientSession(server.url, headers=server.headers) as client:
            api = Api(client)
            await api.create("pods", python_pod("after", "print('after')"))
            await phase_is(api, "after", "Succeeded")

        async def ended() -> bool:
            return not alive(pid)

        await eventually_async(ended, message="the vanished pod's process ending", timeout=10)
    finally:
        await kubelet.stop()
        await server.stop()

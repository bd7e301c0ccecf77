"""`kubetune dashboard` end to end: a study run to completion on the embedded control plane,
the dashboard started as its own process against the cluster, optuna-dashboard's JSON API read
back (the same trials and best value as the cluster, a second study appearing live, writes
refused), and the study's page opened in headless Chromium (Debian's `chromium`, installed by
scripts/test), whose screenshot is kept under test-artifacts/."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubetune_localcluster.environment import free_port
from tests.e2e.conftest import ROOT, Operator
from tests.e2e.test_endings import WRITE_LOSS, X, apply, finish, study, trainer, trials_of
from tests.eventually import eventually
from tests.localcluster.conftest import Kube, local_kube

ARTIFACTS = ROOT / "test-artifacts"

# A loss with its minimum at x = 2.
CODE = """
    import json, os
    loss = (float(os.environ["KUBETUNE_PARAM_X"]) - 2) ** 2
"""


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kube]:
    with local_kube(tmp_path_factory.mktemp("dashboard"), crds=True) as cluster:
        operator = Operator(cluster, tmp_path_factory.mktemp("operator") / "operator.log")
        operator.start()
        try:
            yield cluster
        finally:
            operator.stop()


@pytest.fixture(scope="module")
def finished(kube: Kube) -> dict[str, Any]:
    """The study `dash`, run to completion: its TuningStudy."""
    apply(kube, study("dash", trainer(CODE, WRITE_LOSS), [X], {"maxTrials": 5, "parallelism": 2}))
    return finish(kube, "dash", timeout=120)


@pytest.fixture(scope="module")
def dashboard(
    kube: Kube, finished: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`kubetune dashboard` on a free port: its base URL, once it serves the finished study."""
    port = free_port()
    log = tmp_path_factory.mktemp("dashboard-log") / "dashboard.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "kubetune", "dashboard", "--port", str(port)],
            env=kube.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        eventually(  # its log follows, printed below
            lambda: study_id(url, "default/dash") is not None,
            timeout=60,
            interval=0.2,
            message="the dashboard serving default/dash",
        )
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)
        print(log.read_text()[-20000:])


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def request(url: str, method: str, body: dict[str, Any]) -> tuple[int, Any]:
    data = json.dumps(body).encode()
    call = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(call, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def study_id(url: str, name: str) -> int | None:
    try:
        summaries = get(f"{url}/api/studies")["study_summaries"]
    except OSError:
        return None  # not serving yet
    ids = [s["study_id"] for s in summaries if s["study_name"] == name]
    return ids[0] if ids else None


def test_the_dashboard_shows_the_clusters_trials_and_best_value(
    kube: Kube, finished: dict[str, Any], dashboard: str
) -> None:
    detail = get(f"{dashboard}/api/studies/{study_id(dashboard, 'default/dash')}")

    records = trials_of(kube, "dash")
    shown = sorted(detail["trials"], key=lambda t: t["number"])
    assert [t["number"] for t in shown] == [r["spec"]["number"] for r in records]
    assert [t["values"] for t in shown] == [r["status"]["values"] for r in records]
    assert [t["state"] for t in shown] == ["Complete"] * len(records)
    assert [[p["param_internal_value"] for p in t["params"]] for t in shown] == [
        [r["spec"]["params"]["x"]] for r in records
    ]
    assert detail["objective_names"] == ["loss"]
    best = finished["status"]["bestTrial"]
    [best_shown] = detail["best_trials"]
    assert (best_shown["number"], best_shown["values"]) == (best["number"], [best["value"]])
    attrs = {a["key"]: a["value"] for a in shown[0]["user_attrs"]}
    assert attrs["pod"] == records[0]["status"]["podName"]
    assert attrs["kubetune_state"] == "Succeeded"


def test_a_new_study_appears_without_a_restart(kube: Kube, dashboard: str) -> None:
    apply(kube, study("later", trainer(CODE, WRITE_LOSS), [X], {"maxTrials": 2}))
    eventually(
        lambda: study_id(dashboard, "default/later") is not None,
        timeout=60,
        interval=0.2,
        message="default/later on the dashboard",
    )
    later = study_id(dashboard, "default/later")
    # Its trials show up as the operator creates and finishes them.
    eventually(
        lambda: (
            [t["state"] for t in get(f"{dashboard}/api/studies/{later}")["trials"]]
            == ["Complete", "Complete"]
        ),
        timeout=60,
        interval=0.2,
        message="default/later's two trials Complete on the dashboard",
    )


def test_writes_through_the_dashboard_are_refused(kube: Kube, dashboard: str) -> None:
    dash = study_id(dashboard, "default/dash")
    status, body = request(
        f"{dashboard}/api/studies/{dash}/note", "PUT", {"version": 1, "body": "hi"}
    )
    assert status == 403
    assert "read-only" in body["reason"]
    status, body = request(f"{dashboard}/api/studies/{dash}", "DELETE", {})
    assert status == 403
    status, _ = request(
        f"{dashboard}/api/studies", "POST", {"study_name": "x", "directions": ["minimize"]}
    )
    assert status == 403
    # The server goes on, and the study is still there (and still in the cluster).
    assert study_id(dashboard, "default/dash") == dash
    kube.kubectl("get", "tuningstudy", "dash")


def test_a_browser_shows_the_study_and_a_plot(dashboard: str, tmp_path: Path) -> None:
    browser = shutil.which("chromium")
    # Never a skip: scripts/test installs Debian's chromium; a run without it must fail.
    assert browser, "chromium is missing: run 'sudo apt-get install chromium' (scripts/test does)"
    page = f"{dashboard}/dashboard/studies/{study_id(dashboard, 'default/dash')}"
    common = [
        browser,
        "--headless",
        "--no-sandbox",  # as root in CI containers
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'profile'}",
        # Virtual time runs the page's scripts (fetches, plotly) before dumping or shooting.
        "--virtual-time-budget=15000",
        "--window-size=1280,900",
    ]
    dom = subprocess.run(
        [*common, "--dump-dom", page], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    screenshot = tmp_path / "dashboard.png"
    subprocess.run(
        [*common, f"--screenshot={screenshot}", page], capture_output=True, timeout=120, check=True
    )
    ARTIFACTS.mkdir(exist_ok=True)
    kept = ARTIFACTS / "dashboard-study.png"
    shutil.copyfile(screenshot, kept)
    print(f"screenshot: {screenshot} (kept as {kept})")

    assert "default/dash" in dom
    assert "js-plotly-plot" in dom
    assert "<svg" in dom
    assert screenshot.stat().st_size > 10_000  # a rendered page, not a blank one

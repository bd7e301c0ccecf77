"""`kubetune run-local` ends every process a trial started, children that setsid or
double-fork included, whether the trial exits or is stopped at its deadline."""

from __future__ import annotations

from pathlib import Path

from kubetune.localrun import LocalRun
from kubetune.spec.trial import TrialState
from tests import escapees
from tests.unit.test_localrun import study

TRAINER = f"""
import json, os, sys
x = float(sys.argv[1])
with open(os.environ["KUBETUNE_TERMINATION_LOG"], "w") as log:
    json.dump({{"loss": x}}, log)
exec({escapees.script(exits=True)!r} if x < 1 else {escapees.script(exits=False)!r})
"""


def test_no_process_of_a_trial_outlives_it(tmp_path: Path) -> None:
    document = study(
        TRAINER,
        {"maxTrials": 2, "parallelism": 2, "trialTimeout": "2s"},
        warmStart={"configurations": [{"x": 0.0}, {"x": 2.0}]},
    )
    run = LocalRun(document, tmp_path, echo=print)
    run.run()
    states = {float(t.spec.params["x"]): t.status.state for t in run.trials.values()}  # type: ignore[arg-type]
    assert states == {0.0: TrialState.SUCCEEDED, 2.0: TrialState.TIMED_OUT}
    for trial in run.trials.values():
        folder = tmp_path / (trial.metadata.name or "")
        pids = escapees.pids(folder)
        assert len(pids) == 2, (folder / "log").read_text()
        assert [pid for pid in pids if escapees.alive(pid)] == []

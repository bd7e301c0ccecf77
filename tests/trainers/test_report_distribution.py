"""kubetune-report as a trainer image installs it: a wheel of the helper alone, needing
nothing (prometheus-client only with the `prometheus` extra)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_the_helper_alone_and_requires_nothing(tmp_path: Path) -> None:
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"),
            *("--wheel-dir", str(tmp_path), str(REPO / "report")),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("kubetune_report-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(f"{info}/METADATA").decode()
    assert {name.split("/")[0] for name in names} == {"kubetune_report", info}
    modules = {Path(name).name for name in names if name.startswith("kubetune_report/")}
    assert {"__init__.py", "contract.py", "reporter.py", "py.typed"} <= modules
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert requires == ['Requires-Dist: prometheus-client==0.26.0; extra == "prometheus"']

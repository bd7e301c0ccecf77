"""The three distributions of this repository, as they are built and installed: kubetune (the
operator, the CLI and the tuning core), kubetune-report (the trainer's reporting helper,
standard library only) and kubetune-localcluster (the local cluster of `kubetune up`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def build_wheel(source: Path, into: Path) -> tuple[set[str], str, list[str]]:
    """The wheel's top-level entries, its dist-info folder and its Requires-Dist lines.

    Built from a copy of the sources: setuptools leaves a build/ folder beside them, whose
    stale files a later build would pack."""
    copy = into / "source"
    ignored = shutil.ignore_patterns("build", "*.egg-info", "__pycache__", ".*")
    if source == REPO:  # the operator's distribution: its metadata and operator/ only
        copy.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(source / name, copy / name)
        shutil.copytree(source / "operator", copy / "operator", ignore=ignored)
    else:
        shutil.copytree(source, copy, ignore=ignored)
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"),
            *("--wheel-dir", str(into), str(copy)),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = into.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(f"{info}/METADATA").decode()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    return {name.split("/")[0] for name in names}, info, requires


def test_the_report_wheel_holds_the_helper_alone_and_requires_nothing(tmp_path: Path) -> None:
    top, info, requires = build_wheel(REPO / "report", tmp_path)
    assert top == {"kubetune_report", info}
    assert requires == ['Requires-Dist: prometheus-client==0.26.0; extra == "prometheus"']


def test_the_operator_wheel_carries_neither_the_local_cluster_nor_its_dependencies(
    tmp_path: Path,
) -> None:
    top, info, requires = build_wheel(REPO, tmp_path)
    assert top == {"kubetune", info}
    needed = {line.split(":", 1)[1].split(";")[0].strip() for line in requires if ";" not in line}
    assert "kubetune-report==0.1.0" in needed
    for only_local in ("kubetune-localcluster", "jsonpatch", "cel-python", "cryptography"):
        assert not any(requirement.startswith(only_local) for requirement in needed)
    assert 'Requires-Dist: kubetune-localcluster==0.1.0; extra == "local"' in requires


def test_the_local_cluster_wheel_holds_its_schemas(tmp_path: Path) -> None:
    top, info, _ = build_wheel(REPO / "localcluster", tmp_path)
    assert top == {"kubetune_localcluster", info}
    with zipfile.ZipFile(next(tmp_path.glob("*.whl"))) as archive:
        names = set(archive.namelist())
    assert "kubetune_localcluster/builtin-schemas.json.gz" in names


def without_local_cluster(code: str) -> subprocess.CompletedProcess[str]:
    """`code` in a Python where kubetune_localcluster cannot be imported, as in the operator's
    image."""
    blocked = "import sys; sys.modules['kubetune_localcluster'] = None\n" + code
    return subprocess.run(
        [sys.executable, "-c", blocked], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_operator_client_and_dashboard_run_without_the_local_cluster() -> None:
    done = without_local_cluster(
        "import kubetune.handlers, kubetune.client, kubetune.dashboard.serve, kubetune.cli\n"
        "from typer.testing import CliRunner\n"
        "result = CliRunner().invoke(kubetune.cli.app, ['operator', '--help'])\n"
        "assert result.exit_code == 0, result.output\n"
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("command", [["up", "study.yaml"], ["cluster", "up"]])
def test_up_without_the_local_cluster_says_how_to_install_it(command: list[str]) -> None:
    done = without_local_cluster(
        f"sys.argv = ['kubetune', *{command!r}]\nfrom kubetune.cli import main\nmain()\n"
    )
    assert done.returncode == 1, done.stderr
    assert "kubetune-localcluster is not installed" in done.stderr
    assert "pip install 'kubetune[local]'" in done.stderr
    assert "Traceback" not in done.stderr

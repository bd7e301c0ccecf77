"""`kubetune validate` and the validation rules: every invalid manifest in tests/data/invalid fails
with exactly the problems its `# expect:` lines name, every example passes, and the functions the
controller uses (parse_study, check_study_spec, immutable_changes) behave."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kubetune.cli import app
from kubetune.spec.immutability import immutable_changes, spec_fingerprints
from kubetune.spec.manifests import parse_study, validate_files, validate_text
from kubetune.spec.problems import Problem
from kubetune.spec.rules import check_study_spec
from kubetune.spec.study import TuningStudySpec

ROOT = Path(__file__).resolve().parents[2]
INVALID = sorted((ROOT / "tests" / "data" / "invalid").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def expectations(path: Path) -> list[str]:
    return [
        line.removeprefix("# expect:").strip()
        for line in path.read_text().splitlines()
        if line.startswith("# expect:")
    ]


def problem_lines(output: str) -> list[str]:
    """The problem lines of `kubetune validate` output (indented under their source)."""
    return [line.strip() for line in output.splitlines() if line.startswith("  ")]


def test_there_is_an_invalid_case_per_kind_of_mistake() -> None:
    assert len(INVALID) >= 12
    for path in INVALID:
        assert expectations(path), f"{path.name} has no '# expect:' line"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_manifest_fails_with_exactly_the_expected_problems(path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"{path}: invalid\n")
    lines = problem_lines(result.output)
    expected = expectations(path)
    for expect in expected:
        assert any(expect in line for line in lines), f"missing {expect!r} in:\n{result.output}"
    # Nothing else is reported: each file shows one kind of mistake.
    for line in lines:
        assert any(expect in line for expect in expected), f"unexpected problem: {line}"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid(path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output == f"{path}: valid\n"


def test_console_script_reports_every_file_and_exits_1() -> None:
    script = Path(sys.executable).parent / "kubetune"
    files = [str(path) for path in [*EXAMPLES, *INVALID]]
    result = subprocess.run(
        [str(script), "validate", *files], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 1, result.stderr
    verdicts = [line for line in result.stdout.splitlines() if not line.startswith("  ")]
    assert verdicts == [f"{path}: valid" for path in EXAMPLES] + [
        f"{path}: invalid" for path in INVALID
    ]
    for path in INVALID:
        for expect in expectations(path):
            assert expect in result.stdout


def test_console_script_exits_0_on_the_examples() -> None:
    script = Path(sys.executable).parent / "kubetune"
    result = subprocess.run(
        [str(script), "validate", *map(str, EXAMPLES)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- reading files ---------------------------------------------------------------------------


def manifest(**spec_changes: Any) -> dict[str, Any]:
    """A valid TuningStudy document; keyword arguments replace spec fields (camelCase)."""
    document: dict[str, Any] = {
        "apiVersion": "kubetune.io/v1alpha1",
        "kind": "TuningStudy",
        "metadata": {"name": "demo"},
        "spec": {
            "objective": {"metrics": [{"name": "loss"}]},
            "searchSpace": [
                {"name": "x", "type": "float", "low": -1.0, "high": 1.0},
                {"name": "optimizer", "type": "categorical", "choices": ["sgd", "adam"]},
                {
                    "name": "momentum",
                    "type": "float",
                    "low": 0.5,
                    "high": 0.9,
                    "condition": {"parameter": "optimizer", "values": ["sgd"]},
                },
            ],
            "trialTemplate": {
                "spec": {"containers": [{"name": "trainer", "image": "t:1", "command": ["t"]}]}
            },
        },
    }
    document["spec"].update(spec_changes)
    return document


def spec(**spec_changes: Any) -> TuningStudySpec:
    return TuningStudySpec.model_validate(manifest(**spec_changes)["spec"])


def paths(problems: list[Problem]) -> list[str]:
    return [problem.path for problem in problems]


def test_multi_document_file_numbers_its_documents_and_skips_empty_ones(tmp_path: Path) -> None:
    import yaml

    bad = manifest(budget={"maxTrials": 0})
    text = "---\n" + yaml.safe_dump(manifest()) + "---\n---\n" + yaml.safe_dump(bad) + "---\n"
    path = tmp_path / "two.yaml"
    path.write_text(text)
    reports = validate_files([path])
    assert [(r.source, r.valid) for r in reports] == [
        (f"{path}#1", True),
        (f"{path}#3", False),
    ]
    assert str(reports[1].problems[0]).startswith(
        "spec.budget.maxTrials: must be greater than zero"
    )


def test_missing_file_and_empty_file_are_problems(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here\n")
    missing, nothing = validate_files([tmp_path / "nope.yaml", empty])
    assert missing.source == str(tmp_path / "nope.yaml")
    assert [p.message for p in missing.problems] == ["file not found"]
    assert [p.message for p in nothing.problems] == ["the file holds no YAML document"]


def test_numbers_are_read_as_kubectl_reads_them() -> None:
    # PyYAML alone reads 1e-3 as a string, which would turn these choices into strings.
    text = "\n".join(
        [
            "apiVersion: kubetune.io/v1alpha1",
            "kind: TuningStudy",
            "metadata: {name: demo}",
            "spec:",
            "  objective: {metrics: [{name: loss}]}",
            "  searchSpace: [{name: lr, type: categorical, choices: [1e-3, 1e-4, 2.5E+2, '1e-5']}]",
            "  trialTemplate: {spec: {containers: [{name: t}]}}",
        ]
    )
    (report,) = validate_text(text, "inline")
    assert report.valid, report.problems
    import yaml

    from kubetune.spec.manifests import ManifestLoader

    document = yaml.load(text, Loader=ManifestLoader)
    assert document["spec"]["searchSpace"][0]["choices"] == [0.001, 0.0001, 250.0, "1e-5"]


def test_syntax_error_after_a_good_document_reports_both(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(manifest()) + "---\nspec: [unclosed\n")
    first, error = validate_files([path])
    assert first.source == f"{path}#1"
    assert first.valid
    assert error.source == str(path)
    assert error.problems[0].message.startswith("YAML syntax error at line")


# --- parse_study -----------------------------------------------------------------------------


def test_parse_study_returns_the_study_when_valid() -> None:
    study, problems = parse_study(manifest())
    assert problems == []
    assert study is not None
    assert study.spec.search_space[2].condition is not None


def test_parse_study_reports_schema_and_semantic_problems() -> None:
    study, problems = parse_study(manifest(budget={"parallelism": -1}, pruner={"name": "bogus"}))
    assert study is None
    assert paths(problems) == ["spec.pruner.name", "spec.budget.parallelism"]
    assert "must be greater than zero (got -1)" in str(problems[1])
    # Semantic rules run once the schema is satisfied, and all of them are reported.
    study, problems = parse_study(
        manifest(
            searchSpace=[
                {"name": "x", "type": "float", "low": 2.0, "high": 1.0},
                {"name": "x", "type": "int", "low": 0, "high": 3, "log": True},
            ]
        )
    )
    assert study is not None
    assert paths(problems) == [
        "spec.searchSpace[0].low",
        "spec.searchSpace[1].low",
        "spec.searchSpace[1].name",
    ]


def test_parse_study_rejects_other_kinds_and_versions() -> None:
    document = manifest()
    document["kind"] = "Deployment"
    assert paths(parse_study(document)[1]) == ["kind"]
    document = manifest()
    document["apiVersion"] = "kubetune.io/v1"
    study, problems = parse_study(document)
    assert study is None
    assert str(problems[0]).startswith('apiVersion: "kubetune.io/v1" is not allowed')
    _, problems = parse_study(["not", "a", "mapping"])  # type: ignore[arg-type]
    assert "not a mapping" in problems[0].message


def test_parse_study_needs_a_name() -> None:
    document = manifest()
    document["metadata"] = {}
    assert paths(parse_study(document)[1]) == ["metadata.name"]
    document["metadata"] = {"generateName": "demo-"}
    assert parse_study(document)[1] == []


def test_unknown_field_lists_known_fields() -> None:
    _, problems = parse_study(manifest(budget={"maxTrails": 3}))
    (problem,) = problems
    assert problem.path == "spec.budget.maxTrails"
    assert problem.fix.startswith("did you mean maxTrials? remove it or check the spelling")
    assert "known fields are maxTrials, parallelism" in problem.fix


def test_missing_field_names_it_with_its_description() -> None:
    document = manifest()
    del document["spec"]["trialTemplate"]
    (problem,) = parse_study(document)[1]
    assert str(problem) == (
        "spec.trialTemplate: is required but missing; fix: add trialTemplate "
        "(The pod each trial runs)"
    )


# --- check_study_spec ------------------------------------------------------------------------


def test_valid_spec_has_no_problems() -> None:
    assert check_study_spec(spec()) == []


@pytest.mark.parametrize(
    ("parameter", "path", "words"),
    [
        ({"type": "float", "high": 1.0}, "spec.searchSpace[0].low", "needs low"),
        ({"type": "int", "low": 1}, "spec.searchSpace[0].high", "needs high"),
        ({"type": "float", "low": 0.0, "high": 1.0, "step": 0.3}, "[0].step", "does not divide"),
        ({"type": "int", "low": 1, "high": 64, "log": True, "step": 2}, "[0].step", "log and step"),
        ({"type": "categorical", "choices": [True, 1]}, "[0].choices[1]", "repeats choices[0]"),
        ({"type": "categorical", "choices": [1, 1.0]}, "[0].choices[1]", "repeats choices[0]"),
        ({"type": "fixed", "value": 3, "log": True}, "[0].log", "does not apply to a fixed"),
    ],
)
def test_parameter_rules(parameter: dict[str, Any], path: str, words: str) -> None:
    problems = check_study_spec(spec(searchSpace=[{"name": "p", **parameter}]))
    assert len(problems) == 1, problems
    assert problems[0].path.endswith(path)
    assert words in problems[0].message


@pytest.mark.parametrize(
    "parameter",
    [
        # Float rounding must not make these look wrong: 0.7 - 0.1 is 0.6000000000000001.
        {"type": "float", "low": 0.1, "high": 0.7, "step": 0.1},
        {"type": "float", "low": 0.0, "high": 1.0, "step": 0.05},
        {"type": "int", "low": 1, "high": 64, "log": True, "step": 1},
        {"type": "int", "low": 0, "high": 12, "step": 4},
        # log: false is the default the API server may write: not "a field set".
        {"type": "categorical", "choices": ["a", "b"], "log": False},
    ],
)
def test_parameter_rules_accept(parameter: dict[str, Any]) -> None:
    assert check_study_spec(spec(searchSpace=[{"name": "p", **parameter}])) == []


def when(parameter: str, *values: Any) -> dict[str, Any]:
    return {"parameter": parameter, "values": list(values)}


def test_condition_values_follow_the_parent_type() -> None:
    space = [
        {"name": "n", "type": "int", "low": 0, "high": 10, "step": 2},
        {"name": "flag", "type": "categorical", "choices": [True, False]},
        {"name": "a", "type": "fixed", "value": 1, "condition": when("n", 4, 5, 12)},
        {"name": "b", "type": "fixed", "value": 1, "condition": when("flag", True, 1)},
    ]
    problems = check_study_spec(spec(searchSpace=space))
    assert paths(problems) == [
        "spec.searchSpace[2].condition.values[1]",
        "spec.searchSpace[2].condition.values[2]",
        "spec.searchSpace[3].condition.values[1]",
    ]
    assert "not low + a multiple of step 2" in problems[0].message
    assert "outside [0, 10]" in problems[1].message
    # The engine keeps booleans apart from numbers: 1 is not a choice of flag.
    assert "not among the choices [true, false]" in problems[2].message


def test_algorithm_rules() -> None:
    two = {"metrics": [{"name": "a"}, {"name": "b", "direction": "maximize"}]}
    assert check_study_spec(spec(objective=two, algorithm={"name": "nsga2"})) == []
    nsga_single = spec(algorithm={"name": "nsga3", "populationSize": 10})
    assert check_study_spec(nsga_single) == []  # Optuna's NSGA samplers take one objective too.
    problems = check_study_spec(
        spec(objective=two, algorithm={"name": "cmaes", "multivariate": True})
    )
    assert paths(problems) == ["spec.algorithm.multivariate", "spec.algorithm.name"]
    assert check_study_spec(spec(objective=two, algorithm={"name": "gp"})) == []
    problems = check_study_spec(
        spec(algorithm={"name": "tpe", "multivariate": False, "group": True})
    )
    assert paths(problems) == ["spec.algorithm.group"]
    problems = check_study_spec(
        spec(algorithm={"name": "cmaes", "separable": True, "withMargin": True})
    )
    assert paths(problems) == ["spec.algorithm.withMargin"]


def test_grid_rules() -> None:
    grid = {"name": "grid"}
    problems = check_study_spec(spec(algorithm=grid))
    # x is a continuous float; momentum is conditional (and continuous).
    assert paths(problems) == [
        "spec.searchSpace[0]",
        "spec.searchSpace[2]",
        "spec.searchSpace[2].condition",
    ]
    huge = [{"name": "n", "type": "int", "low": 0, "high": 10_000_000}]
    (problem,) = check_study_spec(spec(algorithm=grid, searchSpace=huge))
    assert "10000001 grid points" in problem.message
    discrete = [
        {"name": "n", "type": "int", "low": 0, "high": 4},
        {"name": "c", "type": "categorical", "choices": ["a", "b"]},
    ]
    partial = {"configurations": [{"n": 2}]}
    (problem,) = check_study_spec(spec(algorithm=grid, searchSpace=discrete, warmStart=partial))
    assert problem.path == "spec.warmStart.configurations[0]"
    assert "lacks c" in problem.message


def test_pruner_rules() -> None:
    assert check_study_spec(spec(pruner={"name": "median", "patience": 3, "minDelta": 0.1})) == []
    problems = check_study_spec(spec(pruner={"name": "none", "patience": 3}))
    assert paths(problems) == ["spec.pruner.patience"]
    assert "set pruner name: patient" in problems[0].fix
    problems = check_study_spec(spec(pruner={"name": "threshold", "lower": 2.0, "upper": 1.0}))
    assert paths(problems) == ["spec.pruner.lower"]
    problems = check_study_spec(
        spec(pruner={"name": "hyperband", "minResource": 9, "maxResource": 3})
    )
    assert paths(problems) == ["spec.pruner.minResource"]
    problems = check_study_spec(spec(pruner={"name": "successiveHalving", "percentile": 50}))
    assert paths(problems) == ["spec.pruner.percentile"]


def test_budget_rules() -> None:
    gpu = {"name": "t", "image": "t:1", "resources": {"limits": {"nvidia.com/gpu": 2}}}
    template = {"spec": {"containers": [gpu]}}
    money = {"limit": 10, "pricePerGpuHour": {"nvidia.com/gpu": 3}}
    ok = spec(trialTemplate=template, budget={"money": money, "trialTimeout": "1h"})
    assert check_study_spec(ok) == []
    problems = check_study_spec(spec(trialTemplate=template, budget={"money": money}))
    assert paths(problems) == ["spec.budget.trialTimeout"]
    assert "is required with money" in problems[0].message
    # No GPU in the template at all: the money budget would never count anything.
    problems = check_study_spec(spec(budget={"money": money, "trialTimeout": "1h"}))
    assert paths(problems) == ["spec.budget.money.pricePerGpuHour"]
    assert "it requests nothing" in problems[0].message


def test_warm_start_rules() -> None:
    warm = {
        "configurations": [{"x": 0.5, "optimizer": "sgd", "momentum": 0.6}, {"x": 1.5}],
        "results": [
            {"params": {"x": 0.1, "optimizer": "adam"}, "values": [0.3]},
            {"params": {"y": 1}, "values": [float("inf")]},
        ],
    }
    problems = check_study_spec(spec(warmStart=warm))
    assert paths(problems) == [
        "spec.warmStart.configurations[1].x",
        "spec.warmStart.results[1].params.y",
        "spec.warmStart.results[1].values[0]",
    ]


def test_from_studies_names_other_studies_each_once() -> None:
    names = ["small", "demo", "small", "Small_Digits", "tiny.v2"]
    study, problems = parse_study(manifest(warmStart={"fromStudies": names}))
    assert study is not None
    assert paths(problems) == [
        "spec.warmStart.fromStudies[1]",
        "spec.warmStart.fromStudies[2]",
        "spec.warmStart.fromStudies[3]",
    ]
    itself, repeated, not_a_name = problems
    assert "'demo' is this study" in itself.message
    assert "'small' is already fromStudies[0]" in repeated.message
    assert '"Small_Digits" is not a study name: lower-case letters' in not_a_name.message
    assert "metadata.name" in not_a_name.fix


@pytest.mark.parametrize(
    ("names", "path", "words"),
    [
        ([f"s{i}" for i in range(21)], "spec.warmStart.fromStudies", "more than the 20 allowed"),
        (["a" * 64], "spec.warmStart.fromStudies[0]", "at most 63 characters"),
        ([""], "spec.warmStart.fromStudies[0]", "at least 1 character"),
    ],
)
def test_from_studies_is_bounded(names: list[str], path: str, words: str) -> None:
    _, problems = parse_study(manifest(warmStart={"fromStudies": names}))
    assert paths(problems) == [path]
    assert words in problems[0].message


def test_problems_of_every_section_are_reported_together() -> None:
    problems = check_study_spec(
        spec(
            objective={"metrics": [{"name": "a"}, {"name": "a"}]},
            searchSpace=[{"name": "x", "type": "float", "low": 1.0, "high": 1.0}],
            pruner={"name": "percentile"},
            budget={"maxGpuHours": 1},
            trialTemplate={"spec": {"containers": [{"name": "t", "args": ["${params.y}"]}]}},
        )
    )
    assert paths(problems) == [
        "spec.objective.metrics[1].name",
        "spec.searchSpace[0].low",
        "spec.pruner.name",
        "spec.pruner.percentile",
        "spec.budget.trialTimeout",
        "spec.budget.maxGpuHours",
        "spec.trialTemplate.spec.containers[0].args[0]",
    ]


def test_problem_is_one_line_with_path_message_and_fix() -> None:
    problem = Problem("spec.searchSpace[2].low", "must be positive", "set low > 0")
    assert str(problem) == "spec.searchSpace[2].low: must be positive; fix: set low > 0"
    assert (
        str(Problem("", "file not found", "check the path"))
        == "file not found; fix: check the path"
    )


# --- immutable_changes -----------------------------------------------------------------------


def test_budget_may_change_but_not_the_search() -> None:
    old = spec(budget={"maxTrials": 10})
    recorded = spec_fingerprints(old)
    assert immutable_changes(recorded, spec(budget={"maxTrials": 20, "parallelism": 4})) == []
    document = copy.deepcopy(manifest(budget={"maxTrials": 10})["spec"])
    document["searchSpace"][0]["high"] = 2.0
    document["algorithm"] = {"name": "random"}
    document["trialTemplate"]["spec"]["containers"][0]["image"] = "t:2"
    new = TuningStudySpec.model_validate(document)
    problems = immutable_changes(recorded, new)
    assert paths(problems) == ["spec.searchSpace", "spec.algorithm", "spec.trialTemplate"]
    assert "create a new study" in problems[0].fix


def test_writing_a_default_explicitly_is_no_change() -> None:
    explicit = spec(pruner={"name": "none"}, algorithm={"name": "tpe"})
    assert immutable_changes(spec_fingerprints(spec()), explicit) == []


# --- the reference ---------------------------------------------------------------------------


def test_study_spec_reference_describes_every_field() -> None:
    from pydantic import BaseModel

    from kubetune.spec import (
        algorithm,
        budget_spec,
        objective,
        pruner,
        search_space,
        study,
        trial_template,
        warm_start,
    )

    text = (ROOT / "docs" / "study-spec.md").read_text()
    models: list[type[BaseModel]] = [
        study.TuningStudySpec,
        objective.Objective,
        objective.ObjectiveMetric,
        search_space.Parameter,
        search_space.ParameterCondition,
        algorithm.Algorithm,
        pruner.Pruner,
        budget_spec.Budget,
        budget_spec.MoneyBudget,
        warm_start.WarmStart,
        warm_start.WarmStartResult,
        trial_template.TrialTemplate,
        trial_template.PodSpec,
    ]
    undocumented = [
        f"{model.__name__}.{info.alias or name}"
        for model in models
        for name, info in model.model_fields.items()
        if f"`{info.alias or name}`" not in text and f"`spec.{info.alias or name}`" not in text
    ]
    assert undocumented == []
    enums = (
        algorithm.AlgorithmName,
        pruner.PrunerName,
        search_space.ParameterType,
        objective.Aggregation,
    )
    for enum in enums:
        assert all(f"`{member.value}`" in text for member in enum)

"""The example trainers: they learn for real, a seed makes them reproducible on the CPU, they
take every hyperparameter the digits example can sample, and as `python -m` commands they report
through kubetune_report to the pod annotation and the termination message."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from kubetune.controller.trial_pod import param_env, substitute
from kubetune.engine import Engine
from kubetune.spec import api
from kubetune.spec.manifests import parse_study
from kubetune_trainers import charlm, digits
from kubetune_trainers.params import MAX_SEED, SEED_ENV, ParameterError, read_params
from tests.trainers.conftest import ApiServer

ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")


class Recorder:
    """Collects reports as a trainer sends them."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, dict[str, float]]] = []
        self.final: dict[str, float] | None = None

    def report(self, step: int, **metrics: float) -> None:
        self.steps.append((step, metrics))

    def report_final(self, **metrics: float) -> None:
        self.final = metrics


def configured(params: Any, **values: Any) -> dict[str, Any]:
    config, _ = read_params(params, {}, [], prog="test", description="")
    unknown = set(values) - set(config)
    assert not unknown, unknown
    return {**config, **values}


def run_digits(**values: Any) -> Recorder:
    recorder = Recorder()
    digits.train(configured(digits.PARAMS, **values), CPU, recorder)
    return recorder


LM_EVALUATION = ("val_loss", "val_perplexity", "train_loss")
TINY_LM = {
    "layers": 1,
    "width": 32,
    "heads": 2,
    "context": 32,
    "batch_size": 16,
    "steps": 150,
    "warmup_steps": 10,
    "eval_interval": 40,
}


def run_charlm(**values: Any) -> Recorder:
    recorder = Recorder()
    charlm.train(configured(charlm.PARAMS, **{**TINY_LM, **values}), CPU, recorder)
    return recorder


# ---- digits -----------------------------------------------------------------------------


def test_digits_learns_and_broken_learning_rates_do_not() -> None:
    sane = run_digits(learning_rate=0.01, epochs=4)
    too_small = run_digits(learning_rate=1e-6, epochs=4)
    too_large = run_digits(learning_rate=10.0, optimizer="sgd", epochs=4)
    assert sane.final is not None
    assert too_small.final is not None
    assert too_large.final is not None
    assert sane.final["val_accuracy"] > 0.9
    assert sane.final["test_accuracy"] > 0.9
    assert too_small.final["val_accuracy"] < 0.4
    assert too_large.final["val_accuracy"] < 0.4
    # Validation improves over the epochs of a sane run.
    accuracies = [metrics["val_accuracy"] for _, metrics in sane.steps]
    assert accuracies[-1] > accuracies[0]


def test_digits_reports_every_epoch_and_the_best_epoch_at_the_end() -> None:
    run = run_digits(epochs=4, hidden_units=32, hidden_layers=1)
    assert [step for step, _ in run.steps] == [1, 2, 3, 4]
    assert all(set(m) == {"val_accuracy", "val_loss", "train_loss"} for _, m in run.steps)
    assert run.final is not None
    assert list(run.final) == [
        "val_accuracy",
        "val_loss",
        "test_accuracy",
        "test_loss",
        "best_epoch",
    ]
    best = max(run.steps, key=lambda report: report[1]["val_accuracy"])
    assert run.final["best_epoch"] == best[0]
    assert run.final["val_accuracy"] == best[1]["val_accuracy"]
    assert run.final["val_loss"] == best[1]["val_loss"]


def test_digits_is_deterministic_with_a_seed() -> None:
    settings = {
        "epochs": 2,
        "optimizer": "sgd",
        "momentum": 0.8,
        "dropout": 0.3,
        "augmentation": 0.7,
        "hidden_units": 48,
        "seed": 5,
    }
    first, second = run_digits(**settings), run_digits(**settings)
    assert first.steps == second.steps
    assert first.final == second.final
    other = run_digits(**{**settings, "seed": 6})
    assert other.steps != first.steps


def test_augmentation_moves_and_noises_the_images() -> None:
    data = digits.load_split(0, CPU)
    images = data.train_x[:64]
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(digits.augment(images, 0.0, generator), images)
    changed = digits.augment(images, 1.0, generator)
    assert changed.shape == images.shape
    assert changed.min() >= 0.0
    assert changed.max() <= 1.0
    assert (changed - images).abs().mean() > 0.05


def test_the_split_is_fixed_by_split_seed() -> None:
    first, again = digits.load_split(0, CPU), digits.load_split(0, CPU)
    other = digits.load_split(1, CPU)
    assert torch.equal(first.test_x, again.test_x)
    assert not torch.equal(first.test_x, other.test_x)
    assert (len(first.train_y), len(first.val_y), len(first.test_y)) == (1149, 288, 360)


def example_trial_inputs(
    count: int, example: str = "digits-classifier"
) -> list[tuple[dict[str, str], list[str]]]:
    """The environment and args the operator gives an example study's first trials."""
    document = yaml.safe_load((ROOT / f"examples/{example}.yaml").read_text())
    study, problems = parse_study(document)
    assert study is not None, problems
    engine = Engine(study.spec, example, default_seed=0)
    args = study.spec.trial_template.spec.containers[0].args or []
    trials = []
    for _ in range(count):
        params = engine.ask().params
        environ = {item["name"]: item["value"] for item in param_env(params)}
        trials.append((environ, [substitute(part, params) for part in args]))
    return trials


def test_digits_accepts_every_parameter_the_example_samples() -> None:
    trials = example_trial_inputs(8)
    optimizers = set()
    for environ, argv in trials:
        config, _ = read_params(digits.PARAMS, environ, argv, prog="digits", description="")
        sampled = json.loads(environ[api.PARAMS_ENV])
        for name, value in sampled.items():
            assert config[name] == pytest.approx(value) if name != "optimizer" else value
        assert config["epochs"] == 12
        optimizers.add(config["optimizer"])
        recorder = Recorder()
        digits.train({**config, "epochs": 1}, CPU, recorder)
        assert recorder.final is not None
        assert 0.0 <= recorder.final["val_accuracy"] <= 1.0
    assert "sgd" in optimizers
    assert optimizers - {"sgd"}


# ---- the language model -------------------------------------------------------------------


def test_charlm_learns_and_broken_learning_rates_do_not() -> None:
    sane = run_charlm(learning_rate=2e-2)
    too_small = run_charlm(learning_rate=1e-6)
    too_large = run_charlm(learning_rate=10.0)
    assert sane.final is not None
    assert too_small.final is not None
    assert too_large.final is not None
    data = charlm.encode(charlm.corpus())
    uniform = math.log(len(data.vocabulary))
    # The best a model that ignores context can do: character frequencies of the training text.
    frequencies = torch.bincount(data.train, minlength=len(data.vocabulary)).double() + 1
    unigram = -(frequencies / frequencies.sum()).log()[data.val].mean().item()
    assert too_small.final["val_loss"] > uniform - 0.1  # learned nothing
    assert sane.final["val_loss"] < unigram - 0.3  # learned to use the context
    assert too_large.final["val_loss"] > sane.final["val_loss"] + 0.5
    assert sane.final["val_perplexity"] == pytest.approx(math.exp(sane.final["val_loss"]))


def test_charlm_accepts_every_parameter_the_example_samples() -> None:
    for environ, argv in example_trial_inputs(6, "charlm"):
        config, _ = read_params(charlm.PARAMS, environ, argv, prog="charlm", description="")
        sampled = json.loads(environ[api.PARAMS_ENV])
        for name, value in sampled.items():
            assert config[name] == pytest.approx(value)
        assert charlm.check_heads(config) is None  # the example's widths suit every heads value
        recorder = Recorder()
        tiny = {**config, "steps": 2, "eval_interval": 2, "layers": 1, "width": config["heads"] * 8}
        charlm.train(tiny, CPU, recorder)
        assert recorder.final is not None
        assert math.isfinite(recorder.final["val_loss"])


def test_charlm_reports_at_each_evaluation_and_tests_at_the_end() -> None:
    run = run_charlm(steps=50, eval_interval=20)
    assert [step for step, _ in run.steps] == [20, 40, 50]
    assert all(set(metrics) == set(LM_EVALUATION) for _, metrics in run.steps)
    assert run.final is not None
    assert set(run.final) == {*LM_EVALUATION, "test_loss", "test_perplexity"}
    assert {name: run.final[name] for name in LM_EVALUATION} == run.steps[-1][1]
    assert run.final["test_perplexity"] == pytest.approx(math.exp(run.final["test_loss"]))
    # A different text than validation, so a different loss (same model, same scale).
    assert run.final["test_loss"] != run.final["val_loss"]
    assert abs(run.final["test_loss"] - run.final["val_loss"]) < 0.5


def test_charlm_splits_the_play_into_three_contiguous_blocks() -> None:
    text = charlm.corpus()
    data = charlm.encode(text)
    index = {char: code for code, char in enumerate(data.vocabulary)}
    # In order and without overlap: together they are the play, each character once.
    whole = torch.tensor([index[char] for char in text])
    assert torch.equal(torch.cat([data.train, data.val, data.test]), whole)
    sizes = [len(data.train), len(data.val), len(data.test)]
    assert [round(size / len(text), 3) for size in sizes] == [0.8, 0.1, 0.1]


def test_charlm_augmentation_edits_training_sequences_reproducibly() -> None:
    codes = charlm.encode(charlm.corpus()).train
    plain = charlm.batch(codes, 64, 32, torch.Generator().manual_seed(1))
    unchanged = charlm.batch(codes, 64, 32, torch.Generator().manual_seed(1), augmentation=0.0)
    assert all(torch.equal(a, b) for a, b in zip(plain, unchanged, strict=True))

    def augmented(probability: float) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(1)
        return charlm.batch(codes, 64, 32, generator, augmentation=probability)

    inputs, targets = augmented(0.5)
    assert inputs.shape == targets.shape == (64, 32)
    assert torch.equal(inputs[:, 1:], targets[:, :-1])  # still text and its next characters
    again = augmented(0.5)
    assert torch.equal(inputs, again[0])
    assert torch.equal(targets, again[1])
    # The same windows (the draws do not depend on the probability), about half of them edited.
    almost_never = augmented(1e-9)[0]
    edited = (inputs != almost_never).any(dim=1).float().mean()
    assert 0.25 < edited < 0.75


def test_perturbed_sequences_keep_their_characters_in_order_but_a_few() -> None:
    """Rows of distinct codes show each edit: a swap, a drop or a repeat breaks the rise by
    one at a few places, and no character moves further than one place per edit."""
    length, rows = 129, 200
    edits = charlm.edit_count(length)
    windows = torch.arange(length + edits).repeat(rows, 1)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(charlm.perturb(windows, length, 0.0, generator), windows[:, :length])
    perturbed = charlm.perturb(windows, length, 0.5, generator)
    changed = (perturbed != windows[:, :length]).any(dim=1)
    assert 0.35 < changed.float().mean() < 0.65
    assert ((perturbed - torch.arange(length)).abs() <= edits).all()
    steps = perturbed.diff(dim=1)
    assert ((steps != 1).sum(dim=1) <= 3 * edits).all()
    assert set(steps[changed].flatten().tolist()) >= {-1, 0, 2}  # swaps, repeats and drops
    assert not (steps[~changed] != 1).any()


def test_charlm_validation_and_test_text_are_never_augmented() -> None:
    """Augmentation changes what the model trains on, not what it is measured on: a model
    that does not learn (learning rate ~0) scores the same with and without it."""
    frozen = {"learning_rate": 1e-12, "steps": 4, "eval_interval": 2, "seed": 7}
    plain, augmented = run_charlm(**frozen), run_charlm(**frozen, augmentation=1.0)
    assert plain.final is not None
    assert augmented.final is not None
    for name in ("val_loss", "test_loss"):
        assert augmented.final[name] == pytest.approx(plain.final[name], abs=1e-6)
    assert augmented.final["train_loss"] != plain.final["train_loss"]


def test_charlm_is_deterministic_with_a_seed() -> None:
    settings = {"steps": 30, "eval_interval": 15, "dropout": 0.2, "augmentation": 0.5, "seed": 3}
    first, second = run_charlm(**settings), run_charlm(**settings)
    assert first.steps == second.steps
    assert first.final == second.final
    assert run_charlm(**{**settings, "seed": 4}).steps != first.steps
    assert run_charlm(**{**settings, "augmentation": 0.0}).steps != first.steps


def test_learning_rate_warms_up_then_decays_to_a_tenth() -> None:
    config = {"learning_rate": 1.0, "warmup_steps": 4, "steps": 104}
    rates = [charlm.learning_rate(step, config) for step in range(104)]
    assert rates[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in itertools.pairwise(rates[3:]))
    assert rates[-1] == pytest.approx(0.1, abs=1e-3)
    assert charlm.learning_rate(0, {**config, "warmup_steps": 0}) == 1.0


def test_the_corpus_is_a_small_public_domain_text() -> None:
    text = charlm.corpus()
    assert 100_000 < len(text.encode()) < 300_000
    assert text.startswith("Hamlet\n")
    assert "To be, or not to be" in text


# ---- parameters ---------------------------------------------------------------------------


def test_parameter_sources_and_precedence() -> None:
    environ = {
        api.PARAMS_ENV: json.dumps({"learning_rate": 0.5, "epochs": 3, "optimizer": "sgd"}),
        "KUBETUNE_PARAM_EPOCHS": "4",
        "KUBETUNE_PARAM_BATCH_SIZE": "128",
        "KUBETUNE_STUDY": "not a parameter",
    }
    config, options = read_params(
        digits.PARAMS, environ, ["--epochs=5", "--hidden-units", "32"], prog="d", description=""
    )
    assert config["learning_rate"] == 0.5  # KUBETUNE_PARAMS
    assert config["batch_size"] == 128  # KUBETUNE_PARAM_BATCH_SIZE over the default
    assert config["epochs"] == 5  # the flag over both
    assert config["hidden_units"] == 32
    assert config["optimizer"] == "sgd"
    assert config["dropout"] == 0.1  # default
    assert options.device == "auto"


@pytest.mark.parametrize(
    ("environ", "argv", "problem"),
    [
        (
            {api.PARAMS_ENV: '{"learning_rat": 0.1}'},
            [],
            "digits has no hyperparameter 'learning_rat' (from KUBETUNE_PARAMS); it accepts "
            "learning_rate, hidden_layers",
        ),
        (
            {"KUBETUNE_PARAM_DEPTH": "3"},
            [],
            "no hyperparameter 'depth' (from KUBETUNE_PARAM_DEPTH)",
        ),
        (
            {"KUBETUNE_PARAM_OPTIMIZER": "rmsprop"},
            [],
            "optimizer='rmsprop' (from KUBETUNE_PARAM_OPTIMIZER) is not one of sgd, adam, adamw",
        ),
        ({}, ["--epochs=2.5"], "epochs='2.5' (from --epochs) must be a whole number"),
        ({}, ["--learning_rate=0"], "learning_rate='0' (from --learning_rate) must be > 0"),
        ({}, ["--dropout=1"], "dropout='1' (from --dropout) must be <= 0.95"),
        ({}, ["--weight_decay=abc"], "weight_decay='abc' (from --weight_decay) must be a number"),
        ({api.PARAMS_ENV: "[1]"}, [], "KUBETUNE_PARAMS must be a JSON object"),
    ],
)
def test_bad_parameters_are_named_with_their_source(
    environ: Mapping[str, str], argv: list[str], problem: str
) -> None:
    with pytest.raises(ParameterError) as error:
        read_params(digits.PARAMS, environ, argv, prog="digits", description="")
    assert problem in str(error.value)


LARGEST_OPERATOR_SEED = 2**31 - 1


@pytest.mark.parametrize("trainer", [digits, charlm], ids=["digits", "charlm"])
def test_kubetune_seed_is_the_seed_unless_the_study_sets_one(trainer: Any) -> None:
    def seed(environ: Mapping[str, str], argv: tuple[str, ...] = ()) -> int:
        config, _ = read_params(trainer.PARAMS, environ, argv, prog="t", description="")
        return int(config["seed"])

    run_seed = {SEED_ENV: str(LARGEST_OPERATOR_SEED)}
    assert seed({}) == 0
    assert seed(run_seed) == LARGEST_OPERATOR_SEED
    assert seed({**run_seed, api.PARAMS_ENV: '{"seed": 3}'}) == 3
    assert seed({**run_seed, "KUBETUNE_PARAM_SEED": "4"}) == 4
    assert seed(run_seed, ("--seed=5",)) == 5
    assert seed({SEED_ENV: " 17 "}) == 17


def test_split_seed_does_not_follow_kubetune_seed() -> None:
    config, _ = read_params(digits.PARAMS, {SEED_ENV: "123"}, [], prog="digits", description="")
    assert (config["seed"], config["split_seed"]) == (123, 0)


def test_large_seeds_train_and_are_exact() -> None:
    config, _ = read_params(
        charlm.PARAMS,
        {api.PARAMS_ENV: json.dumps({"seed": MAX_SEED})},
        [],
        prog="charlm",
        description="",
    )
    assert config["seed"] == MAX_SEED
    assert isinstance(config["seed"], int)
    run = run_charlm(steps=2, eval_interval=2, seed=LARGEST_OPERATOR_SEED)
    assert run.final is not None
    assert run_digits(epochs=1, hidden_units=16, seed=MAX_SEED, split_seed=MAX_SEED).final


@pytest.mark.parametrize("value", ["abc", "", "1.5", "-1", str(MAX_SEED + 1), "0x10"])
def test_a_bad_kubetune_seed_is_refused_by_name(value: str) -> None:
    with pytest.raises(ParameterError) as error:
        read_params(charlm.PARAMS, {SEED_ENV: value}, [], prog="charlm", description="")
    assert str(error.value).startswith(f"{SEED_ENV}={value!r} is not a seed: it must be a whole")
    assert f"from 0 to {MAX_SEED}" in str(error.value)


def test_the_trainer_exits_2_naming_a_bad_kubetune_seed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(api.PARAMS_ENV, raising=False)
    monkeypatch.setenv(SEED_ENV, "seven")
    assert digits.main(["--seed=1"]) == 2
    assert "KUBETUNE_SEED='seven' is not a seed" in capsys.readouterr().err


def test_whole_numbers_arrive_as_text_or_json() -> None:
    config, _ = read_params(
        digits.PARAMS,
        {api.PARAMS_ENV: '{"hidden_units": 64.0}', "KUBETUNE_PARAM_EPOCHS": "7"},
        [],
        prog="d",
        description="",
    )
    assert (config["hidden_units"], config["epochs"]) == (64, 7)
    assert isinstance(config["hidden_units"], int)


def test_charlm_rejects_a_width_the_heads_do_not_divide(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(api.PARAMS_ENV, raising=False)
    assert charlm.main(["--width=50", "--heads=4"]) == 2
    error = capsys.readouterr().err
    assert "width=50 is not a multiple of heads=4" in error
    assert digits.main(["--epochs=0"]) == 2
    assert "epochs='0' (from --epochs) must be >= 1" in capsys.readouterr().err


# ---- as the pod runs them -----------------------------------------------------------------


def run_module(
    module: str,
    args: list[str],
    params: dict[str, Any],
    server: ApiServer,
    tmp_path: Path,
    seed: int | None = None,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    config = server.write_kubeconfig(tmp_path / "kubeconfig")
    log = tmp_path / "termination-log"
    environ = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "OMP_NUM_THREADS": "1",
        "KUBECONFIG": str(config),
        api.POD_NAME_ENV: "trial-0",
        api.POD_NAMESPACE_ENV: "ml",
        api.STUDY_ENV: "study",
        api.TRIAL_ENV: "study-0",
        api.TERMINATION_LOG_ENV: str(log),
        **{item["name"]: item["value"] for item in param_env(params)},
        **({SEED_ENV: str(seed)} if seed is not None else {}),
    }
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done, log


def test_digits_module_reports_through_the_helper(api_server: ApiServer, tmp_path: Path) -> None:
    params = {"learning_rate": 0.01, "hidden_units": 64, "batch_size": 32, "epochs": 12}
    done, log = run_module(
        "kubetune_trainers.digits", ["--epochs=2", "--device=cpu"], params, api_server, tmp_path
    )
    annotations = [request.annotation for request in api_server.requests]
    assert [(a["step"], a["final"]) for a in annotations] == [(1, False), (2, False), (2, True)]
    assert all(r.path == "/api/v1/namespaces/ml/pods/trial-0" for r in api_server.requests)
    final = json.loads(log.read_text())
    assert final == annotations[-1]["metrics"]
    assert final["val_accuracy"] > 0.8
    assert "test_accuracy" in final
    assert "samples/s" in done.stdout
    assert "hidden_units=64" in done.stdout
    assert done.stderr == ""


def test_charlm_module_reports_through_the_helper(api_server: ApiServer, tmp_path: Path) -> None:
    params = {**TINY_LM, "steps": 20, "eval_interval": 10}
    done, log = run_module(
        "kubetune_trainers.charlm", [], params, api_server, tmp_path, seed=LARGEST_OPERATOR_SEED
    )
    assert f"seed={LARGEST_OPERATOR_SEED}" in done.stdout
    annotations = [request.annotation for request in api_server.requests]
    assert [(a["step"], a["final"]) for a in annotations] == [(10, False), (20, False), (20, True)]
    final = json.loads(log.read_text())
    assert set(final) == {*LM_EVALUATION, "test_loss", "test_perplexity"}
    assert final == annotations[-1]["metrics"]
    assert "tokens/s" in done.stdout

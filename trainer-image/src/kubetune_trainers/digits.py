"""Digits classifier: a PyTorch MLP on scikit-learn's bundled 8x8 handwritten digits (no
download), with the knobs ML engineers tune: learning rate, depth, width, dropout, weight
decay, batch size, epochs, optimizer (SGD with momentum, Adam, AdamW) and augmentation.

    python -m kubetune_trainers.digits --learning_rate=0.01 --epochs=5

Train / validation / test split fixed by `split_seed`, which KUBETUNE_SEED does not touch:
re-running a trial with a new seed changes the weights and the data order, never which digits
are held out. After every epoch it reports val_accuracy, val_loss and train_loss (step =
epoch, from 1). The final report is the epoch with the best validation accuracy: its
val_accuracy and val_loss, and the held-out test_accuracy and test_loss of that model, so a
study shows whether the best hyperparameters overfit the validation set.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)
from torch import nn

from kubetune_trainers.params import MAX_SEED, SEED_ENV, Param
from kubetune_trainers.runtime import (
    ReportSink,
    Result,
    Stopwatch,
    autocast,
    log,
    run_trainer,
    seed_everything,
)

PARAMS = (
    Param("learning_rate", float, 0.01, "optimizer step size", low=0.0, low_open=True),
    Param("hidden_layers", int, 2, "hidden layers (0: a linear classifier)", low=0, high=16),
    Param("hidden_units", int, 128, "units in each hidden layer", low=1, high=8192),
    Param("dropout", float, 0.1, "dropout after each hidden layer", low=0.0, high=0.95),
    Param("weight_decay", float, 1e-4, "L2 penalty (decoupled for adamw)", low=0.0),
    Param("batch_size", int, 64, "training samples per step", low=1),
    Param("epochs", int, 12, "passes over the training set", low=1),
    Param("optimizer", str, "adam", "sgd, adam or adamw", choices=("sgd", "adam", "adamw")),
    Param("momentum", float, 0.9, "SGD momentum (used by sgd only)", low=0.0, high=0.999),
    Param(
        "augmentation",
        float,
        0.0,
        "strength of random shifts, rotations and noise (0: off)",
        low=0.0,
        high=1.0,
    ),
    Param(
        "seed",
        int,
        0,
        f"seed of initial weights, data order and augmentation ({SEED_ENV} when set)",
        low=0,
        high=MAX_SEED,
    ),
    Param(
        "split_seed",
        int,
        0,
        f"seed of the train/validation/test split; {SEED_ENV} never changes it, so every "
        "run of a study holds out the same test set",
        low=0,
        high=MAX_SEED,
    ),
)

TEST_FRACTION = 0.2
VAL_FRACTION = 0.2
"""Of what the test set leaves: 1149 train, 288 validation, 360 test samples."""


@dataclass(frozen=True)
class Split:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def load_split(split_seed: int, device: torch.device) -> Split:
    """The digits, scaled to [0, 1], split stratified by class."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)
    images = images / 16.0
    rest_x, test_x, rest_y, test_y = train_test_split(
        images, labels, test_size=TEST_FRACTION, stratify=labels, random_state=split_seed
    )
    train_x, val_x, train_y, val_y = train_test_split(
        rest_x, rest_y, test_size=VAL_FRACTION, stratify=rest_y, random_state=split_seed
    )

    def tensors(x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            torch.as_tensor(x, dtype=torch.float32, device=device),
            torch.as_tensor(y, dtype=torch.long, device=device),
        )

    return Split(*tensors(train_x, train_y), *tensors(val_x, val_y), *tensors(test_x, test_y))


def build_model(hidden_layers: int, hidden_units: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = 64
    for _ in range(hidden_layers):
        layers += [nn.Linear(width, hidden_units), nn.ReLU(), nn.Dropout(dropout)]
        width = hidden_units
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def build_optimizer(model: nn.Module, config: Mapping[str, Any]) -> torch.optim.Optimizer:
    lr, decay = config["learning_rate"], config["weight_decay"]
    if config["optimizer"] == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=config["momentum"], weight_decay=decay
        )
    if config["optimizer"] == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=decay)
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=decay)


def augment(images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Random affine transforms (shifts up to 1.5 pixels, rotations up to 15 degrees, scaling
    up to 10%) and Gaussian noise (up to 0.1), all scaled by `strength`."""
    count = images.shape[0]

    def uniform(scale: float) -> torch.Tensor:
        return (torch.rand(count, generator=generator) * 2 - 1) * scale

    angle = uniform(math.radians(15) * strength)
    scale = 1 + uniform(0.1 * strength)
    # Normalised coordinates span 2 over 8 pixels: 1 pixel is 0.25.
    shift_x, shift_y = uniform(0.25 * 1.5 * strength), uniform(0.25 * 1.5 * strength)
    theta = torch.stack(
        [
            torch.stack([angle.cos() * scale, -angle.sin() * scale, shift_x], dim=1),
            torch.stack([angle.sin() * scale, angle.cos() * scale, shift_y], dim=1),
        ],
        dim=1,
    ).to(images.device)
    grid = F.affine_grid(theta, [count, 1, 8, 8], align_corners=False)
    moved = F.grid_sample(images.view(count, 1, 8, 8), grid, align_corners=False)
    noise = torch.randn(count, 64, generator=generator).to(images.device) * (0.1 * strength)
    return (moved.view(count, 64) + noise).clamp(0.0, 1.0)


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy."""
    model.eval()
    with autocast(device):
        logits = model(x).float()
    loss = F.cross_entropy(logits, y).item()
    accuracy = (logits.argmax(dim=1) == y).float().mean().item()
    return loss, accuracy


def train(config: Mapping[str, Any], device: torch.device, reporter: ReportSink) -> Result:
    generator = seed_everything(config["seed"], device)
    data = load_split(config["split_seed"], device)
    model = build_model(config["hidden_layers"], config["hidden_units"], config["dropout"])
    model.to(device)
    optimizer = build_optimizer(model, config)
    batch_size, epochs = config["batch_size"], config["epochs"]
    count = data.train_x.shape[0]
    stopwatch = Stopwatch(device)
    best: tuple[float, float, int, dict[str, torch.Tensor]] | None = None
    for epoch in range(1, epochs + 1):
        model.train()
        total_loss = torch.zeros((), device=device)
        with stopwatch.running():
            order = torch.randperm(count, generator=generator).to(device)
            for start in range(0, count, batch_size):
                index = order[start : start + batch_size]
                images, labels = data.train_x[index], data.train_y[index]
                if config["augmentation"] > 0:
                    images = augment(images, config["augmentation"], generator)
                with autocast(device):
                    loss = F.cross_entropy(model(images).float(), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += loss.detach() * index.shape[0]
        train_loss = total_loss.item() / count
        val_loss, val_accuracy = evaluate(model, data.val_x, data.val_y, device)
        log(
            f"epoch {epoch}/{epochs}: train_loss={train_loss:.4f} val_loss={val_loss:.4f} "
            f"val_accuracy={val_accuracy:.4f}"
        )
        reporter.report(epoch, val_accuracy=val_accuracy, val_loss=val_loss, train_loss=train_loss)
        if best is None or val_accuracy > best[0]:
            best = (val_accuracy, val_loss, epoch, copy.deepcopy(model.state_dict()))
    assert best is not None  # epochs >= 1
    val_accuracy, val_loss, best_epoch, state = best
    model.load_state_dict(state)
    test_loss, test_accuracy = evaluate(model, data.test_x, data.test_y, device)
    final = {
        "val_accuracy": val_accuracy,
        "val_loss": val_loss,
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "best_epoch": best_epoch,
    }
    reporter.report_final(**final)
    return Result(final, samples=count * epochs, seconds=stopwatch.seconds, device=str(device))


def main(argv: list[str] | None = None) -> int:
    return run_trainer(
        prog="kubetune_trainers.digits",
        description=__doc__.split("\n\n")[0],
        params=PARAMS,
        train=train,
        argv=argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())

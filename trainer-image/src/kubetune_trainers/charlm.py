"""A small character-level language model: a GPT-style transformer (pre-norm blocks, causal
self-attention, learned positions, tied embeddings) trained on Shakespeare's Hamlet (public
domain, shipped in data/hamlet.txt; see trainer-image/tools/make_corpus.py for its source).

    python -m kubetune_trainers.charlm --steps=200 --width=64

Hyperparameters: learning rate with linear warm-up then cosine decay to a tenth, layers,
heads, model width, dropout, weight decay, batch size, steps, context length. The first 90% of
the play trains, the last 10% validates. Every `eval_interval` steps and after the last one it
reports val_loss (nats per character, over the whole validation text), val_perplexity and
train_loss (the mean since the previous report); the final report repeats the last
evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)
from torch import nn

from kubetune_trainers.params import Param
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
    Param("learning_rate", float, 3e-3, "peak learning rate (AdamW)", low=0.0, low_open=True),
    Param("warmup_steps", int, 20, "steps of linear warm-up to the peak rate", low=0),
    Param("layers", int, 2, "transformer blocks", low=1, high=64),
    Param("heads", int, 2, "attention heads (must divide width)", low=1, high=64),
    Param("width", int, 64, "model width (embedding size)", low=1, high=8192),
    Param("dropout", float, 0.0, "dropout in attention and residual branches", low=0, high=0.95),
    Param("weight_decay", float, 0.01, "AdamW decoupled weight decay on matrices", low=0.0),
    Param("batch_size", int, 32, "sequences per step", low=1),
    Param("steps", int, 200, "optimizer steps", low=1),
    Param("context", int, 64, "characters a sequence holds", low=2, high=4096),
    Param("eval_interval", int, 50, "steps between evaluations (and reports)", low=1),
    Param("seed", int, 0, "seed of initial weights, batches and dropout", low=0),
)

VAL_FRACTION = 0.1


def check_heads(config: Mapping[str, Any]) -> str | None:
    if config["width"] % config["heads"]:
        return (
            f"width={config['width']} is not a multiple of heads={config['heads']}: each head "
            "gets width/heads dimensions; search width in steps of the largest heads value"
        )
    return None


def corpus() -> str:
    return (resources.files("kubetune_trainers") / "data" / "hamlet.txt").read_text("utf-8")


@dataclass(frozen=True)
class Corpus:
    vocabulary: str
    train: torch.Tensor
    val: torch.Tensor


def encode(text: str) -> Corpus:
    vocabulary = "".join(sorted(set(text)))
    index = {char: i for i, char in enumerate(vocabulary)}
    codes = torch.tensor([index[char] for char in text], dtype=torch.long)
    cut = int(len(codes) * (1 - VAL_FRACTION))
    return Corpus(vocabulary, codes[:cut], codes[cut:])


class Block(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        attended = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.drop(self.proj(attended.transpose(1, 2).reshape(batch, length, width)))
        return x + self.drop(self.mlp(self.norm2(x)))


class CharTransformer(nn.Module):
    def __init__(
        self, vocabulary: int, context: int, width: int, layers: int, heads: int, dropout: float
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocabulary, width)
        self.positions = nn.Embedding(context, width)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(width, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocabulary, bias=False)
        self.head.weight = self.tokens.weight  # tied: fewer parameters, faster start
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(codes.shape[1], device=codes.device)
        x = self.drop(self.tokens(codes) + self.positions(positions))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def learning_rate(step: int, config: Mapping[str, Any]) -> float:
    """Linear warm-up over warmup_steps, then cosine decay to a tenth at the last step."""
    peak, warmup, steps = config["learning_rate"], config["warmup_steps"], config["steps"]
    if step < warmup:
        return float(peak * (step + 1) / warmup)
    progress = (step - warmup) / max(1, steps - warmup)
    return float(peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))))


def build_optimizer(model: nn.Module, config: Mapping[str, Any]) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (not on biases and norms)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": config["weight_decay"]},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config["learning_rate"], betas=(0.9, 0.95))


def batch(
    codes: torch.Tensor, size: int, context: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of the text: inputs and the next characters."""
    starts = torch.randint(len(codes) - context, (size,), generator=generator)
    windows = codes[starts[:, None] + torch.arange(context + 1)]
    return windows[:, :-1], windows[:, 1:]


@torch.no_grad()
def evaluate(
    model: nn.Module, codes: torch.Tensor, context: int, device: torch.device, chunk: int = 256
) -> float:
    """Mean loss per character over the whole text, in non-overlapping windows."""
    model.eval()
    usable = (len(codes) - 1) // context * context
    inputs = codes[:usable].view(-1, context)
    targets = codes[1 : usable + 1].view(-1, context)
    total = 0.0
    for start in range(0, len(inputs), chunk):
        x, y = inputs[start : start + chunk].to(device), targets[start : start + chunk].to(device)
        with autocast(device):
            logits = model(x).float()
        total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
    model.train()
    return total / usable


def train(config: Mapping[str, Any], device: torch.device, reporter: ReportSink) -> Result:
    generator = seed_everything(config["seed"], device)
    data = encode(corpus())
    context, batch_size, steps = config["context"], config["batch_size"], config["steps"]
    model = CharTransformer(
        len(data.vocabulary),
        context,
        config["width"],
        config["layers"],
        config["heads"],
        config["dropout"],
    ).to(device)
    optimizer = build_optimizer(model, config)
    stopwatch = Stopwatch(device)
    losses = torch.zeros((), device=device)
    since = 0
    last: dict[str, float] = {}
    model.train()
    for step in range(steps):
        with stopwatch.running():
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, config)
            x, y = batch(data.train, batch_size, context, generator)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast(device):
                logits = model(x).float()
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses += loss.detach()
            since += 1
        done = step + 1
        if done % config["eval_interval"] == 0 or done == steps:
            val_loss = evaluate(model, data.val, context, device)
            train_loss = losses.item() / since
            losses.zero_()
            since = 0
            try:
                perplexity = math.exp(val_loss)
            except OverflowError:  # a diverged model
                perplexity = math.inf
            last = {"val_loss": val_loss, "val_perplexity": perplexity, "train_loss": train_loss}
            log(
                f"step {done}/{steps}: train_loss={train_loss:.4f} val_loss={val_loss:.4f} "
                f"val_perplexity={perplexity:.2f}"
            )
            reporter.report(done, **last)
    reporter.report_final(**last)
    samples = steps * batch_size
    return Result(
        last,
        samples=samples,
        seconds=stopwatch.seconds,
        device=str(device),
        extra={"tokens/s": samples * context / stopwatch.seconds if stopwatch.seconds else 0.0},
    )


def main(argv: list[str] | None = None) -> int:
    return run_trainer(
        prog="kubetune_trainers.charlm",
        description=__doc__.split("\n\n")[0],
        params=PARAMS,
        train=train,
        checks=(check_heads,),
        argv=argv,
    )


if __name__ == "__main__":
    raise SystemExit(main())

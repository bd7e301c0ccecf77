"""A small character-level language model: a GPT-style transformer (pre-norm blocks, causal
self-attention, learned positions, tied embeddings) trained on Shakespeare's Hamlet (public
domain, shipped in data/hamlet.txt; see trainer-image/tools/make_corpus.py for its source).

    python -m kubetune_trainers.charlm --steps=200 --width=64

Hyperparameters: learning rate with linear warm-up then cosine decay to a tenth, layers,
heads, model width, dropout, weight decay, batch size, steps, context length, augmentation.

The play is cut into three contiguous blocks: the first 80% trains, the next 10% validates and
the last 10% tests. Training windows are drawn from the first block only, so no window
overlaps text that is evaluated. Every `eval_interval` steps and after the last one it reports
val_loss (nats per character, over the whole validation text), val_perplexity and train_loss
(the mean since the previous report). The final report repeats the last evaluation and adds
test_loss and test_perplexity of the final model over the whole test text: the test text is
read once, at the end, so a study can show whether what it chose by val_loss generalizes.

`augmentation` is the probability that a training sequence is perturbed by a few edits that
keep it readable: adjacent characters swapped, a character dropped or repeated. It stands in
for paraphrasing (back translation needs a translation model, which a trial cannot download).
Validation and test text are never perturbed.

Data-parallel when WORLD_SIZE > 1 (a multi-pod trial, or torchrun; see distributed.py): every
rank starts from the same weights; each step draws the same batch_size * WORLD_SIZE sequences
from the seed and trains on its share (every WORLD_SIZE-th), with dropout of its own, and
DistributedDataParallel averages the gradients: a step learns from batch_size * WORLD_SIZE
sequences, like one process with that batch size. Evaluation is shared too: each rank scores every
WORLD_SIZE-th window and the sums are added up, so all ranks hold the same metrics. Only rank 0
reports them.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from kubetune_trainers.distributed import World
from kubetune_trainers.params import MAX_SEED, SEED_ENV, Param, ParameterError
from kubetune_trainers.runtime import (
    ReportSink,
    Result,
    SilentSink,
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
    Param(
        "augmentation",
        float,
        0.0,
        "probability that a training sequence gets character swaps, drops and repeats",
        low=0.0,
        high=1.0,
    ),
    Param(
        "seed",
        int,
        0,
        f"seed of initial weights, batches, dropout and augmentation ({SEED_ENV} when set)",
        low=0,
        high=MAX_SEED,
    ),
)

VAL_FRACTION = 0.1
TEST_FRACTION = 0.1
EDIT_RATE = 0.03
"""Edits per character of a perturbed sequence (at least one): 4 in a 128-character window,
few enough that the text stays readable."""


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
    """The text as character codes, in three contiguous blocks: train, validation, test."""

    vocabulary: str
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor


def encode(text: str) -> Corpus:
    vocabulary = "".join(sorted(set(text)))
    index = {char: i for i, char in enumerate(vocabulary)}
    codes = torch.tensor([index[char] for char in text], dtype=torch.long)
    val_start = int(len(codes) * (1 - VAL_FRACTION - TEST_FRACTION))
    test_start = int(len(codes) * (1 - TEST_FRACTION))
    return Corpus(vocabulary, codes[:val_start], codes[val_start:test_start], codes[test_start:])


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


SWAP = 0
COPIES_BY_KIND = torch.tensor([1, 0, 2])
"""Copies of the character at an edit's place, by kind: swap (moves it), drop, repeat."""


def edit_count(length: int) -> int:
    """How many edits a perturbed sequence of `length` characters gets."""
    return max(1, round(EDIT_RATE * length))


def perturb(
    windows: torch.Tensor, length: int, probability: float, generator: torch.Generator
) -> torch.Tensor:
    """The first `length` characters of each row of `windows`, after, with `probability`
    per row, edit_count(length) edits at random places: two adjacent characters swapped, one
    dropped or one repeated. Rows need edit_count(length) characters beyond `length`, so that
    a row with only drops still fills `length`."""
    rows, available = windows.shape
    edits = edit_count(length)
    assert available >= length + edits, "windows need edit_count(length) spare characters"
    # Every draw is made for every row, so the generator advances alike whatever is perturbed.
    perturbed = torch.rand(rows, generator=generator) < probability
    places = torch.randint(length - 1, (rows, edits), generator=generator)
    kinds = torch.randint(len(COPIES_BY_KIND), (rows, edits), generator=generator)
    source = torch.arange(available).repeat(rows, 1)  # which character goes where
    copies = torch.ones(rows, available, dtype=torch.long)  # 0 drops a character, 2 repeats it
    everyone = torch.arange(rows)
    for edit in range(edits):
        place, kind = places[:, edit], kinds[:, edit]
        swapped = perturbed & (kind == SWAP)
        left, right = source[everyone, place], source[everyone, place + 1]
        source[everyone, place] = torch.where(swapped, right, left)
        source[everyone, place + 1] = torch.where(swapped, left, right)
        resized = perturbed & (kind != SWAP)
        copies[everyone, place] = torch.where(
            resized, COPIES_BY_KIND[kind], copies[everyone, place]
        )
    # Output position j holds the character whose run of copies covers j.
    ends = copies.cumsum(dim=1)
    positions = torch.searchsorted(ends, torch.arange(length).repeat(rows, 1), right=True)
    return windows.gather(1, source.gather(1, positions))


def batch(
    codes: torch.Tensor,
    size: int,
    context: int,
    generator: torch.Generator,
    augmentation: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of the text, perturbed with probability `augmentation`: inputs and the
    next characters."""
    length = context + 1
    spare = edit_count(length) if augmentation > 0 else 0
    starts = torch.randint(len(codes) - context - spare, (size,), generator=generator)
    windows = codes[starts[:, None] + torch.arange(length + spare)]
    if augmentation > 0:
        windows = perturb(windows, length, augmentation, generator)
    return windows[:, :-1], windows[:, 1:]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    codes: torch.Tensor,
    context: int,
    device: torch.device,
    chunk: int = 256,
    world: World | None = None,
) -> float:
    """Mean loss per character over the whole text, in non-overlapping windows. In a
    data-parallel run each rank scores every world.size-th window and the sums are added up
    (a collective: every rank calls it at the same point)."""
    model.eval()
    usable = (len(codes) - 1) // context * context
    inputs = codes[:usable].view(-1, context)
    targets = codes[1 : usable + 1].view(-1, context)
    if world is not None:
        inputs, targets = inputs[world.rank :: world.size], targets[world.rank :: world.size]
    total = 0.0
    for start in range(0, len(inputs), chunk):
        x, y = inputs[start : start + chunk].to(device), targets[start : start + chunk].to(device)
        with autocast(device):
            logits = model(x).float()
        total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
    model.train()
    if world is not None:
        total = world.sum(torch.tensor([total], dtype=torch.float64, device=device)).item()
    return total / usable


def perplexity_of(loss: float) -> float:
    """e to the loss in nats per character; infinite for a diverged model."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def train(
    config: Mapping[str, Any],
    device: torch.device,
    reporter: ReportSink,
    world: World | None = None,
) -> Result:
    """Train and report; data-parallel across `world` when given (it joins and leaves the
    process group), where only rank 0 sends reports to `reporter`."""
    if world is None:
        return _train(config, device, reporter, None)
    world.start(device)
    try:
        result = _train(config, device, reporter if world.reports else SilentSink(), world)
        # No rank tears its group down while a peer is still at work in it (rank 0 writes
        # its final report after the last collective; a rank leaving first could abort).
        world.sum(torch.zeros(1, device=device))
        return result
    finally:
        world.stop()


def _train(
    config: Mapping[str, Any], device: torch.device, reporter: ReportSink, world: World | None
) -> Result:
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
    stepped: nn.Module = model
    drawn = batch_size
    if world is not None:
        # The weights above are alike on every rank (DDP broadcasts rank 0's anyway). Each
        # step every rank draws the same batch_size * world.size sequences from the shared
        # generator and trains on every world.size-th; dropout differs by rank.
        torch.manual_seed((config["seed"] + world.rank) % (MAX_SEED + 1))
        stepped = DistributedDataParallel(model)
        drawn = batch_size * world.size
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
            x, y = batch(data.train, drawn, context, generator, config["augmentation"])
            if world is not None:
                x, y = x[world.rank :: world.size], y[world.rank :: world.size]
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast(device):
                logits = stepped(x).float()
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses += loss.detach()
            since += 1
        done = step + 1
        if done % config["eval_interval"] == 0 or done == steps:
            val_loss = evaluate(model, data.val, context, device, world=world)
            if world is not None:  # the mean over every rank's batches
                since *= world.size
                world.sum(losses)
            train_loss = losses.item() / since
            losses.zero_()
            since = 0
            perplexity = perplexity_of(val_loss)
            last = {"val_loss": val_loss, "val_perplexity": perplexity, "train_loss": train_loss}
            log(
                f"step {done}/{steps}: train_loss={train_loss:.4f} val_loss={val_loss:.4f} "
                f"val_perplexity={perplexity:.2f}"
            )
            reporter.report(done, **last)
    test_loss = evaluate(model, data.test, context, device, world=world)
    final = {**last, "test_loss": test_loss, "test_perplexity": perplexity_of(test_loss)}
    log(f"test: test_loss={test_loss:.4f} test_perplexity={final['test_perplexity']:.2f}")
    reporter.report_final(**final)
    samples = steps * batch_size
    return Result(
        final,
        samples=samples,
        seconds=stopwatch.seconds,
        device=str(device),
        extra={"tokens/s": samples * context / stopwatch.seconds if stopwatch.seconds else 0.0},
    )


def main(argv: list[str] | None = None) -> int:
    prog = "kubetune_trainers.charlm"
    try:
        world = World.from_environment(os.environ)
    except ParameterError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2

    def train_in_world(
        config: Mapping[str, Any], device: torch.device, reporter: ReportSink
    ) -> Result:
        return train(config, device, reporter, world)

    if world is not None:
        log(f"{prog}: rank {world.rank} of {world.size}")
    code = run_trainer(
        prog=prog,
        description=__doc__.split("\n\n")[0],
        params=PARAMS,
        train=train_in_world,
        checks=(check_heads,),
        argv=argv,
        reports=world is None or world.reports,
    )
    if world is not None:
        # The run is over and reported. torch.distributed's C++ threads (gloo, the TCPStore)
        # can abort the interpreter's own exit ("terminate called without an active
        # exception", SIGABRT) and fail a trial that succeeded: leave without it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    raise SystemExit(main())

"""Hardware-in-the-loop fine-tuning of a compiled program.

The forward pass goes through the backend exactly as ``anacc run`` does it (on the emulator:
quantized inputs and weights, gain, mismatch, noise, saturation, int8 ADC). The backward pass
goes through the linear surrogate of :mod:`anacc.passes.surrogate` (rounding and clipping
straight through, the gradient scaled by the gain measured through the backend interface,
as the vendor does it on the chip). What the chip lets us adjust is trained: the float shadow
weights (re-quantized every step), the digital biases and normalization parameters, a digital
gain per output column after the ADC (with the bias: the affine that takes out each neuron's
gain and offset deviation; folded into the weight scales at the end), and optionally the input
scales (learned LSQ-style). ``num_sends`` is revisited before training and after it
(:mod:`anacc.passes.finetune_sends`). The mapping (tiles, row order, signed-input strategy)
is kept.

Against one chip instance (the default) the program learns that chip's fixed pattern; with
``instances=K`` the batches go to K instances in turn, for weights that hold across chips.
The best epoch is chosen on the validation data (accuracy, averaged over the instances), or
on the training loss without it; ``patience`` stops early when validation stops improving.

This is the one pass that imports the runtime: it needs a backend in the loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from anacc.compiler.datafile import Dataset
from anacc.compiler.program import Program
from anacc.passes.finetune_options import FinetuneOptions
from anacc.passes.finetune_sends import batch_forward, rederive_scales, search_sends
from anacc.passes.surrogate import TrainingGraph
from anacc.runtime.backends import Backend, get_backend
from anacc.runtime.characterize import measure_gain
from anacc.runtime.session import Session, check_labels_fit

from anacc.errors import DataError, OptionError

__all__ = ["EpochRecord", "FinetuneOptions", "FinetuneResult", "finetune"]


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_accuracy: float | None
    seconds: float
    lr: float = 0.0


@dataclass
class FinetuneResult:
    program: Program
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    initial_val_accuracy: float | None = None
    final_val_accuracy: float | None = None
    measured_gain_ratio: float = 1.0
    num_sends: dict[str, tuple[int, int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """The result as JSON-ready data (without the program)."""
        return {
            "history": [asdict(r) for r in self.history],
            "best_epoch": self.best_epoch,
            "initial_val_accuracy": self.initial_val_accuracy,
            "final_val_accuracy": self.final_val_accuracy,
            "measured_gain_ratio": self.measured_gain_ratio,
            "num_sends": {k: list(v) for k, v in self.num_sends.items()},
            "finetune": self.program.source.get("finetune"),
        }


def _optimizer(model: TrainingGraph, opts: FinetuneOptions) -> torch.optim.Adam:
    """Adam with the column gains and learned scales in a group of their own, fused into one
    kernel per step where this torch has it for the CPU (the same update as the default loop
    over parameters, with a fraction of the overhead)."""
    affine = {id(p) for p in model.affine_parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in affine]}]
    if affine:
        groups.append({"params": model.affine_parameters(), "lr": opts.affine_lr})
    kwargs = {"lr": opts.lr, "weight_decay": opts.weight_decay}
    try:
        return torch.optim.Adam(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(groups, **kwargs)


def _loss_fn(labels: np.ndarray) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if labels.dtype.kind in "iu":
        return lambda out, y: torch.nn.functional.cross_entropy(out.reshape(out.shape[0], -1), y)
    return lambda out, y: torch.nn.functional.mse_loss(out.reshape(y.shape), y)


@dataclass
class _Chips:
    """The chip instances in the loop and the gain ratio measured on each."""

    backends: list[Backend]
    ratios: list[float]
    seeds: list[int]

    def use(self, model: TrainingGraph, step: int) -> None:
        k = step % len(self.backends)
        model.backend, model.gain_ratio = self.backends[k], self.ratios[k]

    def accuracy(self, program: Program, data: Dataset | None) -> float | None:
        """Accuracy on ``data`` averaged over the instances (None without labels), each in a
        new session of its chip: what ``anacc run --seed`` measures."""
        if data is None or data.labels is None:
            return None
        accs = [
            Session(program, b.name, s).evaluate(data, batch_size=256).accuracy
            for b, s in zip(self.backends, self.seeds, strict=True)
        ]
        return None if accs[0] is None else float(np.mean(accs))


def _chips(program: Program, opts: FinetuneOptions) -> _Chips:
    profile = program.chip.profile(program.profile)
    backends = [get_backend(opts.backend, program.chip, profile, seed=s) for s in opts.seeds]
    ratios = [measure_gain(b) / b.gain_per_send if b.quantizes else 1.0 for b in backends]
    return _Chips(backends, ratios, opts.seeds)


def finetune(
    program: Program,
    train: Dataset,
    val: Dataset | None = None,
    options: FinetuneOptions | None = None,
    *,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> FinetuneResult:
    """Fine-tune ``program`` on ``train``; returns the best program (by validation accuracy,
    or training loss without validation data) and the per-epoch history."""
    opts = options or FinetuneOptions()
    if train.labels is None:
        raise DataError(f"{train.path}: fine-tuning needs 'labels' (class ids or float targets)")
    check_labels_fit(program, train)
    if val is not None and val.labels is not None:
        check_labels_fit(program, val)
    if len(program.outputs) != 1:
        raise OptionError("fine-tuning supports programs with exactly one output")
    say = log or (lambda _line: None)
    chips = _chips(program, opts)
    model = TrainingGraph(
        program,
        chips.backends[0],
        chips.ratios[0],
        per_column=program.options.get("weight_scale", "column") == "column",
        ema_momentum=opts.ema_momentum if opts.scale_update == "ema" else None,
        column_gain=opts.column_gain and chips.backends[0].quantizes,
        learn_scale=opts.scale_update == "learned" and chips.backends[0].quantizes,
    )
    loss_fn = _loss_fn(train.labels)
    labels = torch.from_numpy(
        train.labels.astype(np.int64 if train.labels.dtype.kind in "iub" else np.float32)
    )
    gen = torch.Generator().manual_seed(opts.seed)
    n = train.samples
    result = FinetuneResult(program, measured_gain_ratio=float(np.mean(chips.ratios)))
    sends_before = {name: tl.layer.analog.num_sends for name, tl in model.layers.items()}
    if opts.sends in ("before", "search") and chips.backends[0].quantizes:
        bar = "num_sends search" if progress else None
        changed = search_sends(model, train, labels, loss_fn, chips.use, opts.seed, progress=bar)
        if changed:
            say("num_sends " + _sends_text(changed))
    optim = _optimizer(model, opts)
    steps_per_epoch = math.ceil(n / opts.batch_size)
    sched = None
    if opts.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            optim, T_max=opts.epochs * steps_per_epoch
        )

    result.initial_val_accuracy = chips.accuracy(program, val)
    best_score = -np.inf if val is not None else np.inf
    if result.initial_val_accuracy is not None:
        best_score = result.initial_val_accuracy
    since_best, step = 0, 0
    for epoch in range(1, opts.epochs + 1):
        t0 = time.perf_counter()
        lr = optim.param_groups[0]["lr"]
        model.train()
        perm = torch.randperm(n, generator=gen)
        batches = [perm[i : i + opts.batch_size] for i in range(0, n, opts.batch_size)]
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc=f"epoch {epoch}/{opts.epochs}", unit="batch", leave=False)
        total, count = 0.0, 0
        for idx in batches:
            chips.use(model, step)
            step += 1
            out = batch_forward(model, program, train.subset(idx.numpy()))
            loss = loss_fn(out, labels[idx])
            optim.zero_grad()
            loss.backward()
            optim.step()
            if sched is not None:
                sched.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        model.eval()
        snapshot = model.snapshot()
        val_acc = chips.accuracy(snapshot, val)
        rec = EpochRecord(epoch, total / count, val_acc, time.perf_counter() - t0, lr)
        result.history.append(rec)
        acc = "" if val_acc is None else f", val accuracy {100 * val_acc:.2f} %"
        say(f"epoch {epoch}: train loss {rec.train_loss:.4f}{acc} ({rec.seconds:.1f} s)")
        better = val_acc > best_score if val_acc is not None else rec.train_loss < best_score
        if better:
            best_score = val_acc if val_acc is not None else rec.train_loss
            result.program, result.best_epoch = snapshot, epoch
            since_best = 0
        else:
            since_best += 1
            if opts.patience is not None and val_acc is not None and since_best >= opts.patience:
                say(f"no better validation accuracy for {since_best} epochs: stopping")
                break
    return _finish(result, chips, train, labels, loss_fn, val, opts, sends_before, say, progress)


def _sends_text(changed: dict[str, tuple[int, int]]) -> str:
    return ", ".join(f"{name} {a} -> {b}" for name, (a, b) in changed.items())


def _finish(
    result: FinetuneResult,
    chips: _Chips,
    train: Dataset,
    labels: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    val: Dataset | None,
    opts: FinetuneOptions,
    sends_before: dict[str, int],
    say: Callable[[str], None],
    progress: bool = False,
) -> FinetuneResult:
    """The chosen program with ``num_sends`` revisited, its input scales re-derived on the
    training data (static scales) and the record of how it was fine-tuned in its source."""
    program = result.program
    quantizes = chips.backends[0].quantizes
    if result.best_epoch and opts.sends == "search" and quantizes:
        # the weights and scales moved: the trade between noise and saturation did too
        per_column = program.options.get("weight_scale", "column") == "column"
        again = TrainingGraph(program, chips.backends[0], chips.ratios[0], per_column=per_column)
        bar = "num_sends search after training" if progress else None
        changed = search_sends(
            again, train, labels, loss_fn, chips.use, opts.seed + 1, progress=bar
        )
        if changed:
            say("num_sends after training " + _sends_text(changed))
            program = again.snapshot()
    if result.best_epoch and opts.scale_update == "static" and quantizes:
        program = rederive_scales(program, train, chips.backends[0])
    result.final_val_accuracy = chips.accuracy(program, val)
    if result.best_epoch:
        result.num_sends = {
            name: (sends_before[name], layer.analog.num_sends)
            for name, layer in program.layers.items()
        }
        program.source = {
            **program.source,
            "fine_tuned": True,
            "finetune": {
                "instances": opts.seeds,
                "robust": opts.instances > 1,
                "backend": opts.backend,
                "epochs": len(result.history),
                "best_epoch": result.best_epoch,
                "scale_update": opts.scale_update,
                "column_gain": opts.column_gain,
                "sends": opts.sends,
            },
        }
    result.program = program
    return result

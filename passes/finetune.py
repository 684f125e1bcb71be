"""Hardware-in-the-loop fine-tuning of a compiled program.

The forward pass goes through the backend exactly as ``anacc run`` does it (on the emulator:
quantized inputs and weights, gain, mismatch, noise, saturation, int8 ADC). The backward pass
goes through the linear surrogate ``y = r * (x @ W_q) + b`` (for convolutions computed as a
convolution of the padded input, so grouped convolutions keep their zero blocks), where
``W_q`` are the re-quantized float shadow weights, rounding and clipping are passed straight
through to the shadow weights, and ``r`` is the ratio of the gain measured through the
backend interface to the nominal gain the program rescales with (the gradient is thus
scaled by the measured ``gain * num_sends``, as the vendor does it on the chip). Biases and
standalone BatchNorm parameters are digital and trainable. The mapping (tiles, row order,
num_sends, signed-input strategy) is kept; weights, scales and biases are updated.

This is the one pass that imports the runtime: it needs a backend in the loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from anacc.compiler.datafile import Dataset
from anacc.compiler.program import Program
from anacc.passes.surrogate import TrainingGraph
from anacc.runtime.backends import get_backend
from anacc.runtime.characterize import measure_gain
from anacc.runtime.session import Session, check_labels_fit

from anacc.errors import DataError, OptionError


@dataclass(frozen=True)
class FinetuneOptions:
    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    backend: str = "emulator"
    scale_update: str = "static"  # "static" or "ema"
    ema_momentum: float = 0.95
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise OptionError("epochs must be at least 1")
        if not self.lr > 0:
            raise OptionError("the learning rate must be positive")
        if self.batch_size < 1:
            raise OptionError("batch size must be at least 1")
        if self.scale_update not in ("static", "ema"):
            raise OptionError(f"scale update '{self.scale_update}': use static or ema")


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_accuracy: float | None
    seconds: float


@dataclass
class FinetuneResult:
    program: Program
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    initial_val_accuracy: float | None = None
    measured_gain_ratio: float = 1.0


def _adam(params: list[torch.nn.Parameter], opts: FinetuneOptions) -> torch.optim.Adam:
    """Adam, fused into one kernel per step where this torch has it for the CPU (it does the
    same update as the default loop over parameters, with a fraction of the overhead)."""
    kwargs = {"lr": opts.lr, "weight_decay": opts.weight_decay}
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, **kwargs)


def _forward(model: TrainingGraph, program: Program, batch: Dataset) -> torch.Tensor:
    """The model's first output for the samples of ``batch``, samples on axis 0 (each sample
    one run when the inputs have fixed shapes)."""
    outs = []
    for _, feeds in batch.runs(batch.samples):
        tensors = {k: torch.from_numpy(np.require(v, requirements="C")) for k, v in feeds.items()}
        outs.append(model(tensors))
    if batch.per_sample:
        return torch.stack(outs)
    axis = program.outputs[0].batch_axis or 0
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=axis)
    return out.movedim(axis, 0) if axis else out


def _loss_fn(labels: np.ndarray) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if labels.dtype.kind in "iu":
        return lambda out, y: torch.nn.functional.cross_entropy(out.reshape(out.shape[0], -1), y)
    return lambda out, y: torch.nn.functional.mse_loss(out.reshape(y.shape), y)


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
    profile = program.chip.profile(program.profile)
    backend = get_backend(opts.backend, program.chip, profile, seed=opts.seed)
    gain_ratio = 1.0
    if backend.quantizes:
        gain_ratio = measure_gain(backend) / backend.gain_per_send
    model = TrainingGraph(
        program,
        backend,
        gain_ratio,
        per_column=program.options.get("weight_scale", "column") == "column",
        ema_momentum=opts.ema_momentum if opts.scale_update == "ema" else None,
    )
    optim = _adam(list(model.parameters()), opts)
    loss_fn = _loss_fn(train.labels)
    labels = torch.from_numpy(
        train.labels.astype(np.int64 if train.labels.dtype.kind in "iub" else np.float32)
    )
    gen = torch.Generator().manual_seed(opts.seed)
    n = train.samples
    steps_per_epoch = math.ceil(n / opts.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=opts.epochs * steps_per_epoch)

    def evaluate(prog: Program) -> float | None:
        if val is None or val.labels is None:
            return None
        return Session(prog, backend).evaluate(val, batch_size=256).accuracy

    result = FinetuneResult(program, measured_gain_ratio=gain_ratio)
    result.initial_val_accuracy = evaluate(program)
    best_score = -np.inf if val is not None else np.inf
    if result.initial_val_accuracy is not None:
        best_score = result.initial_val_accuracy
    for epoch in range(1, opts.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=gen)
        batches = [perm[i : i + opts.batch_size] for i in range(0, n, opts.batch_size)]
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc=f"epoch {epoch}/{opts.epochs}", unit="batch", leave=False)
        total, count = 0.0, 0
        for idx in batches:
            out = _forward(model, program, train.subset(idx.numpy()))
            loss = loss_fn(out, labels[idx])
            optim.zero_grad()
            loss.backward()
            optim.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        model.eval()
        snapshot = model.snapshot()
        val_acc = evaluate(snapshot)
        rec = EpochRecord(epoch, total / count, val_acc, time.perf_counter() - t0)
        result.history.append(rec)
        if log is not None:
            acc = "" if val_acc is None else f", val accuracy {100 * val_acc:.2f} %"
            log(f"epoch {epoch}: train loss {rec.train_loss:.4f}{acc} ({rec.seconds:.1f} s)")
        better = val_acc > best_score if val_acc is not None else rec.train_loss < best_score
        if better:
            best_score = val_acc if val_acc is not None else rec.train_loss
            result.program, result.best_epoch = snapshot, epoch
    return result

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

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from anacc.compiler.datafile import Dataset
from anacc.compiler.export import conv_kernel
from anacc.compiler.program import Program, ProgramLayer
from anacc.passes.calibrate_scales import quantize_weights
from anacc.passes.lower_conv import conv_weight_matrix
from anacc.runtime.backends import Backend, get_backend
from anacc.runtime.characterize import measure_gain
from anacc.runtime.digital_ops import run_op
from anacc.runtime.executor import (
    analog_linear,
    analog_rows,
    analog_step,
    check_labels_fit,
    fold_rows,
    run_program,
)

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


class _TrainableLayer:
    """Float shadow weights and bias of one analog layer, re-quantized on every forward.

    The layer's float ``weight`` and ``bias`` arrays are views of the parameters (the
    optimizer updates them in place); :meth:`TrainingGraph.snapshot` copies them.
    """

    def __init__(self, layer: ProgramLayer, per_column: bool, wmax: int) -> None:
        self.layer = copy.copy(layer)
        self.layer.analog = copy.copy(layer.analog)
        self.weight = torch.nn.Parameter(torch.from_numpy(layer.analog.weight.copy()))
        self.layer.analog.weight = self.weight.detach().numpy()
        self.bias = None
        if layer.bias is not None:
            self.bias = torch.nn.Parameter(torch.from_numpy(layer.bias.copy()))
            self.layer.bias = self.bias.detach().numpy()
        self.per_column = per_column
        self.wmax = wmax

    def requantize(self) -> torch.Tensor:
        """Push the quantized shadow weights into the layer; return them dequantized."""
        w_q, scale = quantize_weights(self.layer.analog.weight, self.per_column, self.wmax)
        a = self.layer.analog
        if not np.array_equal(w_q, a.weight_q):  # backends rebuild what they cache per version
            a.weight_q = w_q
            a.version += 1
        self.layer.weight_scale = scale
        return torch.from_numpy(w_q * scale)


class _LinearSurrogate(torch.autograd.Function):
    """Forward: the chip's output ``run()``; backward: the linear surrogate
    ``ratio * rows @ W_q + b``, straight through to the shadow weights."""

    @staticmethod
    def forward(
        ctx: Any,
        rows: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        w_deq: torch.Tensor,
        run: Callable[[], torch.Tensor],
        ratio: float,
    ) -> torch.Tensor:
        ctx.save_for_backward(rows, w_deq)
        ctx.ratio = ratio
        return run()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        rows, w_deq = ctx.saved_tensors
        g = grad * ctx.ratio
        need_rows, need_w, need_b = ctx.needs_input_grad[:3]
        grad_rows = g @ w_deq.T if need_rows else None
        grad_w = rows.T @ g if need_w else None
        grad_b = grad.sum(0) if need_b else None
        return grad_rows, grad_w, grad_b, None, None, None


class _ConvSurrogate(torch.autograd.Function):
    """Forward: the chip's output ``run()`` ``(N, C_out, *out)``; backward: the convolution
    of the padded input with the dequantized kernel, scaled by ``ratio`` (the same linear
    surrogate as :class:`_LinearSurrogate`, computed as a convolution)."""

    @staticmethod
    def forward(
        ctx: Any,
        x_pad: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        kernel: torch.Tensor,
        run: Callable[[], torch.Tensor],
        ratio: float,
        conv: dict,
    ) -> torch.Tensor:
        ctx.save_for_backward(x_pad, kernel)
        ctx.ratio, ctx.conv = ratio, conv
        return run()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x_pad, kernel = ctx.saved_tensors
        conv = ctx.conv
        nd = len(conv["kernel_shape"])
        grads = torch.nn.grad
        input_grad = grads.conv1d_input if nd == 1 else grads.conv2d_input
        weight_grad = grads.conv1d_weight if nd == 1 else grads.conv2d_weight
        g = grad * ctx.ratio
        args = (conv["strides"], 0, conv["dilations"], conv["group"])
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = input_grad(x_pad.shape, kernel, g, *args) if need_x else None
        grad_w = None
        if need_w:
            grad_k = weight_grad(x_pad, kernel.shape, g, *args)
            grad_w = torch.from_numpy(conv_weight_matrix(grad_k.numpy(), conv["group"]))
        grad_b = grad.sum([d for d in range(grad.dim()) if d != 1]) if need_b else None
        return grad_x, grad_w, grad_b, None, None, None, None


def _pad_input(x: torch.Tensor, conv: dict) -> torch.Tensor:
    """The conv input with the layer's padding (``pads``: begins, then ends), as im2col pads."""
    p = conv["pads"]
    pads = (p[0], p[1]) if len(conv["kernel_shape"]) == 1 else (p[1], p[3], p[0], p[2])
    return torch.nn.functional.pad(x, pads) if any(pads) else x


class TrainingGraph(torch.nn.Module):
    """The program as a differentiable torch module with the backend in the forward pass."""

    def __init__(
        self, program: Program, backend: Backend, gain_ratio: float, opts: FinetuneOptions
    ):
        super().__init__()
        self.program = program
        self.backend = backend
        self.gain_ratio = gain_ratio
        self.opts = opts
        per_column = program.options.get("weight_scale", "column") == "column"
        self.layers = {
            name: _TrainableLayer(layer, per_column, program.chip.weight_max)
            for name, layer in program.layers.items()
        }
        self.consts: dict[str, torch.Tensor] = {
            k: torch.from_numpy(np.array(v)) for k, v in program.constants.items()
        }
        trainable = set()
        for step in program.steps:
            if step.op == "BatchNormalization":
                trainable.update(t for t in step.inputs[1:3] if t)
        self.digital = torch.nn.ParameterDict()
        self._digital_names: dict[str, str] = {}
        for i, name in enumerate(sorted(trainable)):
            key = f"p{i}"
            self.digital[key] = torch.nn.Parameter(self.consts[name].float().clone())
            self._digital_names[name] = key
        for i, (_name, tl) in enumerate(self.layers.items()):
            self.register_parameter(f"w{i}", tl.weight)
            if tl.bias is not None:
                self.register_parameter(f"b{i}", tl.bias)

    def _const(self, name: str) -> torch.Tensor:
        key = self._digital_names.get(name)
        return self.digital[key] if key is not None else self.consts[name]

    def _analog(self, tl: _TrainableLayer, x: torch.Tensor) -> torch.Tensor:
        layer = tl.layer
        w_deq = tl.requantize()
        x_in = x.detach()
        if self.training and self.opts.scale_update == "ema" and layer.input_scale is not None:
            self._ema_scale(layer, analog_rows(layer, x_in)[0])

        if layer.conv is not None:

            def run_conv() -> torch.Tensor:
                return analog_step(layer, x_in, self.backend)

            kernel = torch.from_numpy(conv_kernel(w_deq.numpy(), layer.conv))
            x_pad = _pad_input(x, layer.conv)
            return _ConvSurrogate.apply(
                x_pad, tl.weight, tl.bias, kernel, run_conv, self.gain_ratio, layer.conv
            )
        rows, how = analog_rows(layer, x_in)

        def run() -> torch.Tensor:
            return analog_linear(layer, rows, self.backend)

        x2d = x.reshape(rows.shape)
        y = _LinearSurrogate.apply(x2d, tl.weight, tl.bias, w_deq, run, self.gain_ratio)
        return fold_rows(y, how)

    def _ema_scale(self, layer: ProgramLayer, rows: torch.Tensor) -> None:
        imax = self.program.chip.input_max
        if layer.signed == "split":
            span = float(rows.abs().max())
        elif layer.signed == "shift":
            span = float(rows.max()) - layer.input_offset
        else:
            span = float(rows.max())
        if span > 0:
            m = self.opts.ema_momentum
            layer.input_scale = m * layer.input_scale + (1 - m) * span / imax

    def forward(self, feeds: dict[str, torch.Tensor]) -> torch.Tensor:
        env = dict(feeds)
        for step in self.program.steps:
            if step.analog:
                env[step.outputs[0]] = self._analog(self.layers[step.name], env[step.inputs[0]])
                continue
            args = [
                None if not t else (env[t] if t in env else self._const(t)) for t in step.inputs
            ]
            for name, value in zip(step.outputs, run_op(step.op, step.attrs, args), strict=False):
                env[name] = value
        return env[self.program.outputs[0].name]

    def snapshot(self) -> Program:
        """A new program with the current weights, scales, biases and digital parameters."""
        for tl in self.layers.values():
            tl.requantize()
        layers = {}
        for name, tl in self.layers.items():
            lay = copy.copy(tl.layer)
            lay.analog = copy.copy(tl.layer.analog)
            lay.analog.weight = lay.analog.weight.copy()  # not the live parameters
            if lay.bias is not None:
                lay.bias = lay.bias.copy()
            lay.analog.version = 0
            layers[name] = lay
        constants = dict(self.program.constants)
        for name, key in self._digital_names.items():
            constants[name] = (
                self.digital[key].detach().numpy().astype(self.program.constants[name].dtype)
            )
        return _replace_program(self.program, layers, constants)


def _replace_program(program: Program, layers: dict, constants: dict) -> Program:
    new = copy.copy(program)
    new.layers = layers
    new.constants = constants
    return new


def _adam(params: list[torch.nn.Parameter], opts: FinetuneOptions) -> torch.optim.Adam:
    """Adam, fused into one kernel per step where this torch has it for the CPU (it does the
    same update as the default loop over parameters, with a fraction of the overhead)."""
    kwargs = {"lr": opts.lr, "weight_decay": opts.weight_decay}
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, **kwargs)


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
    torch.manual_seed(opts.seed)
    profile = program.chip.profile(program.profile)
    backend = get_backend(opts.backend, program.chip, profile, seed=opts.seed)
    gain_ratio = 1.0
    if backend.quantizes:
        gain_ratio = measure_gain(backend) / backend.gain_per_send
    model = TrainingGraph(program, backend, gain_ratio, opts)
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
        return run_program(prog, val, backend=backend, batch_size=256).accuracy

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
            feeds = {k: torch.from_numpy(v[idx.numpy()]) for k, v in train.inputs.items()}
            out = model(feeds)
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

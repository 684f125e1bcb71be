"""The program as a differentiable torch module with the backend in the forward pass.

:class:`TrainingGraph` is the interpreter of fine-tuning: an analog step runs through the
backend exactly as inference runs it (:func:`~anacc.runtime.analog.analog_forward`), and its
backward pass goes through the linear surrogate ``y = r * (x @ W_q) + b`` (for convolutions
computed as a convolution of the padded input, so grouped convolutions keep their zero
blocks), where ``W_q`` are the re-quantized float shadow weights, rounding and clipping are
passed straight through to the shadow weights, and ``r`` is the ratio of the measured to the
nominal gain. Digital steps run the op registry's torch forms
(:class:`~anacc.runtime.digital.TorchRegions`); the scale and bias of normalization ops are
trainable digital parameters.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from anacc.compiler.conv import ConvGeometry
from anacc.compiler.ops import lookup
from anacc.compiler.program import AnalogStep, DigitalStep, Program, ProgramLayer
from anacc.passes.calibrate_scales import quantize_weights
from anacc.runtime.analog import analog_forward, rows_of
from anacc.runtime.backends import Backend
from anacc.runtime.digital import TorchRegions
from anacc.runtime.interpreter import Interpreter


class TrainableLayer:
    """Float shadow weights and bias of one analog layer, re-quantized on every forward.

    The layer's float ``weight`` and ``bias`` arrays are views of the parameters (the
    optimizer updates them in place); :meth:`TrainingGraph.snapshot` copies them. For a
    grouped convolution the gradient is masked to its diagonal blocks, so the structural
    zeros stay zero.
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
        self._dequantized: torch.Tensor | None = None
        self._version = -1

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
        g = grad.reshape(-1, grad.shape[-1]) * ctx.ratio
        need_rows, need_w, need_b = ctx.needs_input_grad[:3]
        grad_rows = (g @ w_deq.T).reshape(rows.shape) if need_rows else None
        grad_w = rows.reshape(-1, rows.shape[-1]).T @ g if need_w else None
        grad_b = grad.reshape(-1, grad.shape[-1]).sum(0) if need_b else None
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
        conv: ConvGeometry,
    ) -> torch.Tensor:
        ctx.save_for_backward(x_pad, kernel)
        ctx.ratio, ctx.conv = ratio, conv
        return run()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x_pad, kernel = ctx.saved_tensors
        conv: ConvGeometry = ctx.conv
        grads = torch.nn.grad
        input_grad = grads.conv1d_input if conv.rank == 1 else grads.conv2d_input
        weight_grad = grads.conv1d_weight if conv.rank == 1 else grads.conv2d_weight
        g = grad * ctx.ratio
        args = (list(conv.strides), 0, list(conv.dilations), conv.group)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = input_grad(x_pad.shape, kernel, g, *args) if need_x else None
        grad_w = None
        if need_w:
            grad_k = weight_grad(x_pad, kernel.shape, g, *args)
            grad_w = torch.from_numpy(conv.weight_matrix(grad_k.numpy()))
        grad_b = grad.sum([d for d in range(grad.dim()) if d != 1]) if need_b else None
        return grad_x, grad_w, grad_b, None, None, None, None


def trainable_constants(program: Program) -> list[str]:
    """The program constants fine-tuning trains: the ``params`` inputs of digital ops (the
    scales and biases of normalizations)."""
    names = set()
    for node in program.digital_nodes:
        for i in lookup(node.op, node.domain).params:
            t = node.inputs[i] if i < len(node.inputs) else ""
            if t:
                value = program.constants.get(t)
                if value is not None and value.dtype.kind == "f":
                    names.add(t)
    return sorted(names)


class TrainingGraph(torch.nn.Module, Interpreter):
    """The program with the backend in the loop; see the module docstring."""

    def __init__(
        self,
        program: Program,
        backend: Backend,
        gain_ratio: float,
        *,
        per_column: bool,
        ema_momentum: float | None = None,
    ) -> None:
        torch.nn.Module.__init__(self)
        Interpreter.__init__(self, program)
        self.backend = backend
        self.gain_ratio = gain_ratio
        self.ema_momentum = ema_momentum
        self.layers = {
            name: TrainableLayer(layer, per_column, program.chip.weight_max)
            for name, layer in program.layers.items()
        }
        self.digital_params = torch.nn.ParameterDict()
        self._param_names: dict[str, str] = {}
        for i, name in enumerate(trainable_constants(program)):
            key = f"p{i}"
            value = torch.from_numpy(np.array(program.constants[name], dtype=np.float32))
            self.digital_params[key] = torch.nn.Parameter(value)
            self._param_names[name] = key
        for i, tl in enumerate(self.layers.values()):
            self.register_parameter(f"w{i}", tl.weight)
            if tl.bias is not None:
                self.register_parameter(f"b{i}", tl.bias)
        self.regions = TorchRegions(
            program, {name: self.digital_params[key] for name, key in self._param_names.items()}
        )
        self._step_weights: dict[str, torch.Tensor] = {}

    def requantize(self) -> None:
        """Quantize the shadow weights for the next forward pass (once per forward, however
        often a layer runs in it)."""
        for name, tl in self.layers.items():
            self._step_weights[name] = tl.requantize()

    def forward(self, feeds: dict[str, torch.Tensor]) -> torch.Tensor:
        self.requantize()
        return self.run(feeds)[self.program.outputs[0].name]

    def digital(self, step: DigitalStep, args: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return self.regions.run(step, args)

    def analog(self, step: AnalogStep, layer: ProgramLayer, x: torch.Tensor) -> torch.Tensor:
        tl = self.layers[step.layer]
        layer = tl.layer
        w_deq = self._step_weights[step.layer]
        x_in = x.detach()
        if self.training and self.ema_momentum is not None and layer.input_scale is not None:
            self._ema_scale(layer, rows_of(layer, x_in))

        def run() -> torch.Tensor:
            return analog_forward(layer, x_in, self.backend)

        if layer.conv is not None:
            kernel = torch.from_numpy(layer.conv.kernel(w_deq.numpy()))
            x_pad = layer.conv.pad(x)
            return _ConvSurrogate.apply(
                x_pad, tl.weight, tl.bias, kernel, run, self.gain_ratio, layer.conv
            )
        return _LinearSurrogate.apply(x, tl.weight, tl.bias, w_deq, run, self.gain_ratio)

    def _ema_scale(self, layer: ProgramLayer, rows: torch.Tensor) -> None:
        imax = self.program.chip.input_max
        if layer.signed == "split":
            span = float(rows.abs().max())
        elif layer.signed == "shift":
            span = float(rows.max()) - layer.input_offset
        else:
            span = float(rows.max())
        if span > 0:
            m = self.ema_momentum
            assert m is not None and layer.input_scale is not None
            layer.input_scale = m * layer.input_scale + (1 - m) * span / imax

    def snapshot(self) -> Program:
        """A new program with the current weights, scales, biases and digital parameters."""
        layers = {}
        for name, tl in self.layers.items():
            tl.requantize()
            lay = copy.copy(tl.layer)
            lay.analog = copy.copy(tl.layer.analog)
            lay.analog.weight = lay.analog.weight.copy()  # not the live parameters
            if lay.bias is not None:
                lay.bias = lay.bias.copy()
            lay.analog.version = 0
            layers[name] = lay
        constants = dict(self.program.constants)
        for name, key in self._param_names.items():
            dtype = self.program.constants[name].dtype
            constants[name] = self.digital_params[key].detach().numpy().astype(dtype)
        new = copy.copy(self.program)
        new.layers = layers
        new.constants = constants
        new.source = {**self.program.source, "fine_tuned": True}
        return new

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
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from anacc.compiler.conv import ConvGeometry
from anacc.compiler.ops import lookup
from anacc.compiler.program import AnalogStep, DigitalStep, Program, ProgramLayer
from anacc.passes.calibrate_scales import requantize_weights
from anacc.runtime.analog import analog_forward, rows_of
from anacc.runtime.backends import Backend
from anacc.runtime.digital import TorchRegions
from anacc.runtime.interpreter import Interpreter


class TrainableLayer:
    """The trainable state of one analog layer, applied on every forward.

    - ``weight``, ``bias``: float shadow weights and bias (the layer's float arrays are views
      of them: the optimizer updates them in place), re-quantized on every forward. For a
      grouped convolution the gradient is masked to its diagonal blocks, so the structural
      zeros stay zero.
    - ``log_gain`` (``column_gain``): a digital gain per output column after the ADC, as its
      logarithm; with the bias (the digital offset) it is the affine that takes out each
      neuron's gain deviation. :meth:`TrainingGraph.snapshot` folds it into the weight
      scale, the float weights and the bias, where it is exact.
    - ``log_scale`` (``learn_scale``, layers with a static input scale): the input LSB as its
      logarithm, learned LSQ-style (:class:`_ChipLayer`).
    """

    def __init__(
        self,
        layer: ProgramLayer,
        per_column: bool,
        wmax: int,
        *,
        column_gain: bool = False,
        learn_scale: bool = False,
    ) -> None:
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
        self.log_gain = None
        if column_gain:
            self.log_gain = torch.nn.Parameter(torch.zeros(layer.analog.out_features))
        self.log_scale = None
        if learn_scale and layer.input_scale is not None:
            self.log_scale = torch.nn.Parameter(torch.tensor(math.log(layer.input_scale)))

    def requantize(self) -> torch.Tensor:
        """Push the quantized shadow weights into the layer (a new version only if they
        changed); return them dequantized."""
        a = self.layer.analog
        w_q, scale, w_deq, changed = requantize_weights(
            a.weight, self.per_column, self.wmax, np.asarray(a.weight_q), dequantized=True
        )
        if changed:  # backends rebuild what they cache per version
            a.weight_q = w_q
            a.version += 1
        self.layer.weight_scale = scale
        if self.log_scale is not None:
            self.layer.input_scale = float(self.log_scale.detach().exp())
        return torch.from_numpy(w_deq)

    def folded(self) -> ProgramLayer:
        """A copy of the layer with the current state, the column gain folded in: the gain
        ``a`` of column ``c`` multiplies its weight scale, its float weights and its bias,
        which is the same output (the shift correction scales with the weight scale too)."""
        self.requantize()
        lay = copy.copy(self.layer)
        lay.analog = copy.copy(self.layer.analog)
        lay.analog.weight = lay.analog.weight.copy()  # not the live parameters
        lay.analog.version = 0
        if lay.bias is not None:
            lay.bias = lay.bias.copy()
        if self.log_gain is not None:
            gain = self.log_gain.detach().exp().numpy()
            lay.weight_scale = (lay.weight_scale * gain).astype(np.float32)
            lay.analog.weight *= gain.astype(lay.analog.weight.dtype)
            if lay.bias is not None:
                lay.bias = (lay.bias * gain).astype(lay.bias.dtype)
        return lay


@dataclass
class _ScaleTerms:
    """What the gradient of a learned input scale needs: the encoding's offset (``shift``),
    the span ``scale * input_max`` that passes unclipped, whether both signs pass
    (``split``), and the output's part that does not scale with the input LSB (bias and
    shift correction, per output column)."""

    offset: float
    span: float
    split: bool
    constant: torch.Tensor

    def inside(self, x: torch.Tensor) -> torch.Tensor:
        u = x - self.offset if self.offset else x
        if self.split:
            return u.abs() <= self.span
        return (u >= 0) & (u <= self.span)


@dataclass
class _AnalogCall:
    """One analog step in the loop: the chip's forward ``run``, the measured/nominal gain
    ``ratio`` and the dequantized weights (``w_deq`` rows x columns; for a convolution also
    its ``kernel`` and geometry); ``scale`` when the input scale is learned."""

    run: Callable[[], torch.Tensor]
    ratio: float
    w_deq: torch.Tensor
    conv: ConvGeometry | None = None
    kernel: torch.Tensor | None = None
    scale: _ScaleTerms | None = None

    def input_grad(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The surrogate's gradient with respect to its input ``x``, for upstream ``g``
        (already times the gain ratio)."""
        conv = self.conv
        if conv is None:
            return (g.reshape(-1, g.shape[-1]) @ self.w_deq.T).reshape(x.shape)
        grad = torch.nn.grad.conv1d_input if conv.rank == 1 else torch.nn.grad.conv2d_input
        return grad(x.shape, self.kernel, g, *self._conv_args())

    def weight_grad(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if conv is None:
            return x.reshape(-1, x.shape[-1]).T @ g.reshape(-1, g.shape[-1])
        grad = torch.nn.grad.conv1d_weight if conv.rank == 1 else torch.nn.grad.conv2d_weight
        assert self.kernel is not None
        grad_k = grad(x, self.kernel.shape, g, *self._conv_args())
        return torch.from_numpy(conv.weight_matrix(grad_k.numpy()))

    def _conv_args(self) -> tuple:
        conv = self.conv
        assert conv is not None
        return (list(conv.strides), 0, list(conv.dilations), conv.group)

    def channels(self, t: torch.Tensor) -> torch.Tensor:
        """A per-column vector shaped to broadcast against the output."""
        if self.conv is None:
            return t
        return t.view(-1, *([1] * self.conv.rank))


class _ChipLayer(torch.autograd.Function):
    """Forward: the chip's output ``call.run()``. Backward: the linear surrogate
    ``ratio * x @ W_q + b`` (for a convolution computed as a convolution of the padded input
    ``x``, so grouped convolutions keep their zero blocks), straight through to the shadow
    weights.

    With a learned input scale ``s`` (LSQ-style), the output is ``s * signal(x_q) + c`` with
    ``x_q`` the clipped, rounded ``(x - offset) / s``; its derivative,
    ``(signal - ratio * ((x - offset) * inside) @ W_q) / s``, takes the measured chip output
    (noise and saturation included) against the linear model of the unclipped inputs: a
    smaller scale gains signal over noise until clipping costs more. Clipped inputs pass no
    gradient to ``x`` then (PACT)."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        log_scale: torch.Tensor | None,
        call: _AnalogCall,
    ) -> torch.Tensor:
        y = call.run()
        ctx.call = call
        ctx.save_for_backward(x, y if call.scale is not None else None)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, y = ctx.saved_tensors
        call: _AnalogCall = ctx.call
        need_x, need_w, need_b, need_s = ctx.needs_input_grad[:4]
        g = grad * call.ratio
        scale = call.scale
        grad_x = grad_w = grad_b = grad_s = None
        if need_x or (need_s and scale is not None):
            grad_x = call.input_grad(x, g)
        if scale is not None:
            inside = scale.inside(x)
            if need_s:
                signal = y - call.channels(scale.constant)
                u = x - scale.offset if scale.offset else x
                grad_s = (grad * signal).sum() - (grad_x * u * inside).sum()
            if need_x:
                grad_x = grad_x * inside
        if need_w:
            grad_w = call.weight_grad(x, g)
        if need_b:
            dims = [
                d
                for d in range(grad.dim())
                if d != (1 if call.conv is not None else grad.dim() - 1)
            ]
            grad_b = grad.sum(dims)
        return (grad_x if need_x else None), grad_w, grad_b, grad_s, None


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
    """The program with the backend in the loop; see the module docstring.

    ``backend`` and ``gain_ratio`` may be swapped between steps (fine-tuning against several
    chip instances does so batch by batch)."""

    def __init__(
        self,
        program: Program,
        backend: Backend,
        gain_ratio: float,
        *,
        per_column: bool,
        ema_momentum: float | None = None,
        column_gain: bool = False,
        learn_scale: bool = False,
    ) -> None:
        torch.nn.Module.__init__(self)
        Interpreter.__init__(self, program)
        self.backend = backend
        self.gain_ratio = gain_ratio
        self.ema_momentum = ema_momentum
        wmax = program.chip.weight_max
        self.layers = {
            name: TrainableLayer(
                layer, per_column, wmax, column_gain=column_gain, learn_scale=learn_scale
            )
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
            if tl.log_gain is not None:
                self.register_parameter(f"g{i}", tl.log_gain)
            if tl.log_scale is not None:
                self.register_parameter(f"s{i}", tl.log_scale)
        self.regions = TorchRegions(
            program, {name: self.digital_params[key] for name, key in self._param_names.items()}
        )
        self._step_weights: dict[str, torch.Tensor] = {}

    def affine_parameters(self) -> list[torch.nn.Parameter]:
        """The learned column gains and input scales (a parameter group of their own)."""
        return [
            p for tl in self.layers.values() for p in (tl.log_gain, tl.log_scale) if p is not None
        ]

    def requantize(self) -> None:
        """Quantize the shadow weights for the next forward pass (once per forward, however
        often a layer runs in it)."""
        for name, tl in self.layers.items():
            self._step_weights[name] = tl.requantize()

    def forward(self, feeds: dict[str, torch.Tensor]) -> torch.Tensor:
        self.requantize()
        self.regions.new_forward()
        try:
            return self.run(feeds)[self.program.outputs[0].name]
        finally:
            self.regions.new_forward()

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

        call = _AnalogCall(run, self.gain_ratio, w_deq)
        if layer.conv is not None:
            call.conv = layer.conv
            call.kernel = torch.from_numpy(layer.conv.kernel(w_deq.numpy()))
            x = layer.conv.pad(x)
        if tl.log_scale is not None and torch.is_grad_enabled():
            call.scale = self._scale_terms(layer, w_deq)
        y = _ChipLayer.apply(x, tl.weight, tl.bias, tl.log_scale, call)
        if tl.log_gain is not None:
            y = y * call.channels(tl.log_gain.exp())
        return y

    def _scale_terms(self, layer: ProgramLayer, w_deq: torch.Tensor) -> _ScaleTerms:
        assert layer.input_scale is not None
        constant = torch.zeros(w_deq.shape[1])
        if layer.signed == "shift" and layer.input_offset:
            constant += layer.input_offset * w_deq.sum(0)
        if layer.bias is not None:
            constant += torch.from_numpy(layer.bias)
        span = layer.input_scale * self.program.chip.input_max
        offset = layer.input_offset if layer.signed == "shift" else 0.0
        return _ScaleTerms(offset, span, layer.signed == "split", constant)

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
        """A new program with the current weights, scales, biases and digital parameters
        (the column gains folded in)."""
        layers = {name: tl.folded() for name, tl in self.layers.items()}
        constants = dict(self.program.constants)
        for name, key in self._param_names.items():
            dtype = self.program.constants[name].dtype
            constants[name] = self.digital_params[key].detach().numpy().astype(dtype)
        new = copy.copy(self.program)
        new.layers = layers
        new.constants = constants
        new.source = {**self.program.source, "fine_tuned": True}
        return new

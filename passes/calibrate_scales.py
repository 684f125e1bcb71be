"""Calibrate scales: the float value of one input LSB per layer and of one weight LSB per
output column (or per layer), and the integer weights.

Contract: for every ``Linear`` the pass sets ``LayerPlan.weight_scale`` (float32, one entry per
output column), ``weight_q`` (int16 with ``|w| <= chip.weight_max``) and, with calibration
statistics, ``input_scale`` (and ``input_offset`` for the ``shift`` strategy) so that the
clip value chosen by the scale method maps to ``chip.input_max``. Without calibration data,
``input_scale`` stays ``None``: the runtime then scales each batch by its own maximum
(dynamic), and the compiler warns.
"""

from __future__ import annotations

import numpy as np
from anacc.compiler.ir import Graph
from anacc.passes.base import CompileContext, Pass, PassResult
from numba import njit


def clip_value(
    values: np.ndarray, method: str, percentile: float | None, ema: float, levels: int
) -> float:
    """Upper clip value of non-negative ``values`` by the named method."""
    if values.size == 0:
        return 0.0
    vmax = float(values.max())
    if method == "max":
        return vmax
    if method == "ema":
        return min(ema, vmax) if ema > 0 else vmax
    if method == "percentile":
        return float(np.percentile(values, percentile))
    # mse: the clip value whose clip-and-round reconstruction error is smallest
    best, best_err = vmax, np.inf
    v = values.astype(np.float64)
    for c in np.linspace(0.05, 1.0, 64) * vmax:
        if c <= 0:
            continue
        step = c / levels
        err = float(np.mean((np.clip(np.round(v / step), 0, levels) * step - v) ** 2))
        if err < best_err:
            best, best_err = float(c), err
    return best


def quantize_weights(w: np.ndarray, per_column: bool, wmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric weight quantization: ``(w_q int16, scale float32 per column)``; see
    :func:`requantize_weights`."""
    w_q, scale, _, _ = requantize_weights(w, per_column, wmax)
    return w_q, scale


def requantize_weights(
    w: np.ndarray,
    per_column: bool,
    wmax: int,
    previous: np.ndarray | None = None,
    dequantized: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, bool]:
    """``(w_q, scale, w_deq, changed)`` of the float32 weights ``w`` ``(in, out)``, in one
    compiled pass: ``scale = max|w| / wmax`` per column (or one for the layer; 1 where the
    weights are all 0), ``w_q = clip(round_half_even(w / scale), -wmax, wmax)`` as int16, with
    ``dequantized`` also ``w_deq = w_q * scale`` (else None), and whether ``w_q`` differs from
    ``previous`` (True without one, or of another shape). float32 arithmetic throughout."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    w_q = np.empty(w.shape, np.int16)
    scale = np.empty(w.shape[1], np.float32)
    w_deq = np.empty(w.shape if dequantized else (0, 0), np.float32)
    compare = previous is not None and previous.shape == w.shape
    before = np.asarray(previous) if compare else np.zeros((0, 0), np.int16)
    differs = _quantize(w, per_column, wmax, before, w_q, scale, w_deq)
    return w_q, scale, (w_deq if dequantized else None), (differs or not compare)


@njit(cache=True, nogil=True, error_model="numpy")
def _quantize(w, per_column, wmax, previous, w_q, scale, w_deq):  # pragma: no cover - compiled
    """See :func:`requantize_weights`; ``previous`` and ``w_deq`` empty: not compared, not
    written. Returns whether ``w_q`` differs from a given ``previous``."""
    rows, cols = w.shape
    amax = np.zeros(cols, np.float32)
    for i in range(rows):
        for c in range(cols):
            amax[c] = max(amax[c], abs(w[i, c]))
    if not per_column:
        amax[:] = amax.max()
    top = np.float32(wmax)
    for c in range(cols):
        scale[c] = amax[c] / top if amax[c] > 0 else np.float32(1.0)
    compare, deq = previous.size > 0, w_deq.size > 0
    changed = False
    for i in range(rows):
        for c in range(cols):
            w_q[i, c] = np.int16(min(max(np.rint(w[i, c] / scale[c]), -top), top))
            if deq:
                w_deq[i, c] = np.float32(w_q[i, c]) * scale[c]  # an int16 times a float32
            if compare:
                changed |= w_q[i, c] != previous[i, c]
    return changed


class CalibrateScales(Pass):
    name = "calibrate-scales"
    requires = frozenset({"signed"})
    provides = frozenset({"scales"})

    def call(self, graph: Graph, ctx: CompileContext) -> PassResult:
        notes: list[str] = []
        opts = ctx.options
        imax = ctx.chip.input_max
        method, pct = opts.scale_method, opts.percentile
        for name, plan in ctx.layers.items():
            plan.weight_q, plan.weight_scale = quantize_weights(
                plan.weight, opts.weight_scale == "column", ctx.chip.weight_max
            )
            stats = ctx.calib.get(name) if ctx.calib else None
            if stats is None:
                plan.input_scale = None
                notes.append(f"{name}: weight scales only; input scale dynamic")
                continue
            x = stats.values
            if plan.signed == "none":
                hi = clip_value(np.maximum(x, 0), method, pct, stats.ema_max, imax)
                plan.input_offset = 0.0
                span = hi
            elif plan.signed == "split":
                ema = max(stats.ema_max, -stats.ema_min)
                span = clip_value(np.abs(x), method, pct, ema, imax)
                plan.input_offset = 0.0
            else:  # shift: clip both ends, then offset the low end to zero
                hi = clip_value(np.maximum(x, 0), method, pct, stats.ema_max, imax)
                lo = -clip_value(np.maximum(-x, 0), method, pct, -stats.ema_min, imax)
                plan.input_offset = float(lo)
                span = hi - lo
            plan.input_scale = float(span / imax) if span > 0 else 1.0
            notes.append(
                f"{name}: input LSB {plan.input_scale:.4g}"
                + (f", offset {plan.input_offset:.4g}" if plan.signed == "shift" else "")
                + f" ({opts.scale}); weight LSB {float(plan.weight_scale.min()):.3g}"
                f"..{float(plan.weight_scale.max()):.3g} ({opts.weight_scale})"
            )
        if ctx.calib is None and notes:
            ctx.warnings.append(
                "no calibration data: input scales are taken per batch at run time and "
                "num_sends from weight statistics; pass --calib DATA.npz for static scales"
            )
        return PassResult(graph, bool(notes), notes)

    def verify(self, graph: Graph, ctx: CompileContext) -> None:
        for plan in ctx.layers.values():
            assert plan.weight_q is not None and plan.weight_q.shape == plan.weight.shape
            assert np.abs(plan.weight_q).max(initial=0) <= ctx.chip.weight_max

"""Choose gain: ``num_sends`` per layer so typical outputs fill the ADC's linear range.

Contract: for every ``Linear`` the pass sets ``LayerPlan.num_sends`` to the largest value in
``1..chip.num_sends_max`` for which the 99.9th percentile of ``|gain_per_send * num_sends *
acc|`` stays inside the chip's linear output range, where ``acc`` are the exact integer
accumulations of each run (each row chunk of each input part) on the calibration rows. Layers
with few input features have small accumulations and so get more sends: the "increase global
gain for few input features" rule follows from the percentile rule. ``gain_factor`` scales the
result (for calibration searches).

Without calibration data the accumulations come from synthetic inputs drawn uniformly from
the chip's input range (a conservative, weight-statistics-only rule), with a warning from the
scale pass.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from anacc.compiler.ir import Graph
from anacc.compiler.quant import Encoding, encode_parts
from anacc.passes.base import CompileContext, Pass, PassResult

OUTPUT_PERCENTILE = 99.9
SYNTHETIC_ROWS = 512


def accumulation_percentile(
    rows_q: list[torch.Tensor], w_q: np.ndarray, row_chunks: list[tuple[int, int]], q: float
) -> float:
    """``np.percentile(|acc|, q)`` (numpy's default, linear method, bit for bit) over the
    exact integer accumulations ``acc`` of every run: all parts, row chunks, samples and
    columns; 0 without any.

    Only the order statistics at the percentile's two neighbouring ranks matter, so the runs
    are computed one at a time and only values that can still be among the largest
    ``n - floor((n - 1) q / 100)`` are kept: memory stays at one run's accumulations.
    """
    n = sum(xq.shape[0] for xq in rows_q) * len(row_chunks) * w_q.shape[1]
    if n == 0:
        return 0.0
    virtual = (n - 1) * (q / 100)
    below = math.floor(virtual)
    tail = n - below  # the values from rank `below` (counting from 0, ascending) up
    kept = torch.empty(0)
    threshold = None  # the tail-th largest value seen so far: a lower bound of the final one
    for a, b in row_chunks:
        w = torch.from_numpy(w_q[a:b].astype(np.float32))
        for xq in rows_q:
            acc = (xq[:, a:b] @ w).abs_().reshape(-1)
            if threshold is not None:
                acc = acc[acc >= threshold]
            kept = torch.cat([kept, acc])
            if kept.numel() > 2 * tail or (threshold is None and kept.numel() > tail):
                kept = kept.topk(tail).values
                threshold = float(kept[-1])
    top = kept.topk(min(tail, kept.numel())).values  # descending
    lo, hi = (np.float32(float(top[i])) for i in (tail - 1, max(tail - 2, 0)))
    t = virtual - below
    # numpy's _lerp with a weakly typed t: float32 arithmetic
    return float(hi - (hi - lo) * (1 - t) if t >= 0.5 else lo + (hi - lo) * t)


def sends_for(acc_abs_pct: float, gain_per_send: float, linear_max: float, max_sends: int) -> int:
    if acc_abs_pct <= 0:
        return max_sends
    return int(np.clip(np.floor(linear_max / (gain_per_send * acc_abs_pct)), 1, max_sends))


class ChooseGain(Pass):
    name = "choose-gain"
    requires = frozenset({"scales", "chunks", "stats"})
    provides = frozenset({"gain"})

    def call(self, graph: Graph, ctx: CompileContext) -> PassResult:
        notes: list[str] = []
        chip, gain = ctx.chip, ctx.profile.gain_per_send
        linear_max = min(abs(chip.linear_min), chip.linear_max)
        rng = np.random.default_rng(ctx.options.seed)
        for name, plan in ctx.layers.items():
            stats = ctx.calib.get(name) if ctx.calib else None
            n_in = plan.weight_q.shape[0]
            if stats is not None and plan.input_scale is not None:
                rows = torch.from_numpy(stats.rows)
                enc = Encoding(plan.input_scale, plan.input_offset)
                parts = encode_parts(rows, plan.signed, enc, chip.input_max)
                source = f"{rows.shape[0]} calibration rows"
            else:
                synth = rng.integers(0, chip.input_max + 1, size=(SYNTHETIC_ROWS, n_in))
                parts = [torch.from_numpy(synth.astype(np.float32))]
                source = "synthetic uniform inputs"
            chunks = plan.row_chunks
            pct = accumulation_percentile(parts, plan.weight_q, chunks, OUTPUT_PERCENTILE)
            sends = sends_for(pct, gain, linear_max, chip.num_sends_max)
            factor = ctx.options.gain_factor
            plan.num_sends = int(np.clip(round(sends * factor), 1, chip.num_sends_max))
            plan.gain_reason = (
                f"p{OUTPUT_PERCENTILE:g} |acc| {pct:.0f} over {source} -> "
                f"{plan.num_sends} sends ({gain * plan.num_sends * pct:.1f} LSB of "
                f"+-{linear_max:g} linear)" + (f", gain factor {factor:g}" if factor != 1.0 else "")
            )
            notes.append(f"{name}: {plan.gain_reason}")
        return PassResult(graph, bool(notes), notes)

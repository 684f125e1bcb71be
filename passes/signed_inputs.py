"""Translate signed inputs: decide per analog layer how inputs that can be negative reach a
chip that only takes unsigned pulses.

Contract: for every ``Linear`` the pass sets ``LayerPlan.signed`` to
- ``none``: the input cannot be negative (it comes from ReLU, Sigmoid, Softmax, a Clip at >= 0,
  or shape/pooling ops of such values; or calibration shows no negative value);
- ``shift``: inputs are offset by the calibrated minimum into the unsigned range and the
  offset's contribution is removed digitally (one run; the quantization step grows with the
  negative range, and the offset's charge takes ADC range);
- ``split``: positive and negative parts run separately and are subtracted digitally (twice
  the runs, full resolution for both signs).
With ``signed=auto`` the choice is per layer: ``shift`` when the negative range is at most
``shift_max_ratio`` of the positive range (the step grows by at most that factor), else
``split``. Without calibration data the range is unknown and possibly negative inputs use
``split``.
"""

from __future__ import annotations

import numpy as np
from anacc.compiler.ir import Graph
from anacc.compiler.ops import lookup
from anacc.passes.base import CompileContext, Pass, PassResult, linear_nodes


class SignAnalysis:
    """Which tensors of a graph are provably >= 0, from the op registry's sign rules, in one
    pass over the nodes in topological order. Graph inputs may be negative; so may analog
    outputs (signed weights)."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self._nonneg: dict[str, bool] = {}
        for node in graph.nodes():
            if node.op == "Linear":
                result = False
            else:
                result = bool(lookup(node.op, node.domain).sign(node, self))
            for out in node.outputs:
                if out:
                    self._nonneg[out] = result

    def constant(self, tensor: str) -> np.ndarray | None:
        return self.graph.initializers.get(tensor)

    def nonneg(self, tensor: str) -> bool:
        value = self.constant(tensor)
        if value is not None:
            return value.dtype.kind in "ub" or bool((value >= 0).all())
        return self._nonneg.get(tensor, False)


def can_be_negative(graph: Graph, tensor: str) -> bool:
    """Structural sign analysis: False only if ``tensor`` is provably >= 0."""
    return not SignAnalysis(graph).nonneg(tensor)


class SignedInputs(Pass):
    name = "signed-inputs"
    requires = frozenset({"layers", "stats"})
    provides = frozenset({"signed"})

    def call(self, graph: Graph, ctx: CompileContext) -> PassResult:
        notes: list[str] = []
        opts = ctx.options
        signs = SignAnalysis(graph)
        for name, nodes in linear_nodes(graph).items():
            plan = ctx.plan(name)
            stats = ctx.calib.get(name) if ctx.calib else None
            structural = any(not signs.nonneg(n.inputs[0]) for n in nodes)
            if not structural:
                plan.signed, plan.signed_reason = "none", "input is non-negative by construction"
            elif stats is not None and stats.min >= 0.0:
                plan.signed, plan.signed_reason = "none", "calibration data has no negative input"
            elif stats is None:
                plan.signed = "split" if opts.signed == "auto" else opts.signed
                plan.signed_reason = "input may be negative; no calibration data"
            else:
                ratio = -stats.min / max(stats.max, 1e-30)
                if opts.signed != "auto":
                    plan.signed = opts.signed
                    plan.signed_reason = f"requested (negative/positive range {ratio:.2f})"
                elif ratio <= opts.shift_max_ratio:
                    plan.signed = "shift"
                    plan.signed_reason = (
                        f"negative range {ratio:.2f} of positive <= {opts.shift_max_ratio}: "
                        "one run, small resolution loss"
                    )
                else:
                    plan.signed = "split"
                    plan.signed_reason = (
                        f"negative range {ratio:.2f} of positive > {opts.shift_max_ratio}: "
                        "two runs keep full resolution"
                    )
            notes.append(f"{name}: {plan.signed} ({plan.signed_reason})")
        changed = any(p.signed != "none" for p in ctx.layers.values())
        return PassResult(graph, changed, notes)

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

from anacc.compiler.ir import Graph
from anacc.passes.base import CompileContext, Pass, PassResult

_NONNEG_OPS = {"Relu", "Sigmoid", "Softmax"}
_SIGN_PRESERVING = {
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "ReduceMean",
    "Flatten",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Identity",
    "Dropout",
    "LRN",
}


def can_be_negative(graph: Graph, tensor: str, _seen: set[str] | None = None) -> bool:
    """Structural sign analysis: False only if ``tensor`` is provably >= 0."""
    if tensor in graph.initializers:
        return bool((graph.initializers[tensor] < 0).any())
    node = graph.producer(tensor)
    if node is None:
        return True  # a graph input: unknown
    if node.op in _NONNEG_OPS:
        return False
    if node.op == "Clip":
        lo = node.attr("min")
        return lo is None or lo < 0
    if node.op in _SIGN_PRESERVING:
        return can_be_negative(graph, node.inputs[0])
    if node.op == "Pad":
        pad_neg = node.attr("mode", "constant") == "constant" and node.attr("value", 0.0) < 0
        return pad_neg or can_be_negative(graph, node.inputs[0])
    if node.op in ("Concat", "Sum", "Add", "Mul"):
        return any(can_be_negative(graph, t) for t in node.inputs if t)
    return True


class SignedInputs(Pass):
    name = "signed-inputs"

    def call(self, graph: Graph, ctx: CompileContext) -> PassResult:
        notes: list[str] = []
        opts = ctx.options
        for node in graph.nodes():
            if node.op != "Linear":
                continue
            plan = ctx.layer(node.name)
            stats = ctx.calib.get(node.name) if ctx.calib else None
            structural = can_be_negative(graph, node.inputs[0])
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
            notes.append(f"{node.name}: {plan.signed} ({plan.signed_reason})")
        changed = any(p.signed != "none" for p in ctx.layers.values())
        return PassResult(graph, changed, notes)

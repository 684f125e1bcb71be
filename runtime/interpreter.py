"""The interpreter: the one loop that walks a program's steps.

:meth:`Interpreter.run` takes the input tensors, runs every step in order and returns the
graph outputs. A step is analog (one use of an analog layer) or digital (a region of host
ops); the loop hands it to :meth:`Interpreter.analog` or :meth:`Interpreter.digital`, which
subclasses implement: inference (:class:`anacc.runtime.session.Session`), fine-tuning (the
surrogate-gradient forward of :mod:`anacc.passes.finetune`), the error budget (every backend
on each layer's input, :mod:`anacc.runtime.error_budget`) and cost counting (input vectors per
layer, :mod:`anacc.runtime.report`) override one method or two, like torch.fx's Interpreter.

Tensors are dropped from the environment after their last use, so a forward pass holds only
what later steps still need. With a :class:`~anacc.runtime.profiler.Profiler` in
``profiler``, every step's wall time is recorded under its name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from anacc.compiler.program import AnalogStep, DigitalStep, Program, ProgramLayer
from anacc.runtime.profiler import Profiler


def last_uses(program: Program) -> list[tuple[str, ...]]:
    """Per step, the tensors no later step (nor the graph outputs) reads."""
    keep = {o.name for o in program.outputs}
    seen: set[str] = set(keep)
    out: list[tuple[str, ...]] = []
    for step in reversed(program.steps):
        fresh = tuple(t for t in (*step.inputs, *step.outputs) if t not in seen)
        seen.update(fresh)
        out.append(fresh)
    out.reverse()
    return out


class Interpreter:
    """Runs ``program`` step by step; subclasses implement :meth:`analog` and
    :meth:`digital` (see the module docstring)."""

    def __init__(self, program: Program, drop: list[tuple[str, ...]] | None = None) -> None:
        """``drop``: :func:`last_uses` of ``program`` when the caller has it already."""
        self.program = program
        self._drop = last_uses(program) if drop is None else drop
        self._constants: dict[str, torch.Tensor] | None = None
        self.profiler: Profiler | None = None

    def analog(self, step: AnalogStep, layer: ProgramLayer, x: torch.Tensor) -> torch.Tensor:
        """The output of one use of an analog layer."""
        raise NotImplementedError

    def digital(self, step: DigitalStep, args: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The outputs of a digital region, in ``step.outputs`` order."""
        raise NotImplementedError

    def run(self, feeds: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        env = dict(feeds)
        layers = self.program.layers
        profiler = self.profiler
        for step, drop in zip(self.program.steps, self._drop, strict=True):
            start = profiler.begin(step.name, step.op) if profiler is not None else 0.0
            args = [env[t] for t in step.inputs]
            if isinstance(step, AnalogStep):
                outs = [self.analog(step, layers[step.layer], args[0])]
            else:
                outs = self.digital(step, args)
            env.update(zip(step.outputs, outs, strict=True))
            for t in drop:
                env.pop(t, None)
            if profiler is not None:
                profiler.end(start)
        return {o.name: self._value(env, o.name) for o in self.program.outputs}

    def _value(self, env: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        if name in env:
            return env[name]
        if self._constants is None:
            self._constants = {}
        if name not in self._constants:
            self._constants[name] = torch.from_numpy(np.array(self.program.constants[name]))
        return self._constants[name]

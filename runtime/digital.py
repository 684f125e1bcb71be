"""The digital side: running a program's digital regions on the host.

- :class:`OrtRegions`: inference. Each :class:`~anacc.compiler.program.DigitalStep` becomes one
  onnxruntime session, built once, over the region's nodes with the constants they read; a call
  hands the torch tensors over as numpy arrays (no copy for contiguous tensors) and wraps the
  results the same way. onnxruntime runs every op of its CPU provider with ONNX's semantics.
- :class:`TorchRegions`: training. The region's nodes run one by one with the op registry's
  differentiable torch implementations, so gradients flow through them. A node without one
  still runs (in onnxruntime) when no gradient has to pass through it. A ``Gather`` of one
  constant index from a tensor that carries a gradient (an unrolled recurrence takes each
  time step of its input projection so) picks from the tensor unbound once per forward: each
  such Gather's backward would otherwise fill a gradient the size of the whole tensor,
  ``T`` of them for ``T`` steps, where the unbind's backward stacks the steps once.

docs/digital.md compares the candidates for the digital side and gives the numbers behind
this choice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import torch
from anacc.compiler.export import boundary_types, region_model
from anacc.compiler.ir import Node
from anacc.compiler.onnx_file import one_line
from anacc.compiler.ops import lookup
from anacc.compiler.ops.base import OpCall, TorchFn
from anacc.compiler.program import DigitalStep, Program

from anacc.errors import DataError, OptionError, ProgramError


def _session(proto: onnx.ModelProto, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # no busy-waiting after a run: every digital step has a session, each with its own pool,
    # and a spinning worker would hold the core that torch's threads need for the analog
    # step that follows (with 2 threads, layers ran up to 25x slower)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # no arena: each session's arena would keep the largest tensors it ever held, and a
    # program has a session per digital step
    opts.enable_cpu_mem_arena = False
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy() if t.is_contiguous() else t.detach().contiguous().numpy()


class OrtRegions:
    """One onnxruntime session per digital step of ``program``, built on construction."""

    def __init__(self, program: Program, threads: int | None = None) -> None:
        self.program = program
        threads = threads or torch.get_num_threads()
        types = boundary_types(program)
        self._sessions = {}
        for step in program.steps:
            if isinstance(step, DigitalStep):
                proto = region_model(program, step.nodes, step.inputs, step.outputs, types)
                try:
                    self._sessions[step.name] = _session(proto, threads)
                except Exception as exc:  # onnxruntime raises its own untyped errors
                    raise ProgramError(
                        f"digital step {step.name} ({step.op}): onnxruntime cannot load it "
                        f"({one_line(exc)}); recompile the model with this version of anacc"
                    ) from None

    def run(self, step: DigitalStep, args: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        feeds = {name: _as_numpy(a) for name, a in zip(step.inputs, args, strict=True)}
        try:
            results = self._sessions[step.name].run(list(step.outputs), feeds)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise DataError(
                f"digital step {step.name} ({step.op}) failed in onnxruntime: "
                f"{one_line(exc)}; check the input data against the model's inputs"
            ) from None
        return [torch.from_numpy(np.asarray(r)) for r in results]


class TorchRegions:
    """The digital steps as torch code (differentiable); see the module docstring.

    ``parameters`` maps constant names to tensors that replace the program's constants (the
    trainable digital parameters of fine-tuning)."""

    def __init__(
        self, program: Program, parameters: Mapping[str, torch.Tensor] | None = None
    ) -> None:
        self.program = program
        self.constants = {k: torch.from_numpy(np.array(v)) for k, v in program.constants.items()}
        self.constants.update(parameters or {})
        self._fallback: dict[str, object] = {}
        self._types = boundary_types(program)
        self._plans: dict[str, list[tuple[Node, TorchFn | None, OpCall]]] = {}
        # per forward: id(tensor) -> (tensor, axis, its slices along axis)
        self._unbound: dict[int, tuple[torch.Tensor, int, tuple[torch.Tensor, ...]]] = {}

    def new_forward(self) -> None:
        """Forget the tensors unbound in the forward before (see :meth:`_taker`)."""
        self._unbound.clear()

    def _plan(self, step: DigitalStep) -> list[tuple[Node, TorchFn | None, OpCall]]:
        """Each node of ``step`` with its torch form (None: onnxruntime runs it), resolved
        once per step: a recurrent model's cell runs once per time step."""
        plan = self._plans.get(step.name)
        if plan is None:
            opsets = self.program.opsets
            plan = self._plans[step.name] = [
                (node, self._form(node), OpCall(node, opsets.get(node.domain, 0)))
                for node in step.nodes
            ]
        return plan

    def _form(self, node: Node) -> TorchFn | None:
        fn = lookup(node.op, node.domain).torch
        if node.op == "Gather" and not node.domain and len(node.inputs) == 2:
            index = self.program.constants.get(node.inputs[1])
            if index is not None and np.ndim(index) == 0 and fn is not None:
                return self._taker(fn, int(index))
        return fn

    def _taker(self, fn: TorchFn, index: int) -> TorchFn:
        """A Gather of the constant scalar ``index``: ``fn`` unless its data carries a
        gradient, then the slice of the data unbound once per forward (same values, and a
        backward that stacks the slices' gradients once)."""

        def take(call: OpCall, inputs: Sequence[torch.Tensor | None]) -> list[torch.Tensor]:
            x = inputs[0]
            assert x is not None
            if not x.requires_grad or not torch.is_grad_enabled() or x.dim() == 0:
                return list(fn(call, inputs))
            at = int(call.attr("axis", 0)) % x.dim()
            size = x.shape[at]
            if not -size <= index < size:  # out of range: the op's own error
                return list(fn(call, inputs))
            found = self._unbound.get(id(x))
            if found is None or found[0] is not x or found[1] != at:
                found = self._unbound[id(x)] = (x, at, torch.unbind(x, at))
            return [found[2][index]]

        return take

    def run(self, step: DigitalStep, args: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        env = dict(zip(step.inputs, args, strict=True))
        constants = self.constants
        for node, fn, call in self._plan(step):
            inputs = [None if not t else env.get(t, constants.get(t)) for t in node.inputs]
            if fn is not None:
                outs = fn(call, inputs)
            else:
                extra = {t: env.get(t, constants.get(t)) for t in node.subgraph_inputs}
                outs = self._run_fallback(node, inputs, extra)
            for t, v in zip(node.outputs, outs, strict=False):
                if t:
                    env[t] = v
        return [env[t] for t in step.outputs]

    def _run_fallback(
        self,
        node: Node,
        inputs: list[torch.Tensor | None],
        extra: Mapping[str, torch.Tensor | None],
    ) -> list[torch.Tensor]:
        if any(t is not None and t.requires_grad for t in [*inputs, *extra.values()]):
            raise OptionError(
                f"fine-tuning needs gradients through node {node.name} ({node.op}), and anacc "
                f"has no differentiable form of {node.op}; fine-tune a model without it or "
                "freeze the layers before it"
            )
        given = {t: v for t, v in zip(node.inputs, inputs, strict=False) if t and v is not None}
        given.update((t, v) for t, v in extra.items() if v is not None)
        feeds = {t: _as_numpy(v) for t, v in given.items() if t not in self.program.constants}
        sess = self._fallback.get(node.name)
        if sess is None:
            types = {t: _dtype_name(v) for t, v in given.items()}
            outputs = [t for t in node.outputs if t]
            proto = region_model(self.program, [node], list(feeds), outputs, types)
            sess = self._fallback[node.name] = _session(proto, 1)
        outs = sess.run([t for t in node.outputs if t], feeds)  # type: ignore[attr-defined]
        it = iter(outs)
        return [
            torch.from_numpy(np.asarray(next(it))) if t else torch.empty(0) for t in node.outputs
        ]


def _dtype_name(t: torch.Tensor | None) -> str:
    if t is None:
        return "float32"
    return str(t.dtype).removeprefix("torch.")

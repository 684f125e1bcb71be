"""Lower LSTM, GRU and RNN: weight products on the array, gates digital, unrolled over time.

Contract: an ``LSTM``, ``GRU`` or ``RNN`` node with constant weights ``W``, ``R`` (and bias
``B`` and peepholes ``P``), a static sequence length, no ``sequence_lens`` that cuts sequences
short, and activations ONNX has ops for, becomes, per direction:

- one ``Linear`` over all time steps at once, ``X @ W^T`` plus the biases that do not sit
  behind a gate (layer ``<node>/W``; for reverse directions ``<node>/W_reverse``);
- per time step one use of the recurrent layer ``<node>/R`` on the previous hidden state (GRU
  with ``linear_before_reset=0`` needs two: ``R_zr`` on the state, ``R_h`` on the reset state);
  the first step with a zero initial state needs none;
- the gates as digital ONNX ops (Gather of the time step, Add, Split, the activations, Mul,
  Sub), written for the model's opset, and the outputs ``Y``, ``Y_h``, ``Y_c`` assembled by
  Unsqueeze and Concat in the node's layout.

Every other recurrent node stays digital (onnxruntime runs it) with a note saying why.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from anacc.compiler.ir import Dim, Graph, Node, TensorInfo
from anacc.compiler.partition import (
    DEFAULT_ACTIVATIONS,
    GATES,
    recurrent_activations,
    recurrent_blocker,
)
from anacc.passes._util import constant
from anacc.passes.base import CompileContext, Pass, PassResult
from anacc.passes.canonicalize import ANALOG_DOMAIN, linear_node


class _Emit:
    """Adds ONNX-form nodes (in the graph's opset) with shapes, named after one node."""

    def __init__(self, graph: Graph, prefix: str) -> None:
        self.graph = graph
        self.prefix = prefix
        self.opset = graph.opset

    def name(self, base: str) -> str:
        return self.graph.unique_name(f"{self.prefix}/{base}")

    def node(
        self, op: str, inputs: Sequence[str], shape: tuple[Dim, ...], base: str, **attrs: object
    ) -> str:
        out = self.name(base)
        self.graph.set_tensor(TensorInfo(out, shape, "float32"))
        self.graph.add_node(Node(self.name(op.lower()), op, list(inputs), [out], dict(attrs)))
        return out

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.name(base)
        self.graph.add_initializer(name, value)
        return name

    def take(self, x: str, index: int, axis: int, shape: tuple[Dim, ...], base: str) -> str:
        """``x`` at ``index`` along ``axis`` (the axis removed)."""
        i = self.const(f"{base}_index", np.array(index, dtype=np.int64))
        return self.node("Gather", [x, i], shape, base, axis=axis)

    def split(self, x: str, sizes: list[int], lead: tuple[Dim, ...], base: str) -> list[str]:
        """``x`` cut along its last axis into parts of ``sizes``."""
        outs = [self.name(f"{base}{k}") for k in range(len(sizes))]
        for out, size in zip(outs, sizes, strict=True):
            self.graph.set_tensor(TensorInfo(out, (*lead, size), "float32"))
        attrs: dict[str, object] = {"axis": -1}
        inputs = [x]
        if self.opset >= 13:
            inputs.append(self.const(f"{base}_sizes", np.array(sizes, dtype=np.int64)))
        else:
            attrs["split"] = list(sizes)
        self.graph.add_node(Node(self.name("split"), "Split", inputs, outs, attrs))
        return outs

    def unsqueeze(self, x: str, axis: int, shape: tuple[Dim, ...], base: str) -> str:
        if self.opset >= 13:
            axes = self.const(f"{base}_axes", np.array([axis], dtype=np.int64))
            return self.node("Unsqueeze", [x, axes], shape, base)
        return self.node("Unsqueeze", [x], shape, base, axes=[axis])

    def clip(self, x: str, bound: float, shape: tuple[Dim, ...], base: str) -> str:
        if self.opset >= 11:
            lo = self.const(f"{base}_min", np.array(-bound, dtype=np.float32))
            hi = self.const(f"{base}_max", np.array(bound, dtype=np.float32))
            return self.node("Clip", [x, lo, hi], shape, base)
        return self.node("Clip", [x], shape, base, min=-bound, max=bound)

    def act(self, x: str, spec: tuple[str, dict], shape: tuple[Dim, ...], base: str) -> str:
        op, attrs = spec
        return self.node(op, [x], shape, base, **attrs)


class LowerRecurrent(Pass):
    name = "lower-recurrent"
    requires = frozenset({"canonical"})
    provides = frozenset({"recurrent-lowered"})

    def call(self, graph: Graph, ctx: CompileContext) -> PassResult:
        notes: list[str] = []
        lowered = 0
        for node in graph.nodes():
            if node.op not in GATES or node.domain:
                continue
            why = recurrent_blocker(graph, node)
            if why:
                notes.append(f"kept {node.op} {node.name} digital ({why})")
                continue
            self._lower(graph, node)
            lowered += 1
            notes.append(f"{node.op} {node.name}: unrolled, weight products analog, gates digital")
        graph.prune_unused()
        return PassResult(graph, lowered > 0, notes)

    def _lower(self, graph: Graph, node: Node) -> None:
        inputs = list(node.inputs) + [""] * (8 - len(node.inputs))
        x_info = graph.tensors[inputs[0]]
        layout = int(node.attr("layout", 0))
        time_axis, batch_axis = (1, 0) if layout else (0, 1)
        steps = int(x_info.shape[time_axis])
        batch = x_info.shape[batch_axis]
        w, r = constant(graph, inputs[1]), constant(graph, inputs[2])
        hidden = int(node.attr("hidden_size", r.shape[-1]))
        gates = GATES[node.op]
        direction = node.attr("direction", "forward")
        dirs = ["forward", "reverse"] if direction == "bidirectional" else [direction]
        acts = recurrent_activations(node, len(dirs))
        assert acts is not None
        per = len(DEFAULT_ACTIVATIONS[node.op])
        b = constant(graph, inputs[3]) if inputs[3] else None
        p = constant(graph, inputs[7]) if inputs[7] else None
        graph.remove_node(node.name)
        em = _Emit(graph, node.name)
        ys, hs, cs = [], [], []
        for d, way in enumerate(dirs):
            bias = b[d].astype(np.float64) if b is not None else np.zeros(2 * gates * hidden)
            unit = _Direction(
                em=em,
                node=node,
                suffix="" if way == "forward" else "_reverse",
                w=w[d].astype(np.float64),
                r=r[d].astype(np.float64),
                wb=bias[: gates * hidden],
                rb=bias[gates * hidden :],
                peep=None if p is None else p[d].astype(np.float64),
                acts=acts[d * per : (d + 1) * per],
                hidden=hidden,
                batch=batch,
                layout=layout,
            )
            h0 = self._initial(em, inputs[5], d, layout, batch, hidden, "h0")
            c0 = self._initial(em, inputs[6], d, layout, batch, hidden, "c0")
            order = range(steps - 1, -1, -1) if way == "reverse" else range(steps)
            y, h, c = unit.run(inputs[0], steps, list(order), h0, c0)
            ys.append(y)
            hs.append(h)
            cs.append(c)
        outputs = list(node.outputs) + [""] * (3 - len(node.outputs))
        dim_axis = 2 if layout else 1
        state_axis = 1 if layout else 0
        self._join(em, ys, outputs[0], dim_axis)
        self._join(em, hs, outputs[1], state_axis)
        if node.op == "LSTM":
            self._join(em, cs, outputs[2], state_axis)

    def _initial(
        self, em: _Emit, tensor: str, d: int, layout: int, batch: Dim, hidden: int, base: str
    ) -> str | None:
        if not tensor:
            return None
        return em.take(tensor, d, 1 if layout else 0, (batch, hidden), f"{base}_{d}")

    def _join(self, em: _Emit, parts: list[str], out: str, axis: int) -> None:
        """``out`` = the per-direction ``parts`` with a direction axis at ``axis``."""
        if not out:
            return
        graph = em.graph
        shape = graph.tensors[out].shape if out in graph.tensors else ()
        expanded = []
        for k, part in enumerate(parts):
            part_shape = graph.shape(part)
            new_shape = (*part_shape[:axis], 1, *part_shape[axis:])
            expanded.append(em.unsqueeze(part, axis, new_shape, f"dir{k}"))
        if len(expanded) == 1:
            graph.add_node(Node(em.name("identity"), "Identity", expanded, [out]))
        else:
            graph.add_node(Node(em.name("concat"), "Concat", expanded, [out], {"axis": axis}))
        if shape:
            graph.set_tensor(TensorInfo(out, shape, "float32"))


class _Direction:
    """The unrolled cell of one direction (see the module docstring)."""

    def __init__(
        self,
        *,
        em: _Emit,
        node: Node,
        suffix: str,
        w: np.ndarray,
        r: np.ndarray,
        wb: np.ndarray,
        rb: np.ndarray,
        peep: np.ndarray | None,
        acts: list[tuple[str, dict]],
        hidden: int,
        batch: Dim,
        layout: int,
    ) -> None:
        self.em, self.node, self.suffix = em, node, suffix
        self.w, self.r, self.wb, self.rb, self.peep = w, r, wb, rb, peep
        self.acts, self.hidden, self.batch, self.layout = acts, hidden, batch, layout
        self.op = node.op
        self.clip = node.attr("clip")
        self.lbr = int(node.attr("linear_before_reset", 0))
        self.state = (batch, hidden)
        self._uses: dict[str, Node] = {}

    def _linear(self, layer: str, x: str, w: np.ndarray, b: np.ndarray | None, shape) -> str:
        """One use of the analog layer ``<node>/<layer>``; the first use creates it."""
        em = self.em
        out = em.name(f"{layer}_out")
        em.graph.set_tensor(TensorInfo(out, shape, "float32"))
        first = self._uses.get(layer)
        if first is None:
            name = em.graph.unique_name(f"{self.node.name}/{layer}")
            self._uses[layer] = linear_node(em.graph, name, x, out, w, b, self.op)
        else:
            attrs = {"layer": first.attr("layer"), "source_op": self.op}
            inputs = [x, *first.inputs[1:]]
            em.graph.add_node(Node(em.name(layer), "Linear", inputs, [out], attrs, ANALOG_DOMAIN))
        return out

    def run(
        self, x: str, steps: int, order: list[int], h0: str | None, c0: str | None
    ) -> tuple[str, str, str | None]:
        em, hidden, gates = self.em, self.hidden, GATES[self.op]
        x_info = em.graph.tensors[x]
        xw_shape = (*x_info.shape[:2], gates * hidden)
        # biases that do not sit behind the GRU reset gate go into the input product
        in_bias = self.wb + self.rb
        if self.op == "GRU":
            in_bias = self.wb.copy()
            in_bias[: 2 * hidden] += self.rb[: 2 * hidden]
            if not self.lbr:
                in_bias[2 * hidden :] += self.rb[2 * hidden :]
        xw = self._linear(f"W{self.suffix}", x, self.w.T, in_bias, xw_shape)
        time_axis = 1 if self.layout else 0
        h, c = h0, c0
        outputs: dict[int, str] = {}
        for t in order:
            x_t = em.take(xw, t, time_axis, (self.batch, gates * hidden), f"x{self.suffix}_t{t}")
            if self.op == "LSTM":
                h, c = self._lstm(x_t, h, c, t)
            elif self.op == "GRU":
                h = self._gru(x_t, h, t)
            else:
                h = self._rnn(x_t, h, t)
            outputs[t] = h
        axis = 1 if self.layout else 0
        seq_shape = (self.batch, steps, hidden) if self.layout else (steps, self.batch, hidden)
        per_step = []
        for t in range(steps):
            step_shape = (self.batch, 1, hidden) if self.layout else (1, self.batch, hidden)
            per_step.append(em.unsqueeze(outputs[t], axis, step_shape, f"y{self.suffix}_t{t}"))
        if len(per_step) == 1:
            y = per_step[0]
        else:
            y = em.node("Concat", per_step, seq_shape, f"y{self.suffix}", axis=axis)
        assert h is not None
        return y, h, c

    def _gates(self, x_t: str, h: str | None, t: int) -> str:
        """``x_t`` plus the recurrent product of ``h`` (nothing for a zero state)."""
        em, width = self.em, GATES[self.op] * self.hidden
        if h is None:
            return x_t
        hr = self._linear(f"R{self.suffix}", h, self.r.T, None, (self.batch, width))
        return em.node("Add", [x_t, hr], (self.batch, width), f"gates{self.suffix}_t{t}")

    def _pre(self, x: str, base: str) -> str:
        return self.em.clip(x, float(self.clip), self.state, base) if self.clip else x

    def _lstm(self, x_t: str, h: str | None, c: str | None, t: int) -> tuple[str, str]:
        em, s, tag = self.em, self.state, f"{self.suffix}_t{t}"
        f_act, g_act, h_act = self.acts
        i, o, f, g = em.split(
            self._gates(x_t, h, t), [self.hidden] * 4, (self.batch,), f"iofc{tag}"
        )
        hidden = self.hidden
        if self.peep is not None and c is not None:
            pi = em.const(f"pi{tag}", self.peep[:hidden].astype(np.float32))
            pf = em.const(f"pf{tag}", self.peep[2 * hidden :].astype(np.float32))
            i = em.node("Add", [i, em.node("Mul", [c, pi], s, f"ci{tag}")], s, f"ip{tag}")
            f = em.node("Add", [f, em.node("Mul", [c, pf], s, f"cf{tag}")], s, f"fp{tag}")
        i = em.act(self._pre(i, f"i_clip{tag}"), f_act, s, f"i{tag}")
        g = em.act(self._pre(g, f"g_clip{tag}"), g_act, s, f"g{tag}")
        if self.node.attr("input_forget", 0):
            one = em.const(f"one{tag}", np.array(1.0, dtype=np.float32))
            f = em.node("Sub", [one, i], s, f"f{tag}")
        else:
            f = em.act(self._pre(f, f"f_clip{tag}"), f_act, s, f"f{tag}")
        ig = em.node("Mul", [i, g], s, f"ig{tag}")
        if c is None:
            c_new = ig
        else:
            c_new = em.node("Add", [em.node("Mul", [f, c], s, f"fc{tag}"), ig], s, f"c{tag}")
        if self.peep is not None:
            po = em.const(f"po{tag}", self.peep[hidden : 2 * hidden].astype(np.float32))
            o = em.node("Add", [o, em.node("Mul", [c_new, po], s, f"co{tag}")], s, f"op{tag}")
        o = em.act(self._pre(o, f"o_clip{tag}"), f_act, s, f"o{tag}")
        h_new = em.node("Mul", [o, em.act(c_new, h_act, s, f"hc{tag}")], s, f"h{tag}")
        return h_new, c_new

    def _gru(self, x_t: str, h: str | None, t: int) -> str:
        em, s, tag, hid = self.em, self.state, f"{self.suffix}_t{t}", self.hidden
        f_act, g_act = self.acts
        xz, xr, xh = em.split(x_t, [hid] * 3, (self.batch,), f"xzrh{tag}")
        rbh = self.rb[2 * hid :]
        if h is None:
            z, r = xz, xr
            hh = None
            if self.lbr and np.any(rbh):
                hh = em.const(f"rbh{tag}", rbh.astype(np.float32))
        elif self.lbr:
            hr_all = self._linear(
                f"R{self.suffix}",
                h,
                self.r.T,
                np.concatenate([np.zeros(2 * hid), rbh]),
                (self.batch, 3 * hid),
            )
            hz, hr, hh = em.split(hr_all, [hid] * 3, (self.batch,), f"hzrh{tag}")
            z = em.node("Add", [xz, hz], s, f"zsum{tag}")
            r = em.node("Add", [xr, hr], s, f"rsum{tag}")
        else:
            hzr = self._linear(
                f"R_zr{self.suffix}", h, self.r[: 2 * hid].T, None, (self.batch, 2 * hid)
            )
            hz, hr = em.split(hzr, [hid] * 2, (self.batch,), f"hzr{tag}")
            z = em.node("Add", [xz, hz], s, f"zsum{tag}")
            r = em.node("Add", [xr, hr], s, f"rsum{tag}")
            hh = None
        z = em.act(self._pre(z, f"z_clip{tag}"), f_act, s, f"z{tag}")
        r = em.act(self._pre(r, f"r_clip{tag}"), f_act, s, f"r{tag}")
        if h is not None and not self.lbr:
            rh = em.node("Mul", [r, h], s, f"rh{tag}")
            hh = self._linear(f"R_h{self.suffix}", rh, self.r[2 * hid :].T, None, s)
            cand = em.node("Add", [xh, hh], s, f"hsum{tag}")
        elif hh is not None:
            cand = em.node("Add", [xh, em.node("Mul", [r, hh], s, f"rhh{tag}")], s, f"hsum{tag}")
        else:
            cand = xh
        cand = em.act(self._pre(cand, f"h_clip{tag}"), g_act, s, f"htilde{tag}")
        one = em.const(f"one{tag}", np.array(1.0, dtype=np.float32))
        keep = em.node("Sub", [one, z], s, f"keep{tag}")
        new = em.node("Mul", [keep, cand], s, f"new{tag}")
        if h is None:
            return new
        return em.node("Add", [new, em.node("Mul", [z, h], s, f"old{tag}")], s, f"h{tag}")

    def _rnn(self, x_t: str, h: str | None, t: int) -> str:
        tag = f"{self.suffix}_t{t}"
        pre = self._pre(self._gates(x_t, h, t), f"clip{tag}")
        return self.em.act(pre, self.acts[0], self.state, f"h{tag}")

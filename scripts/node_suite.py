"""The ONNX node test suite through anacc: which cases compile and reproduce, on which path.

ONNX ships one small model per op behaviour with its inputs and expected outputs
(``onnx.backend.test.case.node``). The cases anacc is held to are the *kept* ones: every
input and output a float32 tensor, only the default domain, and onnxruntime reproduces the
expected outputs. Each kept case is

1. compiled by anacc from a model file without calibration data and run on the ``ideal``
   backend, inputs given exactly as declared (:func:`check_case`);
2. when every digital op of the compiled program has a torch form, run again the way
   fine-tuning runs it: analog steps on the ``ideal`` backend, digital steps through the op
   registry's torch forms (the *torch path*).

Besides, every case with numeric tensors onnxruntime reproduces (integer and boolean inputs
too) runs node by node through the torch forms when all its nodes have one
(:func:`run_torch_nodes`), which reaches the forms of the ops the compiler maps onto the array.

Outputs are compared with the expected ones as ONNX's backend test runner compares them
(shape, dtype, ``assert_allclose`` at the case's ``rtol``/``atol``). Run
``python scripts/node_suite.py`` for the counts; ``--write`` rewrites the generated lists in
docs/ops.md (between the ``node-suite`` markers), which tests/test_onnx_node_suite.py holds
the code to.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import tempfile
import textwrap
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
OPS_DOC = ROOT / "docs" / "ops.md"
REFUSED = ("<!-- node-suite refused: begin -->", "<!-- node-suite refused: end -->")
TORCH_GAPS = ("<!-- node-suite torch: begin -->", "<!-- node-suite torch: end -->")
COUNTS = ("<!-- node-suite counts: begin -->", "<!-- node-suite counts: end -->")
TORCH_FORMS = ("<!-- torch-forms: begin -->", "<!-- torch-forms: end -->")
_ENTRY = re.compile(r"^- `(?P<name>test_\w+)`(?:: (?P<reason>.*))?$")
# Longest reason quoted in the docs, and the width of generated paragraphs.
_REASON_CHARS = 160
_DOC_WIDTH = 96


@dataclass(frozen=True)
class NodeCase:
    """One ONNX node test case: the model, one set of inputs and expected outputs."""

    name: str
    model: onnx.ModelProto
    inputs: tuple[np.ndarray, ...]
    outputs: tuple[np.ndarray, ...]
    rtol: float
    atol: float

    @property
    def float32(self) -> bool:
        """Every input and output is a float32 tensor, declared and given."""
        declared = [*self.model.graph.input, *self.model.graph.output]
        return all(
            v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in declared
        ) and all(a.dtype == np.float32 for a in (*self.inputs, *self.outputs))

    def feeds(self) -> dict[str, np.ndarray]:
        names = [i.name for i in self.model.graph.input]
        return dict(zip(names, self.inputs, strict=True))


@dataclass(frozen=True)
class Outcome:
    """How one case fared on one path: ``reason`` is empty when it reproduced the outputs."""

    name: str
    reason: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason


@dataclass(frozen=True)
class SuiteRun:
    """The outcomes of a run: through anacc (every kept case), the torch path (the kept
    cases whose digital ops all have torch forms) and node by node (the tensor cases whose
    nodes all have torch forms); ``torch_gaps`` counts, per op without a torch form, the
    kept cases it keeps off the torch path."""

    kept: int
    tensor_cases: int
    anacc: tuple[Outcome, ...]
    torch: tuple[Outcome, ...]
    nodes: tuple[Outcome, ...]
    torch_gaps: dict[str, int]

    @property
    def refused(self) -> dict[str, str]:
        return {o.name: o.reason for o in self.anacc if not o.ok}

    def summary(self) -> list[str]:
        def part(n: int, of: int) -> str:
            return f"{n} of {of} ({100 * n / max(of, 1):.1f} %)"

        return [
            f"kept cases (float32, default domain, reproduced by onnxruntime): {self.kept}",
            f"reproduced by anacc (ideal): {part(sum(o.ok for o in self.anacc), self.kept)}",
            f"reproduced on the torch path: {part(sum(o.ok for o in self.torch), self.kept)}",
            f"tensor cases onnxruntime reproduces: {self.tensor_cases}; with torch forms for "
            f"every node {len(self.nodes)}, reproduced node by node "
            f"{part(sum(o.ok for o in self.nodes), self.tensor_cases)}",
        ]


def _array(item: object) -> np.ndarray | None:
    if isinstance(item, onnx.TensorProto):
        return numpy_helper.to_array(item)
    if isinstance(item, (np.ndarray, np.generic)):
        return np.asarray(item)
    return None  # sequences, maps, optionals


def _default_domain_only(model: onnx.ModelProto) -> bool:
    return all(i.domain in ("", "ai.onnx") for i in model.opset_import) and all(
        n.domain in ("", "ai.onnx") for n in model.graph.node
    )


def _collect(modules: Sequence[str] | None) -> list:
    """ONNX's node test cases: all of them, or those the named modules of
    ``onnx.backend.test.case.node`` declare (much quicker: building all takes seconds)."""
    from onnx.backend.test.case import node

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if modules is None:
            return node.collect_testcases()
        # importing a module declares its cases (each ``expect`` call appends one)
        for module in modules:
            importlib.import_module(f"{node.__name__}.{module}")
        return list(node._NodeTestCases)


def tensor_cases(modules: Sequence[str] | None = None) -> Iterator[NodeCase]:
    """The node test cases in the default domain whose inputs and outputs are numeric
    tensors, declared and given; one :class:`NodeCase` per data set."""
    for case in _collect(modules):
        model = case.model
        if model is None or not _default_domain_only(model):
            continue
        declared = [*model.graph.input, *model.graph.output]
        if not all(v.type.HasField("tensor_type") for v in declared):
            continue
        for inputs, outputs in case.data_sets or ():
            ins = [_array(x) for x in inputs]
            outs = [_array(x) for x in outputs]
            if not outs or any(a is None or a.dtype.kind not in "fiub" for a in [*ins, *outs]):
                continue
            if len(ins) != len(model.graph.input) or len(outs) != len(model.graph.output):
                continue
            yield NodeCase(case.name, model, tuple(ins), tuple(outs), case.rtol, case.atol)


def mismatch(got: Sequence[np.ndarray], case: NodeCase) -> str:
    """Why ``got`` does not reproduce the case's outputs (empty if it does)."""
    if len(got) != len(case.outputs):
        return f"{len(got)} outputs, expected {len(case.outputs)}"
    for i, (g, want) in enumerate(zip(got, case.outputs, strict=True)):
        g = np.asarray(g)
        if g.shape != want.shape:
            return f"output {i} has shape {g.shape}, expected {want.shape}"
        if g.dtype != want.dtype:
            return f"output {i} has dtype {g.dtype}, expected {want.dtype}"
        try:
            np.testing.assert_allclose(g, want, rtol=case.rtol, atol=case.atol)
        except AssertionError:
            diff = np.abs(g.astype(np.float64) - want.astype(np.float64))
            worst = np.nanmax(diff) if diff.size and not np.isnan(diff).all() else np.nan
            return f"output {i} differs (max abs error {worst:.3g})"
    return ""


def run_onnxruntime(case: NodeCase) -> str:
    """Why onnxruntime does not reproduce the case (empty if it does)."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    opts.intra_op_num_threads = 1
    try:
        sess = ort.InferenceSession(
            case.model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
        got = sess.run(None, case.feeds())
    except Exception as exc:  # onnxruntime raises its own untyped errors
        return f"onnxruntime: {_one_line(exc)}"
    return mismatch(got, case)


def reproduced_cases(modules: Sequence[str] | None = None) -> list[NodeCase]:
    """The tensor cases onnxruntime reproduces, sorted by name."""
    cases = (c for c in tensor_cases(modules) if not run_onnxruntime(c))
    return sorted(cases, key=lambda c: c.name)


def _one_line(exc: BaseException) -> str:
    from anacc.compiler.onnx_file import one_line

    return one_line(exc)


def _model_file(case: NodeCase, folder: Path) -> Path:
    path = folder / f"{case.name}.onnx"
    onnx.save(case.model, path)
    return path


def torch_form_missing(program) -> list[str]:
    """The ops of ``program``'s digital steps without a torch form, sorted."""
    from anacc.compiler.ops import lookup

    return sorted({n.op for n in program.digital_nodes if lookup(n.op, n.domain).torch is None})


def check_case(case: NodeCase, folder: Path) -> tuple[Outcome, Outcome | None, list[str]]:
    """The case through anacc, and through the torch path unless a digital op of the program
    lacks a torch form (then None, and those ops)."""
    from anacc.runtime.backends import get_backend
    from anacc.runtime.digital import TorchRegions
    from anacc.runtime.session import InferenceInterpreter

    import anacc
    from anacc.errors import AnaccError

    path = _model_file(case, folder)
    try:
        program = anacc.compile(path)
        outputs = anacc.Session(program, "ideal").run(case.feeds())
    except AnaccError as exc:
        return Outcome(case.name, _one_line(exc).replace(str(path), "the model")), None, []
    names = [o.name for o in case.model.graph.output]
    refused = Outcome(case.name, mismatch([outputs[n] for n in names], case))
    missing = torch_form_missing(program)
    if missing:
        return refused, None, missing
    backend = get_backend("ideal", program.chip, program.profile)
    interp = InferenceInterpreter(program, backend, TorchRegions(program))  # type: ignore[arg-type]
    feeds = {k: torch.from_numpy(v.copy()) for k, v in case.feeds().items()}
    try:
        with torch.no_grad():
            got = interp.run(feeds)
    except Exception as exc:  # a torch form that fails on valid input is a bug to list
        return refused, Outcome(case.name, f"{type(exc).__name__}: {_one_line(exc)}"), []
    return refused, Outcome(case.name, mismatch([got[n].numpy() for n in names], case)), []


def run_torch_nodes(case: NodeCase, folder: Path) -> Outcome | None:
    """The case's nodes one by one through their torch forms, on the model anacc reads
    (converted to opset 21 where ONNX can); None when anacc does not read the model or a
    node has no torch form."""
    from anacc.compiler.onnx_file import load_onnx
    from anacc.compiler.onnx_nodes import ir_node
    from anacc.compiler.ops import lookup, run_torch

    from anacc.errors import AnaccError

    try:
        model = load_onnx(_model_file(case, folder))
    except AnaccError:
        return None
    nodes = [ir_node(p, p.name or f"{p.op_type}_{i}") for i, p in enumerate(model.graph.node)]
    if any(lookup(n.op, n.domain).torch is None for n in nodes):
        return None
    opsets = {"" if i.domain == "ai.onnx" else i.domain: int(i.version) for i in model.opset_import}
    env = {k: torch.from_numpy(v.copy()) for k, v in case.feeds().items()}
    try:
        with torch.no_grad():
            for node in nodes:
                args = [env[t] if t else None for t in node.inputs]
                outs = run_torch(node, opsets[node.domain], args)
                env.update((t, v) for t, v in zip(node.outputs, outs, strict=False) if t)
        got = [env[o.name].numpy() for o in model.graph.output]
    except Exception as exc:  # a torch form that fails on valid input is a bug to list
        return Outcome(case.name, f"{type(exc).__name__}: {_one_line(exc)}")
    return Outcome(case.name, mismatch(got, case))


def run_suite(cases: Sequence[NodeCase], folder: Path, *, nodes: bool = True) -> SuiteRun:
    """Every kept case of ``cases`` (all reproduced by onnxruntime) through anacc and the
    torch path, and (with ``nodes``) every case node by node."""
    kept = [c for c in cases if c.float32]
    anacc_out, torch_out, gaps = [], [], Counter()
    for case in kept:
        refused, torch_path, missing = check_case(case, folder)
        anacc_out.append(refused)
        if torch_path is not None:
            torch_out.append(torch_path)
        gaps.update(missing)
    node_out = [o for c in cases if nodes for o in [run_torch_nodes(c, folder)] if o is not None]
    return SuiteRun(
        len(kept), len(cases), tuple(anacc_out), tuple(torch_out), tuple(node_out), dict(gaps)
    )


# -- the lists in docs/ops.md -----------------------------------------------------------------
def documented(text: str, markers: tuple[str, str] = REFUSED) -> dict[str, str]:
    """The cases (and their reasons) listed between ``markers`` in ``text``."""
    start, stop = text.index(markers[0]), text.index(markers[1])
    found = {}
    for line in text[start:stop].splitlines():
        m = _ENTRY.match(line)
        if m:
            found[m.group("name")] = m.group("reason") or ""
    return found


def _shorten(reason: str) -> str:
    reason = reason.replace("`", "'")
    return reason if len(reason) <= _REASON_CHARS else reason[: _REASON_CHARS - 3] + "..."


def render_refused(outcomes: Iterable[Outcome]) -> str:
    lines = [f"- `{o.name}`: {_shorten(o.reason)}" for o in sorted(outcomes, key=lambda o: o.name)]
    return "\n".join(lines or ["(none)"])


def render_torch_gaps(run: SuiteRun) -> str:
    lines = ["| op without a torch form | kept cases it keeps off the torch path |", "|---|---|"]
    lines += [f"| {op} | {n} |" for op, n in sorted(run.torch_gaps.items(), key=lambda x: -x[1])]
    failing = [o for o in run.torch if not o.ok]
    lines += ["", "Cases whose torch forms all exist but do not reproduce the outputs:", ""]
    lines += [render_refused(failing)]
    return "\n".join(lines)


def torch_forms_text() -> str:
    """The paragraph of docs/ops.md that lists the ops with a torch form."""
    from anacc.compiler.ops import torch_ops

    names = torch_ops()
    return f"{len(names)} ops: " + ", ".join(names) + "."


def between(text: str, markers: tuple[str, str]) -> str:
    """What ``text`` holds between ``markers``, without the surrounding blank space."""
    return text[text.index(markers[0]) + len(markers[0]) : text.index(markers[1])].strip()


def _replace(text: str, markers: tuple[str, str], body: str) -> str:
    start, stop = text.index(markers[0]) + len(markers[0]), text.index(markers[1])
    return text[:start] + "\n" + body.strip("\n") + "\n" + text[stop:]


def write_docs(run: SuiteRun, path: Path = OPS_DOC) -> None:
    text = path.read_text()
    text = _replace(text, COUNTS, "\n".join(f"- {line}" for line in run.summary()))
    text = _replace(text, REFUSED, render_refused(o for o in run.anacc if not o.ok))
    text = _replace(text, TORCH_GAPS, render_torch_gaps(run))
    text = _replace(text, TORCH_FORMS, textwrap.fill(torch_forms_text(), width=_DOC_WIDTH))
    path.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the lists in docs/ops.md")
    parser.add_argument("-k", metavar="TEXT", help="only the cases whose name contains TEXT")
    parser.add_argument("-v", action="store_true", help="print every case that fails a path")
    args = parser.parse_args(argv)
    if args.write and args.k:
        parser.error("--write needs the whole suite; leave out -k")
    t0 = time.perf_counter()
    cases = [c for c in reproduced_cases() if not args.k or args.k in c.name]
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run = run_suite(cases, Path(tmp))
    t2 = time.perf_counter()
    print("\n".join(run.summary()))
    print(f"time: collecting {t1 - t0:.1f} s, running {t2 - t1:.1f} s")
    if args.v:
        for path, outcomes in (("anacc", run.anacc), ("torch", run.torch), ("nodes", run.nodes)):
            for o in outcomes:
                if not o.ok:
                    print(f"{path} {o.name}: {o.reason}")
    if args.write:
        write_docs(run)
        print(f"wrote {OPS_DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Model inference: the ``anacc run`` path against onnxruntime FP32 and torch FP32.

For each bundled model and a ResNet-18-sized graph (random weights, ``3 x 32 x 32`` input,
see :data:`RESNET_IMAGE`), at each batch size: ``run_program`` on the compiled program with
one emulator instance (built once, as an onnxruntime session is), ``InferenceSession.run``,
and the torch module with the same weights under ``inference_mode``, all on the same batch
(the test split repeated to the batch size; random normal images for the ResNet). Times are
interleaved medians (see ``_common.interleaved``); ratios are to onnxruntime. Memory is
measured per runtime and batch in a fresh subprocess (``probe.py infer``; the three runtimes'
probes run at the same time, after the timings): ``peak_mb`` is the peak RSS above the
interpreter with every library imported (the loaded model, runtime state, data and run),
``run_mb`` the part the batch's run adds to what is already resident.

    python benchmarks/bench_inference.py [--quick] [--reps 5] [--threads T] [--out FILE]
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _common import (
    BUNDLED,
    bundled,
    bundled_torch,
    fmt_table,
    interleaved,
    median_ratio,
    ort_session,
    probes,
    script_main,
    tile_rows,
    torch_twin,
)
from anacc.runtime.backends import get_backend
from anacc.runtime.session import run_program

import anacc

FULL_BATCHES = (1, 64, 1024)
QUICK_BATCHES = (1, 64)
RESNET_IMAGE = 32  # 3 x 32 x 32 keeps the batch-1024 runs within the suite's time budget
RESNET_CALIB = 64
RUNTIMES = ("ort", "torch", "emulator")


@dataclass
class Case:
    name: str
    onnx: Path
    program: anacc.Program
    program_path: Path
    arch: str
    data: str  # an .npz path or random:CxHxW (for probe.py)
    inputs: np.ndarray
    module: torch.nn.Module


def bundled_case(name: str, tmp: Path) -> Case:
    model = bundled(name)
    program = anacc.compile(model.onnx, calib=model.data("calib"))
    path = program.save(tmp / f"{name}.anacc")
    data = model.onnx.parent / "data" / f"{model.dataset}_test.npz"
    return Case(
        name,
        model.onnx,
        program,
        path,
        f"bundled:{name}",
        str(data),
        model.data("test")["input"],
        bundled_torch(model),
    )


def resnet_case(tmp: Path) -> Case:
    import netgen

    shape = (3, RESNET_IMAGE, RESNET_IMAGE)
    onnx_path = netgen.export(netgen.resnet18(seed=0), shape, tmp / "resnet18.onnx")
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((RESNET_CALIB, *shape), dtype=np.float32)
    program = anacc.compile(onnx_path, calib={"input": calib})
    path = program.save(tmp / "resnet18.anacc")
    inputs = rng.standard_normal((64, *shape), dtype=np.float32)
    module = torch_twin(onnx_path, netgen.ResNet18())
    data = "random:" + "x".join(map(str, shape))
    return Case("resnet18", onnx_path, program, path, "resnet18", data, inputs, module)


def bench_case(case: Case, batch: int, reps: int, memory: bool) -> dict[str, object]:
    x = tile_rows(case.inputs, batch)
    xt = torch.from_numpy(x)
    sess = ort_session(case.onnx)
    backend = get_backend("emulator", case.program.chip, case.program.profile, seed=0)
    feeds = {"input": x}

    def run_torch() -> object:
        with torch.inference_mode():
            return case.module(xt)

    fns = {
        "ort": lambda: sess.run(None, feeds),
        "torch": run_torch,
        "emulator": lambda: run_program(case.program, feeds, backend=backend, batch_size=batch),
    }
    r = interleaved(fns, "ort", reps)
    row: dict[str, object] = {
        "model": case.name,
        "batch": batch,
        "ms": {k: 1e3 * v["seconds"] for k, v in r.items()},
        "emulator_vs_ort": r["emulator"]["ratio"],
        "torch_vs_ort": r["torch"]["ratio"],
        "emulator_vs_torch": median_ratio(r["emulator"]["times"], r["torch"]["times"]),
    }
    if memory:
        common = ["--onnx", str(case.onnx), "--program", str(case.program_path)]
        common += ["--arch", case.arch, "--data", case.data, "--batch", str(batch)]
        common += ["--threads", str(torch.get_num_threads())]
        reports = probes([["infer", "--runtime", rt, *common] for rt in RUNTIMES])
        row["peak_mb"] = {rt: rep["total_mb"] for rt, rep in zip(RUNTIMES, reports, strict=True)}
        row["run_mb"] = {rt: rep["delta_mb"] for rt, rep in zip(RUNTIMES, reports, strict=True)}
    return row


def run(quick: bool, reps: int, memory: bool = True) -> dict[str, object]:
    """The inference table: one row per model and batch size."""
    names = [BUNDLED[0].name] if quick else [b.name for b in BUNDLED]
    batches = QUICK_BATCHES if quick else FULL_BATCHES
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        cases = [bundled_case(n, tmp) for n in names]
        if not quick:
            cases.append(resnet_case(tmp))
        for case in cases:
            for batch in batches:
                # memory once per model in the quick run: a subprocess per probe is slow
                mem = memory and (not quick or batch == batches[-1])
                rows.append(bench_case(case, batch, reps, mem))
    return {
        "resnet_input": [3, RESNET_IMAGE, RESNET_IMAGE],
        "reps": reps,
        "rows": rows,
        "seconds": time.perf_counter() - t0,
    }


def table(result: dict[str, object]) -> str:
    header = [
        "model",
        "batch",
        "ort ms",
        "torch/ort",
        "emulator/ort",
        "emulator/torch",
        "peak MB ort",
        "torch",
        "emulator",
    ]
    rows = []
    for r in result["rows"]:
        peak = r.get("peak_mb", {})
        rows.append(
            [
                r["model"],
                r["batch"],
                r["ms"]["ort"],
                r["torch_vs_ort"],
                r["emulator_vs_ort"],
                r["emulator_vs_torch"],
                *(peak.get(k, "-") for k in RUNTIMES),
            ]
        )
    return fmt_table(header, rows)


def main() -> None:
    script_main(__doc__, run, table, reps=5, memory_flag=True)


if __name__ == "__main__":
    main()

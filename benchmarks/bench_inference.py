"""Model inference on the path users call, against onnxruntime FP32, torch FP32 and the floor.

For each bundled model and a ResNet-18-sized graph (random weights, ``3 x 32 x 32`` input,
see :data:`RESNET_IMAGE`), at each batch size and thread count, interleaved on the same batch
(the test split repeated to the batch size; random normal images for the ResNet):

- ``ort``: ``InferenceSession.run`` on the ONNX file;
- ``torch``: the torch module with the same weights under ``inference_mode`` (where the
  benchmarks have one);
- ``session``: ``anacc.Session(program, backend="emulator", seed=0).run(feeds)``, the session
  built once (as an onnxruntime session is);
- ``program.run``: ``program.run(feeds)``, which keeps a session per backend and seed and
  restarts its noise on every call;
- the floor of an emulated forward: onnxruntime's time plus drawing the standard normals the
  chip's noise needs (one per output of every analog run: ``draws``), with the emulator's
  generator (``NormalSource``); ``randn ms`` is the same draws with ``torch.randn``.

Program compilation and loading are excluded everywhere. ``anacc run`` end to end (one
thread, the largest batch) is a fresh ``anacc run --json`` process: ``cli s`` is the run as
the command reports it (program and data load excluded), ``cli wall s`` the whole process.
Times are interleaved medians (``_common.interleaved``), ratios are to onnxruntime. Memory
(the largest batch, one thread) is measured per runtime in a fresh subprocess (``probe.py
infer``): ``peak_mb`` is the peak RSS above the interpreter with every library imported.

    python benchmarks/bench_inference.py [--quick] [--reps 5] [--threads T] [--out FILE]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _common import (
    MODELS,
    fmt_table,
    interleaved,
    median_ratio,
    ort_session,
    probes,
    script_main,
    set_threads,
    tile_rows,
    torch_twin,
)
from anacc.runtime.backends.noise import NormalSource
from anacc.runtime.report import vectors_per_sample

import anacc

FULL_BATCHES = (1, 64, 1024)
QUICK_BATCHES = (1, 64)
THREADS = (1, 2)
RESNET_IMAGE = 32  # 3 x 32 x 32 keeps the batch-1024 runs within the suite's time budget
RESNET_CALIB = 64
RUNTIMES = ("ort", "torch", "emulator")
# name, data set, training script with build_model() (None: no torch twin here)
MODELS_RUN = (
    ("digits_mlp", "digits", "train_digits_mlp"),
    ("digits_cnn", "digits_img", "train_digits_cnn"),
    ("mnist1d_mlp", "mnist1d", "train_mnist1d_mlp"),
    ("bss2_mnist", "mnist", "train_bss2_mnist"),
    ("kws_lstm", "kws", "train_kws_lstm"),
)
DRAW_BLOCK = 2**20


@dataclass
class Case:
    name: str
    onnx: Path
    program: anacc.Program
    program_path: Path
    arch: str
    data: str  # an .npz path or random:CxHxW (for probe.py)
    inputs: np.ndarray
    module: torch.nn.Module | None


def split(dataset: str, name: str) -> dict[str, np.ndarray]:
    with np.load(MODELS / "data" / f"{dataset}_{name}.npz") as d:
        return {k: d[k] for k in d.files}


def bundled_case(name: str, dataset: str, script: str | None, tmp: Path) -> Case:
    onnx = MODELS / f"{name}.onnx"
    program = anacc.compile(onnx, calib=split(dataset, "calib"))
    path = program.save(tmp / f"{name}.anacc")
    module = None
    if script is not None:
        if str(MODELS.parent) not in sys.path:
            sys.path.insert(0, str(MODELS.parent))
        module = torch_twin(onnx, __import__(f"models.{script}", fromlist=["x"]).build_model())
    data = MODELS / "data" / f"{dataset}_test.npz"
    arch = f"bundled:{name}" if script is not None else f"onnx:{name}"
    return Case(name, onnx, program, path, arch, str(data), split(dataset, "test")["input"], module)


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


def draws_per_sample(program: anacc.Program) -> int:
    """Standard normals one sample's emulated forward needs: one per output of every run
    (input vectors x row chunks x columns, twice for a split layer)."""
    vectors = vectors_per_sample(program)
    total = 0
    for name, layer in program.layers.items():
        parts = 2 if layer.signed == "split" else 1
        runs = len(layer.analog.row_chunks)
        total += vectors[name] * runs * layer.analog.out_features * parts
    return total


def draw_seconds(count: int, reps: int) -> dict[str, float]:
    """Median seconds to draw ``count`` standard normals in blocks, with the emulator's
    generator and with ``torch.randn``."""
    source = NormalSource()
    block = torch.empty(min(count, DRAW_BLOCK))
    generator = torch.Generator().manual_seed(0)

    def fast() -> None:
        for first in range(0, count, DRAW_BLOCK):
            source.fill(block[: min(DRAW_BLOCK, count - first)], first)

    def randn() -> None:
        for first in range(0, count, DRAW_BLOCK):
            torch.randn(min(DRAW_BLOCK, count - first), generator=generator, out=block[:1])

    r = interleaved({"fast": fast, "randn": randn}, "fast", reps)
    return {k: v["seconds"] for k, v in r.items()}


def bench_case(case: Case, batch: int, reps: int) -> dict[str, object]:
    x = tile_rows(case.inputs, batch)
    sess = ort_session(case.onnx)
    session = anacc.Session(case.program, backend="emulator", seed=0)
    feeds = {"input": x}
    fns = {
        "ort": lambda: sess.run(None, feeds),
        "session": lambda: session.run(feeds),
        "program.run": lambda: case.program.run(feeds),
    }
    if case.module is not None:
        xt = torch.from_numpy(x)

        def run_torch() -> object:
            with torch.inference_mode():
                return case.module(xt)

        fns["torch"] = run_torch
    r = interleaved(fns, "ort", reps)
    draws = draws_per_sample(case.program) * batch
    drawn = draw_seconds(draws, reps)
    ort_s = r["ort"]["seconds"]
    floor_s = ort_s + drawn["fast"]
    row: dict[str, object] = {
        "model": case.name,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "ms": {k: 1e3 * v["seconds"] for k, v in r.items()},
        "draws": draws,
        "draw_ms": 1e3 * drawn["fast"],
        "randn_ms": 1e3 * drawn["randn"],
        "floor_ms": 1e3 * floor_s,
        "emulator_vs_ort": r["session"]["ratio"],
        "program_run_vs_ort": r["program.run"]["ratio"],
        "emulator_vs_floor": r["session"]["seconds"] / floor_s,
        "torch_vs_ort": r["torch"]["ratio"] if "torch" in r else None,
        "emulator_vs_torch": (
            median_ratio(r["session"]["times"], r["torch"]["times"]) if "torch" in r else None
        ),
    }
    return row


def cli_run(case: Case, batch: int, tmp: Path) -> dict[str, float]:
    """``anacc run --json`` in a fresh process on ``batch`` samples: the run as reported and
    the whole process's wall time."""
    data = tmp / f"{case.name}_{batch}.npz"
    np.savez(data, input=tile_rows(case.inputs, batch))
    anacc_cli = Path(sys.executable).with_name("anacc")
    cmd = [str(anacc_cli), "run", str(case.program_path), "--data", str(data)]
    cmd += ["--batch-size", str(batch), "--json"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
    wall = time.perf_counter() - t0
    report = json.loads(out.stdout.strip().splitlines()[-1])
    return {"cli_s": report["seconds"], "cli_wall_s": wall}


def memory_row(case: Case, batch: int) -> dict[str, dict[str, float]]:
    common = ["--onnx", str(case.onnx), "--program", str(case.program_path)]
    common += ["--arch", case.arch, "--data", case.data, "--batch", str(batch), "--threads", "1"]
    runtimes = [rt for rt in RUNTIMES if rt != "torch" or case.module is not None]
    reports = probes([["infer", "--runtime", rt, *common] for rt in runtimes])
    return {
        "peak_mb": {rt: rep["total_mb"] for rt, rep in zip(runtimes, reports, strict=True)},
        "run_mb": {rt: rep["delta_mb"] for rt, rep in zip(runtimes, reports, strict=True)},
    }


def run(
    quick: bool, reps: int, memory: bool = True, threads: tuple[int, ...] = THREADS
) -> dict[str, object]:
    """The inference table: one row per model, batch size and thread count."""
    chosen = MODELS_RUN[:1] if quick else MODELS_RUN
    batches = QUICK_BATCHES if quick else FULL_BATCHES
    thread_counts = threads[:1] if quick else threads
    rows = []
    before = torch.get_num_threads()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        cases = [bundled_case(n, d, s, tmp) for n, d, s in chosen]
        if not quick:
            cases.append(resnet_case(tmp))
        for case in cases:
            for count in thread_counts:
                set_threads(count)
                for batch in batches:
                    rows.append(bench_case(case, batch, reps))
            set_threads(before)
            last = rows[-1] if len(thread_counts) == 1 else rows[-1 - len(batches)]
            last.update(cli_run(case, batches[-1], tmp))
            if memory:
                last.update(memory_row(case, batches[-1]))
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
        "threads",
        "ort ms",
        "torch/ort",
        "session/ort",
        "program.run/ort",
        "floor ms",
        "session/floor",
        "draws",
        "draw ms",
        "randn ms",
        "cli s",
        "peak MB ort",
        "emulator",
    ]
    rows = []
    for r in result["rows"]:
        peak = r.get("peak_mb", {})
        rows.append(
            [
                r["model"],
                r["batch"],
                r["threads"],
                r["ms"]["ort"],
                "-" if r["torch_vs_ort"] is None else r["torch_vs_ort"],
                r["emulator_vs_ort"],
                r["program_run_vs_ort"],
                r["floor_ms"],
                r["emulator_vs_floor"],
                f"{r['draws']:,}",
                r["draw_ms"],
                r["randn_ms"],
                r.get("cli_s", "-"),
                peak.get("ort", "-"),
                peak.get("emulator", "-"),
            ]
        )
    return fmt_table(header, rows)


def main() -> None:
    script_main(__doc__, run, table, reps=5, memory_flag=True)


if __name__ == "__main__":
    main()

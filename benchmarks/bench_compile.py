"""Compile time and peak memory against model size.

Generated MLPs (256 inputs, four hidden layers of one width) and conv nets (four 3x3 stride-2
convs with BatchNorm on a 3 x 16 x 16 input, then a linear layer) from 10 k to 25 M
parameters (``netgen``), each compiled with :data:`CALIB_SAMPLES` calibration samples
(uniform in 0..1) in a fresh subprocess (``probe.py compile``): the seconds of
``compile_model`` and of saving the program, and the peak RSS above the interpreter-and-imports
baseline, against the size of the float32 weights. The growth column is the exponent of the
compile time against the parameter count from the next smaller model of the family:
``log(t / t_prev) / log(p / p_prev)``, 1 for linear growth, below 1 while fixed costs dominate.

    python benchmarks/bench_compile.py [--quick] [--threads T] [--out FILE]
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import netgen
import numpy as np
import torch
from _common import fmt_table, probe, script_main

FULL_SIZES = (10_000, 100_000, 1_000_000, 5_000_000, 25_000_000)
QUICK_SIZES = (10_000,)
CALIB_SAMPLES = 256
FAMILIES = {
    "mlp": (netgen.mlp, (256,)),
    "conv": (netgen.convnet, (3, 16, 16)),
}


def bench_model(family: str, size: int, tmp: Path, calib_samples: int) -> dict[str, object]:
    build, shape = FAMILIES[family]
    module = build(size, seed=0)
    onnx_path = netgen.export(module, shape, tmp / f"{family}_{size}.onnx")
    calib = tmp / f"calib_{family}.npz"
    if not calib.exists():
        rng = np.random.default_rng(0)
        np.savez(calib, input=rng.random((calib_samples, *shape), dtype=np.float32))
    params = netgen.parameters(module)
    r = probe(
        [
            "compile",
            "--onnx",
            str(onnx_path),
            "--calib",
            str(calib),
            "--threads",
            str(torch.get_num_threads()),
        ]
    )
    onnx_path.unlink()
    weights_mb = 4 * params / 2**20
    return {
        "family": family,
        "params": params,
        "weights_mb": weights_mb,
        "baseline_mb": r["baseline_mb"],
        "compile_s": r["compile_s"],
        "save_s": r["save_s"],
        "compile_mb": r["compile_mb"],
        "total_mb": r["total_mb"],
        "compile_mb_per_weight_mb": r["compile_mb"] / weights_mb,
        "total_mb_per_weight_mb": r["total_mb"] / weights_mb,
    }


def run(quick: bool) -> dict[str, object]:
    """The compile table: one row per generated model."""
    sizes = QUICK_SIZES if quick else FULL_SIZES
    samples = 32 if quick else CALIB_SAMPLES
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_dir:
        for family in FAMILIES:
            previous = None
            for size in sizes:
                row = bench_model(family, size, Path(tmp_dir), samples)
                row["growth"] = None
                if previous is not None:
                    row["growth"] = math.log(row["compile_s"] / previous["compile_s"]) / math.log(
                        row["params"] / previous["params"]
                    )
                rows.append(row)
                previous = row
    return {"calib_samples": samples, "rows": rows, "seconds": time.perf_counter() - t0}


def table(result: dict[str, object]) -> str:
    header = [
        "model",
        "params",
        "weights MB",
        "compile s",
        "save s",
        "growth",
        "peak MB compile",
        "x weights",
        "peak MB +save",
        "x weights",
    ]
    rows = [
        [
            r["family"],
            f"{r['params']:,}",
            r["weights_mb"],
            r["compile_s"],
            r["save_s"],
            "-" if r["growth"] is None else r["growth"],
            r["compile_mb"],
            r["compile_mb_per_weight_mb"],
            r["total_mb"],
            r["total_mb_per_weight_mb"],
        ]
        for r in result["rows"]
    ]
    return fmt_table(header, rows)


def main() -> None:
    script_main(__doc__, run, table)


if __name__ == "__main__":
    main()

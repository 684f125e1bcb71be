"""Run every benchmark table, print them with the machine they ran on, write one JSON file.

Tables (each module's docstring says exactly what it measures):

- ``layer``: one analog layer on each backend against a torch float32 matmul (bench_layer)
- ``inference``: the user's path (``Session.run``, ``program.run``, ``anacc run``) against
  onnxruntime and torch FP32 and the floor, at one and two threads (bench_inference)
- ``zoo``: the nine real architectures of ``models/zoo`` against onnxruntime (bench_zoo)
- ``compile``: compile time and peak memory against model size (bench_compile)
- ``finetune``: one fine-tuning epoch against one torch FP32 epoch (bench_finetune)
- ``accuracy``: test accuracy per backend, profile and fine-tuning (bench_accuracy)
- ``mapping``: runs, loads, utilization, time and energy per sample, naive against the time
  placement, with the emulator's accuracy (bench_mapping)

Every time is a median over repetitions after a warm-up, stated as a ratio to a reference
measured in the same process run. Everything runs on one thread by default (torch, the
emulator and onnxruntime alike): per-core ratios that a busy or shared machine distorts
least; the inference and zoo tables also run at two threads (onnxruntime sessions without
busy-waiting workers, see ``_common.ort_session``); ``--threads N`` measures with N.
``--quick`` runs a tiny configuration of every table (for the test suite: seconds, and the
same JSON keys).

    python benchmarks/run_all.py [--quick] [--threads T] [--only layer,compile] \
        [--out benchmarks/results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import bench_accuracy
import bench_compile
import bench_finetune
import bench_inference
import bench_layer
import bench_mapping
import bench_zoo
from _common import machine_info, set_threads

TITLES = {
    "layer": "Layer: analog layer time / torch float32 matmul time (same shape)",
    "inference": "Model inference: the emulator on the user's path vs onnxruntime FP32, torch "
    "FP32 and the floor",
    "zoo": "Real architectures: the emulator vs onnxruntime FP32 (image models at 64 x 64)",
    "compile": "Compile: time and peak RSS above the import baseline against model size",
    "finetune": "Fine-tuning: one epoch of finetune (emulator) vs one torch FP32 epoch",
    "accuracy": "Accuracy on the test split",
    "mapping": "Mapping: anacc 0.1's naive placement vs the time placement, one chip",
}


def tables(quick: bool) -> dict[str, tuple[Callable[[], dict], Callable[[dict], str]]]:
    return {
        "layer": (lambda: bench_layer.run(quick, 2 if quick else 7), bench_layer.table),
        "inference": (
            lambda: bench_inference.run(quick, 3 if quick else 5),
            bench_inference.table,
        ),
        "zoo": (lambda: bench_zoo.run(quick, 2 if quick else 3), bench_zoo.table),
        "compile": (lambda: bench_compile.run(quick), bench_compile.table),
        "finetune": (lambda: bench_finetune.run(quick, 1 if quick else 3), bench_finetune.table),
        "accuracy": (lambda: bench_accuracy.run(quick), bench_accuracy.table),
        "mapping": (lambda: bench_mapping.run(quick), bench_mapping.table),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny configuration of every table")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help=f"torch and onnxruntime threads (default 1; this machine has {os.cpu_count()} cores)",
    )
    parser.add_argument("--only", help="comma-separated table names (default: all)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results.json"))
    args = parser.parse_args()
    set_threads(args.threads)
    available = tables(args.quick)
    names = args.only.split(",") if args.only else list(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        parser.error(f"unknown table(s) {', '.join(unknown)}; choose from {', '.join(available)}")

    info = machine_info()
    command = " ".join(["python", "benchmarks/run_all.py", *sys.argv[1:]])
    print(f"command: {command}")
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    start = time.perf_counter()
    results: dict[str, dict] = {}
    for name in names:
        measure, render = available[name]
        results[name] = measure()
        print(f"\n### {TITLES[name]} ({results[name]['seconds']:.0f} s)\n", flush=True)
        print(render(results[name]), flush=True)
    total = time.perf_counter() - start
    print(f"\ntotal {total:.0f} s")
    report = {
        "command": command,
        "quick": args.quick,
        "machine": info,
        "seconds": total,
        "tables": results,
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

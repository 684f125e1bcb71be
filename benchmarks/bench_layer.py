"""Speed of one analog layer on each backend, relative to a plain torch float32 matmul.

For each layer shape (in x out) and batch size, one :class:`AnalogLayer` cut into chip tiles
(``grid_layer``) runs through ``emulator.mac``, ``quantized.mac`` and ``ideal.linear``; the
reference is ``x @ w`` in float32 of the same shape. Repetitions are interleaved (reference,
emulator, quantized, ideal, again) so a slow phase of the machine hits all of them alike; the
table shows median times and the median of the per-repetition ratios. Small cases time a loop
of calls so that each timing spans at least about 10 ms.

Data: inputs uniform in 0..input_max, weights normal with 3 sigma = weight_max, rounded and
clipped (the vendor's He-style initialization). Typical loads, so the emulator's exact
dynamic-saturation path and its dense soft-saturation path are rarely taken.

    python benchmarks/bench_layer.py [--quick] [--reps 7] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from anacc.compiler.chip import load_chip
from anacc.runtime.backends import get_backend
from anacc.runtime.characterize import grid_layer

FULL_SHAPES = ((128, 256), (1024, 1024), (4096, 4096))
FULL_BATCHES = (64, 1024)
QUICK_SHAPES = ((128, 256), (300, 520))
QUICK_BATCHES = (16,)


def _seconds(fn: Callable[[], object], calls: int = 1) -> float:
    """Mean seconds per call over ``calls`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def bench_case(
    n_in: int, n_out: int, batch: int, reps: int, chip_name: str = "bss2"
) -> dict[str, object]:
    chip = load_chip(chip_name)
    rng = np.random.default_rng(0)
    sigma = chip.weight_max / 3
    weight_q = np.clip(
        np.round(rng.normal(0, sigma, (n_in, n_out))), -chip.weight_max, chip.weight_max
    )
    layer = grid_layer(chip, weight_q, num_sends=1, name=f"{n_in}x{n_out}")
    x_q = torch.from_numpy(rng.integers(0, chip.input_max + 1, (batch, n_in)).astype(np.float32))
    w = torch.from_numpy(weight_q.astype(np.float32))
    backends = {
        name: get_backend(name, chip, "default", seed=0)
        for name in ("emulator", "quantized", "ideal")
    }
    runs: dict[str, Callable[[], object]] = {
        "torch": lambda: x_q @ w,
        "emulator": lambda: backends["emulator"].mac(layer, x_q),
        "quantized": lambda: backends["quantized"].mac(layer, x_q),
        "ideal": lambda: backends["ideal"].linear(layer, x_q),
    }
    for fn in runs.values():  # warm-up: caches, noise bank, allocator
        fn()
        fn()
    # small cases repeat each call so that one timing spans at least ~10 ms
    calls = max(1, min(1000, math.ceil(0.01 / _seconds(runs["torch"], 3))))
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(reps):
        for name, fn in runs.items():
            times[name].append(_seconds(fn, calls))
    ratios = {
        name: statistics.median(t / ref for t, ref in zip(times[name], times["torch"], strict=True))
        for name in runs
        if name != "torch"
    }
    return {
        "shape": [n_in, n_out],
        "batch": batch,
        "tiles": len(layer.tiles),
        "row_chunks": len(layer.row_chunks),
        "median_ms": {name: 1e3 * statistics.median(t) for name, t in times.items()},
        "ratio_to_torch": ratios,
    }


def machine_info() -> dict[str, object]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
    }


def run(quick: bool, reps: int) -> dict[str, object]:
    """The layer table: one row per shape and batch size."""
    shapes, batches = (QUICK_SHAPES, QUICK_BATCHES) if quick else (FULL_SHAPES, FULL_BATCHES)
    start = time.perf_counter()
    results = [bench_case(n_in, n_out, batch, reps) for n_in, n_out in shapes for batch in batches]
    return {"reps": reps, "rows": results, "seconds": time.perf_counter() - start}


def table(result: dict[str, object]) -> str:
    """The rows as a markdown table (``run_all.py`` prints it)."""
    header = "| shape | batch | tiles | torch ms | emulator | quantized | ideal |"
    lines = [header, "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        ratio = r["ratio_to_torch"]
        lines.append(
            f"| {r['shape'][0]}x{r['shape'][1]} | {r['batch']} | {r['tiles']} | "
            f"{r['median_ms']['torch']:.3f} | {ratio['emulator']:.2f} | "
            f"{ratio['quantized']:.2f} | {ratio['ideal']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, a few seconds")
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions per case")
    parser.add_argument("--out", type=Path, help="write the results as JSON to this path")
    args = parser.parse_args()

    shapes, batches = (QUICK_SHAPES, QUICK_BATCHES) if args.quick else (FULL_SHAPES, FULL_BATCHES)
    reps = min(args.reps, 3) if args.quick else args.reps
    info = machine_info()
    print(" ".join(f"{k}={v}" for k, v in info.items()))
    print(
        f"{'shape':>11} {'batch':>6} {'tiles':>6} {'torch ms':>9} "
        f"{'emulator':>9} {'quantized':>10} {'ideal':>7}   (x torch float32 matmul)"
    )
    results = []
    for n_in, n_out in shapes:
        for batch in batches:
            r = bench_case(n_in, n_out, batch, reps)
            results.append(r)
            ratio = r["ratio_to_torch"]
            print(
                f"{f'{n_in}x{n_out}':>11} {batch:>6} {r['tiles']:>6} "
                f"{r['median_ms']['torch']:>9.2f} {ratio['emulator']:>9.2f} "
                f"{ratio['quantized']:>10.2f} {ratio['ideal']:>7.2f}"
            )
    if args.out is not None:
        args.out.write_text(json.dumps({"machine": info, "results": results}, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

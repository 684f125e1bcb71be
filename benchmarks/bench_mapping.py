"""Mapping per model: the placement of anacc 0.1 (``naive``: one tile per half, no copies, no
packing) against the ``time`` placement (copies, both halves per run, layers packed into
loads), on one chip: runs per sample and the chip's lower bound, loads, the share of the
loaded synapses holding weights, chip-only and system time and energy per sample (estimates
from the chip description, all inputs of every run assumed active), and the emulator's test
accuracy (chip instance 0) beside each mapping. Models: the bundled ones with their test
splits, and a ResNet-18-size graph (3 x 32 x 32, random weights, random inputs: no accuracy).
Nothing here is timed; every figure is deterministic.

    python benchmarks/bench_mapping.py [--quick] [--out FILE]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from _common import BUNDLED, bundled, fmt_table, script_main
from anacc.compiler.cost import program_cost
from anacc.runtime.report import vectors_per_sample

import anacc

PLACEMENTS = ("naive", "time")
RESNET_IMAGE = 32


def _row(name: str, placement: str, program: anacc.Program, test: dict | None) -> dict:
    cost = program_cost(program, vectors_per_sample(program))
    row: dict[str, object] = {
        "model": name,
        "placement": placement,
        "runs": cost.runs_per_sample,
        "bound": cost.lower_bound_runs,
        "loads": cost.loads,
        "utilization": cost.utilization,
        "chip_us": cost.time_us_per_sample,
        "chip_uj": cost.energy_uj_per_sample,
        "system_us": cost.system_time_us_per_sample,
        "system_uj": cost.system_energy_uj_per_sample,
        "emulator_accuracy": None,
    }
    if test is not None:
        row["emulator_accuracy"] = program.evaluate(test, backend="emulator", seed=0).accuracy
    return row


def run(quick: bool) -> dict[str, object]:
    t0 = time.perf_counter()
    rows = []
    names = [b.name for b in BUNDLED][: 1 if quick else None]
    for name in names:
        model = bundled(name)
        calib, test = model.data("calib"), model.data("test")
        for placement in PLACEMENTS:
            program = anacc.compile(model.onnx, calib=calib, placement=placement)
            rows.append(_row(name, placement, program, test))
    if not quick:
        import netgen

        with tempfile.TemporaryDirectory() as tmp:
            shape = (3, RESNET_IMAGE, RESNET_IMAGE)
            path = netgen.export(netgen.resnet18(seed=0), shape, Path(tmp) / "resnet18.onnx")
            calib = np.random.default_rng(0).standard_normal((16, *shape), dtype=np.float32)
            for placement in PLACEMENTS:
                program = anacc.compile(path, calib={"input": calib}, placement=placement)
                rows.append(_row("resnet18 (3x32x32)", placement, program, None))
    return {"rows": rows, "seconds": time.perf_counter() - t0}


def table(result: dict) -> str:
    header = [
        "model",
        "placement",
        "runs",
        "bound",
        "loads",
        "util %",
        "chip us",
        "chip uJ",
        "system us",
        "system uJ",
        "emulator acc %",
    ]
    rows = [
        [
            r["model"],
            r["placement"],
            r["runs"],
            r["bound"],
            r["loads"],
            100 * r["utilization"],
            r["chip_us"],
            r["chip_uj"],
            r["system_us"],
            r["system_uj"],
            "n/a" if r["emulator_accuracy"] is None else 100 * r["emulator_accuracy"],
        ]
        for r in result["rows"]
    ]
    return fmt_table(header, rows)


if __name__ == "__main__":
    script_main(__doc__, run, table)

"""The benchmark suite runs end to end: ``benchmarks/run_all.py --quick`` finishes and writes a
JSON report with every table. No timing is asserted; speed is the tables' business."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

ROW_KEYS = {
    "layer": {"shape", "batch", "tiles", "median_ms", "ratio_to_torch"},
    "inference": {
        "model",
        "batch",
        "threads",
        "ms",
        "emulator_vs_ort",
        "program_run_vs_ort",
        "floor_ms",
        "emulator_vs_floor",
        "draws",
        "torch_vs_ort",
        "emulator_vs_torch",
    },
    "zoo": {"model", "batch", "threads", "ort_ms", "emulator_ms", "emulator_vs_ort", "floor_ms"},
    "compile": {
        "family",
        "params",
        "weights_mb",
        "compile_s",
        "save_s",
        "compile_mb",
        "total_mb",
        "growth",
    },
    "finetune": {"model", "torch_s", "finetune_epoch_s", "epoch_vs_torch", "finetune_call_s"},
    "accuracy": {
        "model",
        "fp32",
        "ideal",
        "quantized",
        "emulator_default",
        "emulator_custom",
        "emulator_default_tuned",
        "emulator_custom_tuned",
    },
    "mapping": {"model", "placement", "runs", "bound", "loads", "chip_us", "system_uj"},
}


@pytest.mark.slow
def test_quick_benchmark_run_writes_every_table(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/run_all.py", "--quick", "--threads", "1", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,  # seconds on an idle machine; a shared one can be slower
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["quick"] is True
    for key in ("cpu", "cores", "threads", "torch", "numpy", "onnxruntime"):
        assert key in report["machine"]
    assert set(report["tables"]) == set(ROW_KEYS)
    for name, keys in ROW_KEYS.items():
        rows = report["tables"][name]["rows"]
        assert rows, f"table {name} has no rows"
        for row in rows:
            assert keys <= set(row), f"table {name}: missing {keys - set(row)}"
    inference = report["tables"]["inference"]["rows"]
    measured = [r for r in inference if "peak_mb" in r]
    assert measured and all(set(r["peak_mb"]) == {"ort", "torch", "emulator"} for r in measured)
    for row in report["tables"]["accuracy"]["rows"]:
        assert 0.5 < row["fp32"] <= 1.0  # the bundled models are trained classifiers
    assert proc.stdout.count("### ") == len(ROW_KEYS)  # every table printed

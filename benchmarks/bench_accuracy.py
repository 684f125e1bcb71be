"""Accuracy per bundled model on its test split: FP32 (onnxruntime), the ``ideal`` and
``quantized`` backends, and the emulator with the ``default`` and ``custom`` calibration
profiles, plain (compiled with the calibration split) and after fine-tuning with the emulator
in the loop (:data:`EPOCHS` epochs on the training split with ``FinetuneOptions``' defaults,
the best epoch chosen on the model's validation split, or the calibration split where it has
none; seed 0). Every figure is deterministic for a fixed seed, so there are no repetitions.

    python benchmarks/bench_accuracy.py [--quick] [--threads T] [--out FILE]
"""

from __future__ import annotations

import time

from _common import BUNDLED, MODELS, bundled, fmt_table, ort_session, script_main
from anacc.compiler.datafile import match_inputs
from anacc.passes.finetune import FinetuneOptions, finetune
from anacc.runtime.session import run_program

import anacc

EPOCHS = 5
PROFILES = ("default", "custom")


def accuracy_row(name: str, epochs: int, max_train: int | None) -> dict[str, object]:
    model = bundled(name)
    calib, train, test = (model.data(s) for s in ("calib", "train", "test"))
    has_val = (MODELS / "data" / f"{model.dataset}_val.npz").is_file()
    val = model.data("val") if has_val else calib
    if max_train is not None:
        train = {k: v[:max_train] for k, v in train.items()}
    logits = ort_session(model.onnx).run(None, {"input": test["input"]})[0]
    row: dict[str, object] = {
        "model": name,
        "test_samples": len(test["labels"]),
        "fp32": float((logits.argmax(1) == test["labels"]).mean()),
    }
    opts = FinetuneOptions(epochs=epochs, seed=0)
    for profile in PROFILES:
        program = anacc.compile(model.onnx, calib=calib, profile=profile)
        backends = ("ideal", "quantized", "emulator") if profile == "default" else ("emulator",)
        for backend in backends:
            acc = run_program(program, test, backend=backend, seed=0).accuracy
            row[backend if backend != "emulator" else f"emulator_{profile}"] = acc
        tr = match_inputs(train, program.inputs, "training data")
        va = match_inputs(val, program.inputs, "validation data")
        tuned = finetune(program, tr, va, opts).program
        row[f"emulator_{profile}_tuned"] = run_program(tuned, test, seed=0).accuracy
    return row


def run(quick: bool) -> dict[str, object]:
    """The accuracy table: one row per bundled model."""
    t0 = time.perf_counter()
    names = [BUNDLED[0].name] if quick else [b.name for b in BUNDLED]
    epochs = 1 if quick else EPOCHS
    rows = [accuracy_row(n, epochs, 128 if quick else None) for n in names]
    return {"epochs": epochs, "rows": rows, "seconds": time.perf_counter() - t0}


COLUMNS = (
    ("fp32", "FP32 ort"),
    ("ideal", "ideal"),
    ("quantized", "quantized"),
    ("emulator_default", "emu default"),
    ("emulator_custom", "emu custom"),
    ("emulator_default_tuned", "default tuned"),
    ("emulator_custom_tuned", "custom tuned"),
)


def table(result: dict[str, object]) -> str:
    header = ["model", "test n", *(c[1] for c in COLUMNS)]
    rows = [
        [r["model"], r["test_samples"], *(f"{100 * r[k]:.2f} %" for k, _ in COLUMNS)]
        for r in result["rows"]
    ]
    return fmt_table(header, rows)


def main() -> None:
    script_main(__doc__, run, table)


if __name__ == "__main__":
    main()

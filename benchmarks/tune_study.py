"""Test-split evaluation of an ``anacc tune`` result beside the chip's own profiles.

For ``default``, ``custom`` (the chip's profiles at the default compile options) and the
search's recommendation (``best_chip.toml`` and ``best_options.json`` in the tune folder):
compile with the calibration split, then per emulated chip instance (seed) the plain-transfer
test accuracy, the same on an instance the search never saw (seed + 3), and the test accuracy
after fine-tuning on the training part with the best epoch chosen on the validation slice,
and, for comparison, on the calibration split. docs/tune.md shows the tables.

    python benchmarks/tune_study.py out/tune_mnist1d --train out/mnist1d_train_part.npz \
        --val out/mnist1d_val.npz [--seeds 0 1 2] [--epochs 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "mnist1d_mlp.onnx"
DATA = ROOT / "models" / "data"


def evaluate(tune_dir: Path, train: Path, val: Path, seeds: list[int], epochs: int, log=print):
    from anacc.compiler.datafile import match_inputs
    from anacc.compiler.datafile import read_npz as load
    from anacc.passes.finetune import FinetuneOptions, finetune
    from anacc.runtime.session import run_program

    import anacc

    best = json.loads((tune_dir / "best_options.json").read_text())
    calib = load(DATA / "mnist1d_calib.npz")
    configs = {
        "default": {"profile": "default"},
        "custom": {"profile": "custom"},
        "tuned": {"chip": best["chip"], "profile": best["profile"], **best["options"]},
    }
    result: dict = {"tune_dir": str(tune_dir), "seeds": seeds, "epochs": epochs, "rows": {}}
    for name, config in configs.items():
        program = anacc.compile(MODEL, calib=calib, **config)
        test = match_inputs(load(DATA / "mnist1d_test.npz"), program.inputs, "test")
        tr = match_inputs(load(train), program.inputs, "train")
        picks = {
            "val": match_inputs(load(val), program.inputs, "val"),
            "calib": match_inputs(calib, program.inputs, "calib"),
        }
        rows = []
        for seed in seeds:
            t0 = time.perf_counter()
            row = {
                "seed": seed,
                "plain": run_program(program, test, seed=seed).accuracy,
                "plain_unseen_chip": run_program(program, test, seed=seed + 3).accuracy,
            }
            for pick, data in picks.items():
                opts = FinetuneOptions(epochs=epochs, lr=1e-3, seed=seed)
                res = finetune(program, tr, data, opts)
                row[f"finetuned_{pick}"] = run_program(res.program, test, seed=seed).accuracy
                row[f"best_epoch_{pick}"] = res.best_epoch
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
            log(f"{name} seed {seed}: " + ", ".join(f"{k} {v}" for k, v in row.items()))
        result["rows"][name] = rows
    return result


def table(result: dict) -> str:
    def stat(rows: list[dict], key: str) -> str:
        v = 100 * np.array([r[key] for r in rows])
        return f"{v.mean():.2f} +- {v.std():.2f} %"

    lines = [
        "| profile | plain transfer | after fine-tuning (epoch on val) | plain, unseen chips "
        "| after fine-tuning (epoch on calib) |",
        "|---|---|---|---|---|",
    ]
    for name, rows in result["rows"].items():
        cells = [stat(rows, k) for k in ("plain", "finetuned_val", "plain_unseen_chip")]
        cells.append(stat(rows, "finetuned_calib"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    epochs = {n: [r["best_epoch_val"] for r in rows] for n, rows in result["rows"].items()}
    lines.append("")
    lines.append(f"best epochs (0: none beat the original weights): {epochs}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tune_dir", type=Path)
    ap.add_argument("--train", type=Path, required=True)
    ap.add_argument("--val", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    result = evaluate(
        args.tune_dir,
        args.train,
        args.val,
        args.seeds,
        args.epochs,
        log=lambda s: print(s, file=sys.stderr),
    )
    print(table(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The BSS-2 calibration study's structure on anacc's emulator.

For each chip profile (``default``, ``custom``) and each seed (an emulated chip instance):
compile the model with its calibration split, measure plain-transfer test accuracy on the
emulator, fine-tune with the emulator in the loop (the best epoch chosen on a held-out slice of
the training split), and measure again. Prints a table of mean
and spread over seeds, and FP32 (onnxruntime) accuracy beside it.

    python benchmarks/calibration_study.py                       # mnist1d_mlp, 3 seeds
    python benchmarks/calibration_study.py --model digits_cnn --profiles default
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {"digits_mlp": "digits", "digits_cnn": "digits_img", "mnist1d_mlp": "mnist1d"}


def load(dataset: str, split: str) -> dict[str, np.ndarray]:
    with np.load(ROOT / "models" / "data" / f"{dataset}_{split}.npz") as d:
        return {k: d[k] for k in d.files}


def fp32_accuracy(model: Path, test: dict[str, np.ndarray]) -> float:
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input": test["input"]})[0]
    return float((logits.argmax(1) == test["labels"]).mean())


def study(
    model_name: str, profiles: list[str], seeds: list[int], epochs: int, lr: float, log=print
) -> dict:
    from anacc.compiler.datafile import match_inputs
    from anacc.passes.finetune import FinetuneOptions, finetune
    from anacc.runtime.session import run_program

    import anacc

    dataset = DATASETS[model_name]
    model = ROOT / "models" / f"{model_name}.onnx"
    calib, train, test = (load(dataset, s) for s in ("calib", "train", "test"))
    out: dict = {
        "model": model_name,
        "fp32": fp32_accuracy(model, test),
        "epochs": epochs,
        "lr": lr,
        "seeds": seeds,
        "profiles": {},
    }
    for profile in profiles:
        program = anacc.compile(model, calib=calib, profile=profile)
        # the best epoch is chosen on a held-out slice of the training split, never on test
        n_val = min(1000, len(train["labels"]) // 5)
        tr = match_inputs({k: v[:-n_val] for k, v in train.items()}, program.inputs, "train")
        va = match_inputs({k: v[-n_val:] for k, v in train.items()}, program.inputs, "val")
        te = match_inputs(test, program.inputs, "test")
        rows = []
        for seed in seeds:
            t0 = time.perf_counter()
            plain = run_program(program, te, backend="emulator", seed=seed).accuracy
            res = finetune(program, tr, va, FinetuneOptions(epochs=epochs, lr=lr, seed=seed))
            tuned = run_program(res.program, te, backend="emulator", seed=seed).accuracy
            rows.append(
                {
                    "seed": seed,
                    "plain": plain,
                    "finetuned": tuned,
                    "best_epoch": res.best_epoch,
                    "seconds": time.perf_counter() - t0,
                }
            )
            log(
                f"{model_name} {profile} seed {seed}: plain {100 * plain:.2f} %, "
                f"fine-tuned {100 * tuned:.2f} % ({rows[-1]['seconds']:.0f} s)"
            )
        out["profiles"][profile] = rows
    return out


def table(result: dict) -> str:
    lines = [
        f"{result['model']}: FP32 {100 * result['fp32']:.2f} % (onnxruntime); emulator test "
        f"accuracy over seeds {result['seeds']}, mean +- std; {result['epochs']} fine-tuning "
        "epochs",
        "",
        "| profile | plain transfer | after HW-in-the-loop |",
        "|---|---|---|",
    ]
    for profile, rows in result["profiles"].items():
        p = 100 * np.array([r["plain"] for r in rows])
        f = 100 * np.array([r["finetuned"] for r in rows])
        lines.append(
            f"| {profile} | {p.mean():.2f} +- {p.std():.2f} % | {f.mean():.2f} +- {f.std():.2f} % |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mnist1d_mlp", choices=sorted(DATASETS))
    ap.add_argument("--profiles", nargs="+", default=["default", "custom"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    result = study(
        args.model,
        args.profiles,
        args.seeds,
        args.epochs,
        args.lr,
        log=lambda s: print(s, file=sys.stderr),
    )
    print(table(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The BSS-2 calibration study's structure on anacc's emulator.

For each chip profile (``default``, ``custom``) and each seed (an emulated chip instance):
compile the model with its calibration split, measure plain-transfer test accuracy on the
emulator, fine-tune with the emulator in the loop (the best epoch chosen on validation data,
never on test: the model's ``val`` split where it has one, else a held-out slice of the
training split), and measure again on the same chip. Prints FP32 (onnxruntime), plain and
fine-tuned accuracy (mean and spread over seeds) and the share of the plain-transfer loss that
fine-tuning recovers, ``(tuned - plain) / (FP32 - plain)`` of the means. The fine-tuning
options are ``FinetuneOptions``' defaults unless given (docs/finetune.md).

    python benchmarks/calibration_study.py                       # mnist1d_mlp, seeds 0-2
    python benchmarks/calibration_study.py --model bss2_mnist --profiles default
    python benchmarks/calibration_study.py --sends keep --no-column-gain   # an ablation
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
DATASETS = {
    "digits_mlp": "digits",
    "digits_cnn": "digits_img",
    "mnist1d_mlp": "mnist1d",
    "bss2_mnist": "mnist",
}
HELD_OUT = 1000  # samples of the training split kept for validation without a val split
DEV_SAMPLES, DEV_SEED = 5000, 1234  # --eval dev: fresh MNIST-1D samples (design, not test)


def load(dataset: str, split: str) -> dict[str, np.ndarray] | None:
    path = ROOT / "models" / "data" / f"{dataset}_{split}.npz"
    if not path.is_file():
        return None
    with np.load(path) as d:
        return {k: d[k] for k in d.files}


def fp32_accuracy(model: Path, test: dict[str, np.ndarray]) -> float:
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {"input": test["input"]})[0]
    return float((logits.argmax(1) == test["labels"]).mean())


def mnist1d_dev() -> dict[str, np.ndarray]:
    """Fresh MNIST-1D samples from another generator seed, made as the shipped data was
    (needs the ``models`` extra): where fine-tuning's choices were measured, so that the test
    split stayed unseen until the end."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = DEV_SAMPLES, DEV_SEED
    data = make_dataset(args)
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)
    return {"input": x, "labels": np.concatenate([data["y"], data["y_test"]]).astype(np.int64)}


def splits(dataset: str, evaluate: str) -> tuple[dict, dict, dict, dict, str]:
    """calib, train (for fine-tuning), val (for the epoch), the evaluation data (test, or
    with ``evaluate="dev"`` the MNIST-1D design set), and where val came from."""
    calib, train, val, test = (load(dataset, s) for s in ("calib", "train", "val", "test"))
    if evaluate == "dev":
        if dataset != "mnist1d":
            raise SystemExit("--eval dev: only mnist1d_mlp has a design set")
        test = mnist1d_dev()
    assert calib is not None and train is not None and test is not None
    if val is not None:
        return calib, train, val, test, "val split"
    n = min(HELD_OUT, len(train["labels"]) // 5)
    held = {k: v[-n:] for k, v in train.items()}
    return calib, {k: v[:-n] for k, v in train.items()}, held, test, f"last {n} of train"


def study(
    model_name: str,
    profiles: list[str],
    seeds: list[int],
    options: dict,
    log=print,
    evaluate: str = "test",
) -> dict:
    from anacc.compiler.datafile import match_inputs
    from anacc.passes.finetune import FinetuneOptions, finetune
    from anacc.runtime.session import run_program

    import anacc

    dataset = DATASETS[model_name]
    model = ROOT / "models" / f"{model_name}.onnx"
    calib, train, val, test, val_source = splits(dataset, evaluate)
    base = FinetuneOptions(**options)
    out: dict = {
        "model": model_name,
        "fp32": fp32_accuracy(model, test),
        "options": {k: v for k, v in vars(base).items() if k != "seed"},
        "val": val_source,
        "eval": evaluate,
        "seeds": seeds,
        "profiles": {},
    }
    for profile in profiles:
        program = anacc.compile(model, calib=calib, profile=profile)
        tr = match_inputs(train, program.inputs, "train")
        va = match_inputs(val, program.inputs, "val")
        te = match_inputs(test, program.inputs, "test")
        rows = []
        for seed in seeds:
            t0 = time.perf_counter()
            plain = run_program(program, te, backend="emulator", seed=seed).accuracy
            res = finetune(program, tr, va, FinetuneOptions(**{**options, "seed": seed}))
            tuned = run_program(res.program, te, backend="emulator", seed=seed).accuracy
            rows.append(
                {
                    "seed": seed,
                    "plain": plain,
                    "finetuned": tuned,
                    "best_epoch": res.best_epoch,
                    "epochs": len(res.history),
                    "num_sends": {k: list(v) for k, v in res.num_sends.items()},
                    "seconds": time.perf_counter() - t0,
                }
            )
            log(
                f"{model_name} {profile} seed {seed}: plain {100 * plain:.2f} %, fine-tuned "
                f"{100 * tuned:.2f} % (best epoch {res.best_epoch}, {rows[-1]['seconds']:.0f} s)"
            )
        out["profiles"][profile] = rows
    return out


def recovered(fp32: float, plain: float, tuned: float) -> float:
    """Share of the plain-transfer loss that fine-tuning recovers."""
    return (tuned - plain) / (fp32 - plain) if fp32 > plain else float("nan")


def table(result: dict) -> str:
    fp32 = result["fp32"]
    lines = [
        f"{result['model']}: {result['eval']} accuracy on the emulator over seeds "
        f"{result['seeds']} (mean +- std); {result['options']['epochs']} fine-tuning epochs, "
        f"best epoch on {result['val']}",
        "",
        "| profile | FP32 | plain transfer | after HW-in-the-loop | loss recovered |",
        "|---|---|---|---|---|",
    ]
    for profile, rows in result["profiles"].items():
        p = 100 * np.array([r["plain"] for r in rows])
        f = 100 * np.array([r["finetuned"] for r in rows])
        share = recovered(100 * fp32, p.mean(), f.mean())
        lines.append(
            f"| {profile} | {100 * fp32:.2f} % | {p.mean():.2f} +- {p.std():.2f} % | "
            f"{f.mean():.2f} +- {f.std():.2f} % | {100 * share:.0f} % |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mnist1d_mlp", choices=sorted(DATASETS))
    ap.add_argument("--profiles", nargs="+", default=["default", "custom"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--sends", choices=["keep", "before", "search"])
    ap.add_argument("--scale-update", choices=["static", "ema", "learned"])
    ap.add_argument("--column-gain", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--instances", type=int, help="chip instances in the loop (robust)")
    ap.add_argument("--patience", type=int)
    ap.add_argument("--eval", choices=["test", "dev"], default="test", help="dev: mnist1d only")
    ap.add_argument("--threads", type=int, default=1, help="torch threads [default: 1]")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    options = {
        k: v
        for k, v in {
            "epochs": args.epochs,
            "lr": args.lr,
            "sends": args.sends,
            "scale_update": args.scale_update,
            "column_gain": args.column_gain,
            "instances": args.instances,
            "patience": args.patience,
        }.items()
        if v is not None
    }
    result = study(
        args.model,
        args.profiles,
        args.seeds,
        options,
        log=lambda s: print(s, file=sys.stderr),
        evaluate=args.eval,
    )
    print(table(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

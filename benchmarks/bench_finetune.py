"""Fine-tuning speed: one epoch of ``finetune`` (emulator in the loop) against one torch FP32
training epoch of the same model on the same data.

Both sides use the training split, batch size :data:`BATCH`, Adam and cross-entropy, batches
reshuffled each epoch. The anacc side is ``finetune(program, train, options(epochs=1))``
without validation data: its epoch time (``history[0].seconds``: the training steps and the
snapshot of the tuned program) and the whole call (with the gain measurement and setup). The
torch side is the float model (``models/train_*.build_model`` with the shipped weights) in
train mode. Repetitions are interleaved after one warm-up of each; figures are medians.

    python benchmarks/bench_finetune.py [--quick] [--reps 3] [--threads T] [--out FILE]
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from _common import bundled, bundled_torch, fmt_table, script_main
from anacc.compiler.datafile import match_inputs
from anacc.passes.finetune import FinetuneOptions, finetune

import anacc

FULL_MODELS = ("digits_mlp", "digits_cnn", "mnist1d_mlp", "bss2_mnist", "kws_lstm")
QUICK_MODELS = ("digits_mlp",)
BATCH = 64
LR = 1e-3


def torch_epoch(
    module: torch.nn.Module, x: np.ndarray, labels: np.ndarray, generator: torch.Generator
) -> float:
    """One epoch of plain FP32 training; returns the mean loss."""
    optim = torch.optim.Adam(module.parameters(), lr=LR)
    module.train()
    xt, yt = torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))
    perm = torch.randperm(len(x), generator=generator)
    total = 0.0
    for i in range(0, len(x), BATCH):
        idx = perm[i : i + BATCH]
        loss = torch.nn.functional.cross_entropy(module(xt[idx]), yt[idx])
        optim.zero_grad()
        loss.backward()
        optim.step()
        total += float(loss.detach()) * len(idx)
    return total / len(x)


def bench_model(name: str, reps: int, max_samples: int | None) -> dict[str, object]:
    model = bundled(name)
    train = model.data("train")
    if max_samples is not None:
        train = {k: v[:max_samples] for k, v in train.items()}
    program = anacc.compile(model.onnx, calib=model.data("calib"))
    dataset = match_inputs(train, program.inputs, "training data")
    opts = FinetuneOptions(epochs=1, lr=LR, batch_size=BATCH, seed=0)
    generator = torch.Generator().manual_seed(0)

    def run_anacc() -> tuple[float, float]:
        t0 = time.perf_counter()
        result = finetune(program, dataset, None, opts)
        return result.history[0].seconds, time.perf_counter() - t0

    def run_torch() -> float:
        module = bundled_torch(model)
        t0 = time.perf_counter()
        torch_epoch(module, train["input"], train["labels"], generator)
        return time.perf_counter() - t0

    run_anacc()
    run_torch()
    epoch, call, ref = [], [], []
    for _ in range(reps):
        e, c = run_anacc()
        epoch.append(e)
        call.append(c)
        ref.append(run_torch())
    ratio = [e / r for e, r in zip(epoch, ref, strict=True)]
    return {
        "model": name,
        "samples": len(train["labels"]),
        "batch": BATCH,
        "steps": -(-len(train["labels"]) // BATCH),
        "torch_s": statistics.median(ref),
        "finetune_epoch_s": statistics.median(epoch),
        "finetune_call_s": statistics.median(call),
        "epoch_vs_torch": statistics.median(ratio),
        "ms_per_step": 1e3 * statistics.median(epoch) / -(-len(train["labels"]) // BATCH),
    }


def run(quick: bool, reps: int) -> dict[str, object]:
    """The fine-tuning table: one row per model."""
    t0 = time.perf_counter()
    models = QUICK_MODELS if quick else FULL_MODELS
    rows = [bench_model(m, reps, 128 if quick else None) for m in models]
    return {"reps": reps, "rows": rows, "seconds": time.perf_counter() - t0}


def table(result: dict[str, object]) -> str:
    header = [
        "model",
        "samples",
        "steps",
        "torch epoch s",
        "finetune epoch s",
        "x torch",
        "ms/step",
        "finetune call s",
    ]
    rows = [
        [
            r["model"],
            r["samples"],
            r["steps"],
            r["torch_s"],
            r["finetune_epoch_s"],
            r["epoch_vs_torch"],
            r["ms_per_step"],
            r["finetune_call_s"],
        ]
        for r in result["rows"]
    ]
    return fmt_table(header, rows)


def main() -> None:
    script_main(__doc__, run, table, reps=3)


if __name__ == "__main__":
    main()

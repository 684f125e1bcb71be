"""Shared steps of the reference-model scripts: split, train, export, check, write.

Every script trains one small model on one data set and ships two kinds of file:
``<out>/<name>.onnx`` (graph input ``input`` with a dynamic batch dimension, output ``logits``,
opset 17, a single file, BatchNormalization nodes kept) and ``<out>/data/<dataset>_<split>.npz``
for the splits train, calib and test (and val where the script asks for one), each holding
``input`` (float32, exactly what the model expects) and ``labels`` (int64). The helpers here
make those files the same way for every model: a seeded split, a seeded training loop, the
export, and a check that the exported file run by onnxruntime predicts exactly what the torch
model predicts.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

SPLITS = ("train", "calib", "test")
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 17
MODELS_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Split:
    """One split of a data set: model inputs (float32) and their class labels (int64)."""

    input: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        assert self.input.dtype == np.float32, self.input.dtype
        assert self.labels.dtype == np.int64, self.labels.dtype
        assert len(self.input) == len(self.labels)


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of `train`: AdamW with a cosine learning-rate decay to zero."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float


def parse_out_dir(description: str) -> Path:
    """Read the script's one option, ``--out-dir`` (default: the models/ folder)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=MODELS_DIR,
        help="folder for <name>.onnx and data/*.npz (default: %(default)s)",
    )
    return parser.parse_args().out_dir


def split_data(
    x: np.ndarray,
    labels: np.ndarray,
    calib_size: int,
    test_size: int,
    rng: np.random.Generator,
    val_size: int = 0,
) -> dict[str, Split]:
    """Shuffle the samples with ``rng`` and cut them into disjoint splits: test, val, calib, train.

    With ``val_size=0`` there is no val split, and test, calib and train hold the samples they
    held before val splits existed, so the shipped files of those scripts stay the same.
    """
    assert calib_size + test_size + val_size < len(labels)
    order = rng.permutation(len(labels))
    ends = np.cumsum([test_size, val_size, calib_size])
    parts = {
        "test": order[: ends[0]],
        "val": order[ends[0] : ends[1]],
        "calib": order[ends[1] : ends[2]],
        "train": order[ends[2] :],
    }
    return {
        name: Split(
            np.ascontiguousarray(x[index], dtype=np.float32), labels[index].astype(np.int64)
        )
        for name, index in parts.items()
        if name != "val" or val_size
    }


def split_names(splits: dict[str, Split]) -> list[str]:
    """The names of ``splits`` in file order: train, val (if there is one), calib, test."""
    order = ("train", "val", "calib", "test")
    assert set(splits) <= set(order) and set(SPLITS) <= set(splits), sorted(splits)
    return [name for name in order if name in splits]


def init_parameters(model: nn.Module, generator: torch.Generator) -> None:
    """Draw the weights of every Linear, Conv2d and LSTM from ``generator`` (torch's defaults).

    Module constructors draw from torch's global generator; redrawing here makes the model a
    function of the caller's seed alone. BatchNorm starts at fixed values and needs no draw.
    """
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
            bound = 1.0 / math.sqrt(module.weight[0].numel())
            nn.init.uniform_(module.bias, -bound, bound, generator=generator)
        elif isinstance(module, nn.LSTM):
            bound = 1.0 / math.sqrt(module.hidden_size)
            for weight in module.parameters():
                nn.init.uniform_(weight, -bound, bound, generator=generator)
        else:
            own = next(module.parameters(recurse=False), None)
            assert own is None or isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)), (
                f"no seeded initialisation for {type(module).__name__}"
            )


def train(
    model: nn.Module,
    data: Split,
    config: TrainConfig,
    generator: torch.Generator,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> None:
    """Minimise cross-entropy on ``data``; ``generator`` orders the mini-batches of every epoch.

    ``augment``, if given, maps every mini-batch of inputs to a randomly altered copy, drawing
    from ``generator``. The last incomplete batch of an epoch is dropped so that BatchNorm never
    sees a batch of one. Leaves the model in eval mode.
    """
    x = torch.from_numpy(data.input)
    y = torch.from_numpy(data.labels)
    num_batches = len(y) // config.batch_size
    assert num_batches > 0
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.epochs * num_batches
    )
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(y), generator=generator)
        for batch in order[: num_batches * config.batch_size].view(num_batches, -1):
            optimizer.zero_grad()
            inputs = x[batch] if augment is None else augment(x[batch], generator)
            loss_fn(model(inputs), y[batch]).backward()
            optimizer.step()
            schedule.step()
    model.eval()


def torch_predictions(model: nn.Module, data: Split) -> np.ndarray:
    """Class predicted by the torch model (in eval mode) for every sample of ``data``."""
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(data.input)).argmax(dim=1).numpy()


def onnx_predictions(path: Path, data: Split) -> np.ndarray:
    """Class predicted by onnxruntime running the ONNX file at ``path`` for every sample."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: data.input})
    return logits.argmax(axis=1)


def export_onnx(
    model: nn.Module, example: np.ndarray, path: Path, fold_constants: bool = False
) -> None:
    """Export the eval-mode model to one ONNX file, BatchNormalization nodes left unfolded.

    ``fold_constants`` lets the exporter fold computations on constants; only for models
    without BatchNorm, because it would fuse Conv+BatchNorm, a fold the compiler does itself.
    """
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (torch.from_numpy(example),),
        str(path),
        dynamo=False,
        opset_version=OPSET,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        training=torch.onnx.TrainingMode.EVAL,
        do_constant_folding=fold_constants,
    )
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    num_bn = sum(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in model.modules())
    num_bn_nodes = sum(node.op_type == "BatchNormalization" for node in graph.graph.node)
    assert num_bn_nodes == num_bn, (num_bn_nodes, num_bn)


def write_splits(splits: dict[str, Split], data_dir: Path, dataset: str) -> list[Path]:
    """Write each split to ``<data_dir>/<dataset>_<split>.npz`` (arrays ``input``, ``labels``)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in split_names(splits):
        path = data_dir / f"{dataset}_{name}.npz"
        np.savez_compressed(path, **{INPUT_NAME: splits[name].input, "labels": splits[name].labels})
        paths.append(path)
    return paths


def ship(
    model: nn.Module,
    splits: dict[str, Split],
    name: str,
    dataset: str,
    out_dir: Path,
    fold_constants: bool = False,
) -> float:
    """Export the trained model and write its splits, then print and return its test accuracy.

    The accuracies (printed for every split) are onnxruntime's on the exported file; the script
    fails if the torch model predicts any test sample differently. ``fold_constants`` is passed
    to `export_onnx`.
    """
    onnx_path = out_dir / f"{name}.onnx"
    export_onnx(model, splits["test"].input[:1], onnx_path, fold_constants)
    written = [onnx_path, *write_splits(splits, out_dir / "data", dataset)]
    test = splits["test"]
    ort_pred = onnx_predictions(onnx_path, test)
    torch_pred = torch_predictions(model, test)
    ort_acc = float(np.mean(ort_pred == test.labels))
    torch_acc = float(np.mean(torch_pred == test.labels))
    sizes = ", ".join(f"{split}={len(splits[split].labels)}" for split in split_names(splits))
    print(f"{name}: splits {sizes}")
    for path in written:
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    accuracies = ", ".join(
        f"{split} {np.mean(onnx_predictions(onnx_path, splits[split]) == splits[split].labels):.4f}"
        for split in split_names(splits)
    )
    print(f"{name}: FP32 accuracy (onnxruntime) {accuracies}")
    print(f"{name}: FP32 test accuracy torch {torch_acc:.4f}, onnxruntime {ort_acc:.4f}")
    disagree = int(np.sum(ort_pred != torch_pred))
    if disagree:
        raise SystemExit(f"{name}: onnxruntime and torch disagree on {disagree} test samples")
    return ort_acc

"""Export a zoo model to ONNX with either torch exporter, and the inputs to feed it.

``legacy`` is the TorchScript exporter (``dynamo=False``, opset 17, constant folding on as by
default), ``dynamo`` the default exporter (``dynamo=True``, its default opset, weights in an
external ``<file>.data`` next to the model). Both name the graph input ``input`` and the output
``logits`` and give the batch axis the symbolic size ``batch`` unless a fixed batch is asked for
(or the entry has one).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch

from .registry import ZOO, ZooEntry

EXPORTERS = ("legacy", "dynamo")
LEGACY_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_AXIS = "batch"
# Traced with two samples: a batch of one lets the exporters treat the batch size as a constant.
TRACE_BATCH = 2


def entry(name: str) -> ZooEntry:
    """The zoo entry called ``name``; a ValueError that lists the names if there is none."""
    if name not in ZOO:
        raise ValueError(f"no zoo model {name!r}; choose one of {', '.join(ZOO)}")
    return ZOO[name]


def example_input(
    name: str, batch: int, seed: int = 0, input_shape: tuple[int, ...] | None = None
) -> np.ndarray:
    """A standard-normal input batch for model ``name``, drawn from ``seed``.

    ``input_shape`` (per sample) defaults to the entry's.
    """
    model = entry(name)
    shape = model.input_shape if input_shape is None else input_shape
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, *shape)).astype(model.input_dtype)


def export(
    name: str,
    path: str | Path,
    *,
    exporter: str = "legacy",
    batch: int | None = None,
    seed: int = 0,
    input_shape: tuple[int, ...] | None = None,
) -> Path:
    """Export zoo model ``name`` (weights drawn from ``seed``) to the ONNX file ``path``.

    ``batch`` None gives a dynamic batch axis, unless the entry has a fixed batch; an int fixes
    it. ``input_shape`` (per sample) changes the input size of a model that accepts others, e.g.
    a smaller image for an "arch" model. Returns the path of the written model.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    model_entry = entry(name)
    batch = model_entry.fixed_batch if batch is None else batch
    model = model_entry.build(seed, input_shape)
    example = torch.from_numpy(
        example_input(name, TRACE_BATCH if batch is None else batch, seed, input_shape)
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if exporter == "legacy":
        _export_legacy(model, example, path, dynamic_batch=batch is None)
    else:
        _export_dynamo(model, example, path, dynamic_batch=batch is None)
    onnx.checker.check_model(str(path))
    return path


def _export_legacy(
    model: torch.nn.Module, example: torch.Tensor, path: Path, dynamic_batch: bool
) -> None:
    # Autograd stays on: under no_grad nn.TransformerEncoderLayer takes a fused fast path
    # that the TorchScript exporter cannot translate.
    axes = {INPUT_NAME: {0: BATCH_AXIS}, OUTPUT_NAME: {0: BATCH_AXIS}}
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=False,
        opset_version=LEGACY_OPSET,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes=axes if dynamic_batch else None,
    )


def _export_dynamo(
    model: torch.nn.Module, example: torch.Tensor, path: Path, dynamic_batch: bool
) -> None:
    shapes = ({0: torch.export.Dim(BATCH_AXIS)},) if dynamic_batch else None
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes=shapes,
        external_data=True,
        verbose=False,
    )

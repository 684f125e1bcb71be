"""One trial of a search: compile a configuration, fine-tune it if asked, and measure it.

Contract. :func:`trial_context` reads and checks the model and data of a search once;
the :class:`TrialContext` travels to every trial through Ray's object store (a trial may run
on another node, so it carries the model's bytes, not its path). :func:`evaluate_config`
builds the configuration's chip and options, compiles, optionally fine-tunes per emulated
chip instance, and scores accuracy on the validation data for chip instances ``0..seeds-1``
(mean, spread and each); it also estimates energy and time per inference with
:func:`anacc.compiler.cost.program_cost`, the active inputs measured on the first
:data:`COST_SAMPLES` validation samples. :func:`trainable` is the Ray Tune function around it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anacc.compiler.chip import ChipSpec
from anacc.compiler.datafile import Dataset, InputSpec, load_dataset
from anacc.errors import DataError
from anacc.tune.config import TUNED_PROFILE, compile_options, tuned_chip
from anacc.tune.settings import TuneSettings
from anacc.tune.space import SearchSpace

COST_SAMPLES = 256  # validation samples whose active inputs enter the energy estimate


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs, shipped once to the Ray object store."""

    model_name: str
    model_bytes: bytes
    chip: ChipSpec
    space: SearchSpace
    calib: Dataset | None
    val: Dataset
    train: Dataset | None
    seeds: tuple[int, ...]
    finetune_epochs: int


def _head(data: Dataset, n: int | None) -> Dataset:
    if n is None or n >= data.samples:
        return data
    labels = None if data.labels is None else data.labels[:n]
    return Dataset({k: v[:n] for k, v in data.inputs.items()}, labels, data.path)


def evaluate_config(
    config: Mapping[str, Any], ctx: TrialContext, model: str | Path
) -> dict[str, Any]:
    """Compile ``model`` with the configuration, fine-tune if asked, and measure it."""
    from anacc.compiler.cost import program_cost
    from anacc.compiler.pipeline import compile_model
    from anacc.passes.finetune import FinetuneOptions, finetune
    from anacc.runtime.error_budget import measure_layers
    from anacc.runtime.report import vectors_per_sample
    from anacc.runtime.session import run_program

    t0 = time.perf_counter()
    chip = tuned_chip(ctx.chip, config)
    program = compile_model(
        model,
        chip=chip,
        profile=TUNED_PROFILE,
        calib=ctx.calib,
        options=compile_options(config),
    )
    plain = [run_program(program, ctx.val, backend="emulator", seed=s).accuracy for s in ctx.seeds]
    final = plain
    if ctx.finetune_epochs:
        assert ctx.train is not None, "fine-tuning needs training data"
        final = []
        for s in ctx.seeds:
            opts = FinetuneOptions(epochs=ctx.finetune_epochs, seed=s)
            tuned = finetune(program, ctx.train, ctx.val, opts).program
            final.append(run_program(tuned, ctx.val, backend="emulator", seed=s).accuracy)
    budget = measure_layers(program, _head(ctx.val, COST_SAMPLES), seed=ctx.seeds[0])
    cost = program_cost(
        program,
        vectors_per_sample(program),
        active_inputs={b.name: b.active_inputs for b in budget},
    )
    return {
        "accuracy": float(np.mean(final)),
        "accuracy_std": float(np.std(final)),
        "accuracies": [float(a) for a in final],
        "plain_accuracy": float(np.mean(plain)),
        "plain_accuracy_std": float(np.std(plain)),
        "energy_uj": float(cost.energy_uj_per_sample),
        "time_us": float(cost.time_us_per_sample),
        "gain_per_send": chip.profile(TUNED_PROFILE).gain_per_send,
        "num_sends": {name: int(layer.analog.num_sends) for name, layer in program.layers.items()},
        "seconds": time.perf_counter() - t0,
    }


def trainable(config: dict[str, Any], ctx: TrialContext) -> dict[str, Any]:
    """The Ray Tune function trainable: one configuration, one result."""
    with tempfile.TemporaryDirectory(prefix="anacc-trial-") as tmp:
        model = Path(tmp) / ctx.model_name
        model.write_bytes(ctx.model_bytes)
        return evaluate_config(ctx.space.full(config), ctx, model)


def _model_inputs(model: Path) -> tuple[list[InputSpec], bytes]:
    from anacc.compiler.frontend import graph_from_onnx, load_onnx
    from anacc.compiler.pipeline import input_specs

    proto = load_onnx(model)
    return input_specs(graph_from_onnx(proto, source=str(model))), proto.SerializeToString()


def trial_context(settings: TuneSettings) -> TrialContext:
    """The model and data of ``settings``, read and checked once for all trials."""
    specs, model_bytes = _model_inputs(settings.model)
    val = _head(load_dataset(settings.val, specs), settings.val_samples)
    if val.labels is None:
        raise DataError(f"{settings.val}: validation data needs 'labels' to measure accuracy")
    train = load_dataset(settings.train, specs) if settings.finetune_epochs else None
    if train is not None and train.labels is None:
        raise DataError(f"{settings.train}: training data needs 'labels'")
    return TrialContext(
        model_name=settings.model.name,
        model_bytes=model_bytes,
        chip=settings.chip,
        space=settings.space,
        calib=None if settings.calib is None else load_dataset(settings.calib, specs),
        val=val,
        train=train,
        seeds=settings.emulator_seeds,
        finetune_epochs=settings.finetune_epochs,
    )

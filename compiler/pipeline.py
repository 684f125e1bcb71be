"""The compile pipeline: ONNX file -> IR -> passes -> :class:`Program`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from anacc.compiler.calibration import LayerProbe, collect_stats
from anacc.compiler.chip import ChipSpec, load_chip
from anacc.compiler.datafile import Dataset, InputSpec, load_dataset, match_inputs
from anacc.compiler.frontend import graph_from_onnx, load_onnx, model_sha256
from anacc.compiler.ir import Graph
from anacc.compiler.mapping import AnalogLayer
from anacc.compiler.options import CompileOptions
from anacc.compiler.program import OutputSpec, Program, ProgramLayer, Step
from anacc.passes.base import CompileContext, PassManager, PassRecord
from anacc.passes.calibrate_scales import CalibrateScales
from anacc.passes.canonicalize import Canonicalize
from anacc.passes.choose_gain import ChooseGain
from anacc.passes.fold_batchnorm import FoldBatchNorm
from anacc.passes.lower_conv import LowerConv
from anacc.passes.map_rows import MapRows
from anacc.passes.signed_inputs import SignedInputs
from anacc.passes.tile import TileLayers

from anacc.errors import ModelError

GRAPH_PASSES = (Canonicalize, FoldBatchNorm, LowerConv)
MAPPING_PASSES = (SignedInputs, CalibrateScales, TileLayers, ChooseGain, MapRows)


def input_specs(graph: Graph) -> list[InputSpec]:
    specs = []
    for t in graph.inputs:
        rest = t.shape[1:]
        if not all(isinstance(d, int) for d in rest):
            raise ModelError(
                f"input '{t.name}' has symbolic dimensions beyond the batch ({t.shape}); "
                "export the model with fixed per-sample shapes"
            )
        specs.append(InputSpec(t.name, tuple(int(d) for d in rest), "float32"))
    return specs


def check_outputs_batched(graph: Graph) -> None:
    """Programs run in batches of samples, so every output must lead with the batch."""
    for o in graph.outputs:
        lead = o.shape[0] if o.shape else None
        if not (isinstance(lead, str) and "N" in lead):
            raise ModelError(
                f"output '{o.name}' (shape {o.shape}) does not keep the batch dimension first; "
                "anacc runs models sample by sample and cannot mix samples in an output"
            )


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def compile_model(
    model: str | Path,
    *,
    chip: str | Path | ChipSpec = "bss2",
    profile: str = "default",
    calib: str | Path | Dataset | dict[str, np.ndarray] | None = None,
    options: CompileOptions | None = None,
    max_params: int | None = None,
    on_pass: Callable[[PassRecord], None] | None = None,
) -> Program:
    """Compile an ONNX file for a chip; see ``anacc compile --help`` for the options."""
    options = options or CompileOptions()
    spec = chip if isinstance(chip, ChipSpec) else load_chip(chip)
    prof = spec.profile(profile)
    proto = load_onnx(model, max_params=max_params)
    graph = graph_from_onnx(proto, source=str(model))
    specs = input_specs(graph)
    check_outputs_batched(graph)
    data: Dataset | None
    if calib is None or isinstance(calib, Dataset):
        data = calib
    elif isinstance(calib, dict):
        data = match_inputs(calib, specs, "calibration data")
    else:
        data = load_dataset(calib, specs)

    ctx = CompileContext(chip=spec, profile=prof, options=options)
    manager = PassManager([p() for p in GRAPH_PASSES])
    graph = manager.run(graph, ctx, on_pass)
    if data is not None:
        probes = {
            n.name: LayerProbe(n.inputs[0], n.attr("conv"))
            for n in graph.nodes()
            if n.op == "Linear"
        }
        ctx.calib = collect_stats(
            proto,
            data.inputs,
            probes,
            rng=np.random.default_rng(options.seed),
            batch_size=options.calib_batch,
        )
    mapping = PassManager([p() for p in MAPPING_PASSES])
    graph = mapping.run(graph, ctx, on_pass)
    manager.records.extend(mapping.records)
    return _build_program(graph, ctx, specs, spec, profile, options, model, manager)


def _build_program(
    graph: Graph,
    ctx: CompileContext,
    specs: list[InputSpec],
    chip: ChipSpec,
    profile: str,
    options: CompileOptions,
    model: str | Path,
    manager: PassManager,
) -> Program:
    steps: list[Step] = []
    layers: dict[str, ProgramLayer] = {}
    constants: dict[str, np.ndarray] = {}
    for node in graph.nodes():
        if node.op == "Linear":
            plan = ctx.layers[node.name]
            w = graph.initializers[node.inputs[1]]
            bias = graph.initializers[node.inputs[2]] if len(node.inputs) > 2 else None
            layers[node.name] = ProgramLayer(
                analog=AnalogLayer(
                    name=node.name,
                    weight=np.asarray(w, dtype=np.float32),
                    weight_q=plan.weight_q,
                    num_sends=plan.num_sends,
                    tiles=plan.tiles,
                    row_slot=plan.row_slot,
                ),
                signed=plan.signed,
                signed_reason=plan.signed_reason,
                input_scale=plan.input_scale,
                input_offset=plan.input_offset,
                weight_scale=plan.weight_scale,
                bias=None if bias is None else np.asarray(bias, dtype=np.float32),
                row_order=plan.row_order,
                gain_reason=plan.gain_reason,
                conv=node.attr("conv"),
            )
            steps.append(Step("Linear", node.name, (node.inputs[0],), tuple(node.outputs)))
            continue
        for t in node.inputs:
            if t and t in graph.initializers:
                constants[t] = np.asarray(graph.initializers[t])
        steps.append(
            Step(node.op, node.name, tuple(node.inputs), tuple(node.outputs), _jsonable(node.attrs))
        )
    outputs = [OutputSpec(o.name, tuple(o.shape[1:])) for o in graph.outputs]
    return Program(
        chip=chip,
        profile=profile,
        options=options.to_dict(),
        source={"file": Path(model).name, "sha256": model_sha256(model)},
        inputs=specs,
        outputs=outputs,
        steps=steps,
        layers=layers,
        constants=constants,
        warnings=list(ctx.warnings),
        explain=manager.explain(),
    )

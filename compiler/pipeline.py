"""The compile pipeline: ONNX file -> IR -> passes -> :class:`Program`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from anacc.compiler.chip import ChipSpec, load_chip
from anacc.compiler.datafile import Dataset, InputSpec, load_dataset, match_inputs
from anacc.compiler.export import boundary_types, region_model
from anacc.compiler.frontend import graph_from_onnx, load_onnx, model_sha256
from anacc.compiler.inspect import inspect_graph, placement_records
from anacc.compiler.ir import BATCH, Graph
from anacc.compiler.mapping import AnalogLayer
from anacc.compiler.onnx_file import one_line
from anacc.compiler.options import CompileOptions
from anacc.compiler.program import DigitalStep, OutputSpec, Program, ProgramLayer
from anacc.compiler.steps import schedule
from anacc.passes.base import CompileContext, LayerPlan, PassManager, PassRecord
from anacc.passes.calibrate_scales import CalibrateScales
from anacc.passes.canonicalize import Canonicalize
from anacc.passes.choose_gain import ChooseGain
from anacc.passes.collect_stats import CollectStats
from anacc.passes.fold_batchnorm import FoldBatchNorm
from anacc.passes.lower_conv import LowerConv
from anacc.passes.lower_recurrent import LowerRecurrent
from anacc.passes.map_rows import MapRows
from anacc.passes.place import PlaceTiles
from anacc.passes.plan_layers import PlanLayers
from anacc.passes.signed_inputs import SignedInputs
from anacc.passes.tile import TileLayers

from anacc.errors import ModelError

PASSES = (
    Canonicalize,
    FoldBatchNorm,
    LowerConv,
    LowerRecurrent,
    PlanLayers,
    CollectStats,
    SignedInputs,
    CalibrateScales,
    TileLayers,
    ChooseGain,
    PlaceTiles,
    MapRows,
)


def input_specs(graph: Graph) -> list[InputSpec]:
    return [InputSpec(t.name, tuple(t.shape), t.dtype) for t in graph.inputs]


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
    partition = placement_records(inspect_graph(graph))
    specs = input_specs(graph)
    data: Dataset | None
    if calib is None or isinstance(calib, Dataset):
        data = calib
    elif isinstance(calib, dict):
        data = match_inputs(calib, specs, "calibration data")
    else:
        data = load_dataset(calib, specs)
    ctx = CompileContext(chip=spec, profile=prof, options=options, calib_data=data)
    manager = PassManager([p() for p in PASSES])
    graph = manager.run(graph, ctx, on_pass)
    program = build_program(graph, ctx, specs, profile, model_source(model), manager.explain())
    program.partition = partition
    check_runs(program, str(model))
    return program


def model_source(model: str | Path) -> dict[str, str]:
    return {"file": Path(model).name, "sha256": model_sha256(model)}


def _program_layer(plan: LayerPlan) -> ProgramLayer:
    assert plan.weight_q is not None and plan.weight_scale is not None
    assert plan.row_slot is not None
    return ProgramLayer(
        analog=AnalogLayer(
            name=plan.name,
            weight=np.array(plan.weight, dtype=np.float32),
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
        bias=None if plan.bias is None else np.array(plan.bias, dtype=np.float32),
        row_order=plan.row_order,
        gain_reason=plan.gain_reason,
        conv=plan.conv,
        source_op=plan.source_op,
    )


def build_program(
    graph: Graph,
    ctx: CompileContext,
    specs: list[InputSpec],
    profile: str,
    source: dict[str, str],
    explain: str = "",
) -> Program:
    """The program of a graph the passes mapped."""
    steps = schedule(graph)
    read = {t for n in graph.nodes() if n.op != "Linear" for t in n.reads}
    read |= {o.name for o in graph.outputs}
    constants = {t: np.array(v) for t, v in graph.initializers.items() if t in read}
    crossing = {t for s in steps for t in (*s.inputs, *s.outputs)}
    types = {t: graph.tensors[t].dtype for t in sorted(crossing) if t in graph.tensors}
    outputs = [
        OutputSpec(
            o.name,
            tuple(o.shape),
            o.dtype,
            o.shape.index(BATCH) if BATCH in o.shape else None,
        )
        for o in graph.outputs
    ]
    return Program(
        chip=ctx.chip,
        profile=profile,
        options=ctx.options.to_dict(),
        source=source,
        inputs=specs,
        outputs=outputs,
        steps=steps,
        layers={name: _program_layer(plan) for name, plan in ctx.layers.items()},
        constants=constants,
        opsets=dict(graph.opsets),
        tensor_types=types,
        warnings=list(ctx.warnings),
        explain=explain,
    )


def check_runs(program: Program, source: str) -> None:
    """onnxruntime accepts each digital region of the program (the models it will run them
    from; the analog layers' weights are not part of them, so this costs little)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    types = boundary_types(program)
    for step in program.steps:
        if not isinstance(step, DigitalStep):
            continue
        proto = region_model(program, step.nodes, step.inputs, step.outputs, types)
        try:
            ort.InferenceSession(
                proto.SerializeToString(), opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(
                f"{source}: onnxruntime cannot run the model ({one_line(exc)})"
            ) from None


_ = onnx

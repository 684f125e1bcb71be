"""The compiled program: everything needed to run a model on the chip, as data.

A :class:`Program` is a list of steps over named tensors, in an order that runs:

- :class:`AnalogStep`: one use of an analog layer (:class:`ProgramLayer`): its input is
  encoded for the chip, multiplied on the array and decoded; several steps may use one layer
  (the unrolled time steps of a recurrent weight);
- :class:`DigitalStep`: a region of ONNX-form nodes (:class:`~anacc.compiler.ir.Node`) that run
  on the host, between analog steps.

``partition`` says where each node of the source model runs and why. ``inputs`` and
``outputs`` describe the graph's inputs and outputs (declared shape, ``"N"``
first for the batch, dtype; an output's ``batch_axis``), ``constants`` the arrays the digital
nodes read, ``tensor_types`` the dtype of every tensor a step passes to another, ``opsets`` the
ONNX operator sets of the digital nodes. The file format and its reading and writing are
:mod:`anacc.compiler.program_io` (``load_program`` / ``save_program`` round-trip exactly).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from anacc.compiler.chip import ChipSpec
from anacc.compiler.conv import ConvGeometry
from anacc.compiler.datafile import InputSpec
from anacc.compiler.ir import BATCH, Node
from anacc.compiler.mapping import AnalogLayer
from anacc.compiler.partition import PlacementRecord

__all__ = [
    "AnalogStep",
    "DigitalStep",
    "OutputSpec",
    "Program",
    "ProgramLayer",
    "Step",
]


@dataclass(frozen=True)
class AnalogStep:
    """One use of analog layer ``layer``: ``outputs[0] = layer(inputs[0])``."""

    name: str
    layer: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    analog = True

    @property
    def op(self) -> str:
        return "Linear"


@dataclass(frozen=True)
class DigitalStep:
    """A region of digital nodes, in a runnable order. ``inputs`` are the tensors it reads
    from outside (graph inputs and earlier steps' outputs; constants are read from the
    program), ``outputs`` the tensors it computes that later steps or the graph outputs
    read."""

    name: str
    nodes: tuple[Node, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    analog = False

    @property
    def op(self) -> str:
        return "+".join(dict.fromkeys(n.op for n in self.nodes))


Step = AnalogStep | DigitalStep


@dataclass
class ProgramLayer:
    """An analog layer: the chip mapping plus the digital pre- and post-processing."""

    analog: AnalogLayer
    signed: str
    signed_reason: str
    input_scale: float | None
    input_offset: float
    weight_scale: np.ndarray  # float32 (out_features,)
    bias: np.ndarray | None  # float32 (out_features,)
    row_order: str
    gain_reason: str = ""
    conv: ConvGeometry | None = None
    source_op: str = "MatMul"

    @property
    def name(self) -> str:
        return self.analog.name


@dataclass(frozen=True)
class OutputSpec:
    """A graph output: declared shape, dtype and the axis that holds the batch (None when
    the output has none: a fixed-shape program, or an output that mixes the samples)."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"
    batch_axis: int | None = 0

    @property
    def sample_shape(self) -> tuple[int | str, ...]:
        """The shape of one sample's output (without the batch axis)."""
        if self.batch_axis is None:
            return self.shape
        return self.shape[: self.batch_axis] + self.shape[self.batch_axis + 1 :]


@dataclass
class Program:
    """A compiled model; see the module docstring."""

    chip: ChipSpec
    profile: str
    options: dict[str, Any]
    source: dict[str, Any]
    inputs: list[InputSpec]
    outputs: list[OutputSpec]
    steps: list[Step]
    layers: dict[str, ProgramLayer]
    constants: dict[str, np.ndarray]
    opsets: dict[str, int] = field(default_factory=lambda: {"": 17})
    tensor_types: dict[str, str] = field(default_factory=dict)
    partition: tuple[PlacementRecord, ...] = ()
    warnings: list[str] = field(default_factory=list)
    explain: str = ""

    @property
    def batched(self) -> bool:
        """True when the inputs have a batch axis (else the program runs as declared)."""
        return any(i.shape[:1] == (BATCH,) for i in self.inputs)

    @property
    def analog_steps(self) -> list[AnalogStep]:
        return [s for s in self.steps if isinstance(s, AnalogStep)]

    @property
    def digital_nodes(self) -> list[Node]:
        return [n for s in self.steps if isinstance(s, DigitalStep) for n in s.nodes]

    @property
    def loads(self) -> int:
        """Chip loads the tiles of all layers use."""
        tiles = [t for layer in self.layers.values() for t in layer.analog.tiles]
        return 1 + max((t.load for t in tiles), default=-1)

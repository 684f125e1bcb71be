"""Export every zoo model with both torch exporters and check onnxruntime against torch.

For each model and exporter: the export time, onnxruntime's largest absolute deviation from
the torch model divided by the largest absolute torch output (at batch 1 and 3, or at the
model's fixed batch), the opset, the ONNX op types the graph uses, the file size (model plus
external data) and whether the weights are external. Prints one markdown table and exits with
status 1 if an export fails or a deviation exceeds the tolerance. Run from the repository root,
either ``python -m models.zoo_check`` or ``python models/zoo_check.py``; ``--family test``
keeps it to the small models.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

try:
    from .zoo import EXPORTERS, INPUT_NAME, ZOO, example_input, export
except ImportError:  # run as a plain file: its own folder is on sys.path
    from zoo import EXPORTERS, INPUT_NAME, ZOO, example_input, export

TOLERANCE = 1e-4
CHECK_BATCHES = (1, 3)
CHECK_SEED = 1
HEADER = (
    "model",
    "params",
    "exporter",
    "export s",
    "ORT err / scale",
    "opset",
    "MiB",
    "ext",
    "ops",
)


@dataclass(frozen=True)
class Row:
    """The outcome of exporting one model with one exporter and running it."""

    name: str
    params: int
    exporter: str
    export_s: float
    errors: dict[int, float]
    opset: int
    op_types: tuple[str, ...]
    size_bytes: int
    external: bool

    @property
    def ok(self) -> bool:
        return all(error <= TOLERANCE for error in self.errors.values())


def graph_op_types(graph: onnx.GraphProto) -> Iterator[str]:
    """Op types of ``graph`` and of every subgraph in its nodes' attributes."""
    for node in graph.node:
        yield node.op_type
        for attribute in node.attribute:
            subgraphs = [attribute.g] if attribute.HasField("g") else []
            for subgraph in [*subgraphs, *attribute.graphs]:
                yield from graph_op_types(subgraph)


def relative_error(path: Path, model: torch.nn.Module, x: np.ndarray) -> float:
    """max |onnxruntime - torch| / max |torch| on the input batch ``x``."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {INPUT_NAME: x})
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.abs(got - want).max() / np.abs(want).max())


def check(name: str, exporter: str, out_dir: Path) -> Row:
    """Export ``name`` with ``exporter`` into ``out_dir``, run it, describe the file."""
    entry = ZOO[name]
    model = entry.build()
    start = time.perf_counter()
    path = export(name, out_dir / f"{name}_{exporter}.onnx", exporter=exporter)
    export_s = time.perf_counter() - start
    batches = CHECK_BATCHES if entry.fixed_batch is None else (entry.fixed_batch,)
    errors = {
        batch: relative_error(path, model, example_input(name, batch, CHECK_SEED))
        for batch in batches
    }
    proto = onnx.load(str(path), load_external_data=False)
    data_path = path.with_name(path.name + ".data")
    external = any(
        tensor.data_location == onnx.TensorProto.EXTERNAL for tensor in proto.graph.initializer
    )
    return Row(
        name=name,
        params=sum(p.numel() for p in model.parameters()),
        exporter=exporter,
        export_s=export_s,
        errors=errors,
        opset=next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        op_types=tuple(sorted(set(graph_op_types(proto.graph)))),
        size_bytes=path.stat().st_size + (data_path.stat().st_size if data_path.exists() else 0),
        external=external,
    )


def format_row(row: Row) -> str:
    errors = ", ".join(f"b{batch}: {error:.1e}" for batch, error in row.errors.items())
    cells = [
        row.name,
        f"{row.params:,}",
        row.exporter,
        f"{row.export_s:.1f}",
        errors + ("" if row.ok else " FAIL"),
        str(row.opset),
        f"{row.size_bytes / 2**20:.2f}",
        "yes" if row.external else "no",
        " ".join(row.op_types),
    ]
    return "| " + " | ".join(cells) + " |"


def format_failure(name: str, exporter: str, error: Exception) -> str:
    lines = str(error).strip().splitlines()
    message = f"{type(error).__name__}: {lines[0][:200] if lines else ''}"
    return f"| {name} | | {exporter} | | EXPORT FAILED: {message} | | | | |"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=("test", "arch", "all"), default="all")
    parser.add_argument("--exporter", choices=(*EXPORTERS, "both"), default="both")
    parser.add_argument("models", nargs="*", help="zoo names (default: the whole family)")
    parser.add_argument(
        "--out-dir", type=Path, help="keep the ONNX files here (default: a temp dir)"
    )
    args = parser.parse_args()
    unknown = [name for name in args.models if name not in ZOO]
    if unknown:
        parser.error(f"no zoo model {', '.join(unknown)}; choose from {', '.join(ZOO)}")
    return args


def main() -> int:
    args = parse_args()
    torch.set_num_threads(1)
    # The exporters warn about things outside the zoo (missing torchvision ops, deprecations).
    warnings.simplefilter("ignore")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    names = args.models or [
        name for name, entry in ZOO.items() if args.family in ("all", entry.family)
    ]
    exporters = EXPORTERS if args.exporter == "both" else (args.exporter,)
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    failed = 0
    with tempfile.TemporaryDirectory() as temp:
        out_dir = args.out_dir or Path(temp)
        for name in names:
            for exporter in exporters:
                try:
                    row = check(name, exporter, out_dir)
                except Exception as error:  # one broken export must not hide the others
                    failed += 1
                    print(format_failure(name, exporter, error), flush=True)
                    continue
                failed += not row.ok
                print(format_row(row), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

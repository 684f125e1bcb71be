"""Emulated inference of the nine real architectures of ``models/zoo`` against onnxruntime.

Each "arch" entry is exported with the TorchScript exporter (``export(name, path,
exporter="legacy")``, weights from seed 0), image models with a smaller image than their
default (``--image``, 64 x 64 unless given; stated in the output), compiled with 32
standard-normal calibration samples, and run with ``anacc.Session(program, "emulator",
seed=0).run(feeds)`` (session built once, compilation excluded) beside
``InferenceSession.run`` on the same file and batch, interleaved (``_common.interleaved``).
The floor is onnxruntime's time plus the emulator's standard normals for the forward (one per
output of every analog run; see bench_inference). ``over ms`` is the emulator's time minus
onnxruntime's per call.

    python benchmarks/bench_zoo.py [--quick] [--reps 3] [--image 64] [--batches 1,32]
        [--threads 1,2] [--models resnet18,m5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import ROOT, fmt_table, interleaved, machine_info, ort_session, set_threads
from bench_inference import draw_seconds, draws_per_sample

import anacc

ARCH = (
    "resnet18",
    "mobilenet_v2",
    "efficientnet_b0",
    "densenet121",
    "regnet_x_400mf",
    "googlenet",
    "squeezenet1_1",
    "m5",
    "kws_mlp",
)
CALIB = 32


def zoo():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import models.zoo as zoo_module

    return zoo_module


def input_shape(name: str, image: int) -> tuple[int, ...]:
    shape = zoo().ZOO[name].input_shape
    if len(shape) == 3:  # an image model: channels x height x width
        return (shape[0], image, image)
    return shape


def prepare(name: str, image: int, tmp: Path) -> tuple[Path, anacc.Program, tuple[int, ...]]:
    z = zoo()
    shape = input_shape(name, image)
    path = z.export(name, tmp / f"{name}.onnx", exporter="legacy", input_shape=shape)
    calib = z.example_input(name, CALIB, seed=1, input_shape=shape)
    program = anacc.compile(path, calib={"input": calib})
    return path, program, shape


def bench(
    name: str, path: Path, program: anacc.Program, shape: tuple[int, ...], batch: int, reps: int
) -> dict[str, object]:
    x = zoo().example_input(name, batch, seed=2, input_shape=shape)
    feeds = {"input": x}
    sess = ort_session(path)
    session = anacc.Session(program, backend="emulator", seed=0)
    r = interleaved(
        {"ort": lambda: sess.run(None, feeds), "emulator": lambda: session.run(feeds)},
        "ort",
        reps,
    )
    draws = draws_per_sample(program) * batch
    floor = r["ort"]["seconds"] + draw_seconds(draws, reps)["fast"]
    return {
        "model": name,
        "input": list(shape),
        "batch": batch,
        "threads": torch.get_num_threads(),
        "analog_layers": len(program.layers),
        "ort_ms": 1e3 * r["ort"]["seconds"],
        "emulator_ms": 1e3 * r["emulator"]["seconds"],
        "emulator_vs_ort": r["emulator"]["ratio"],
        "over_ms": 1e3 * (r["emulator"]["seconds"] - r["ort"]["seconds"]),
        "draws": draws,
        "floor_ms": 1e3 * floor,
        "emulator_vs_floor": r["emulator"]["seconds"] / floor,
    }


def run(
    quick: bool,
    reps: int,
    image: int = 64,
    batches: tuple[int, ...] = (1, 32),
    threads: tuple[int, ...] = (1, 2),
    models: tuple[str, ...] = ARCH,
) -> dict[str, object]:
    if quick:
        models, batches, threads, image = ("kws_mlp",), (1, 4), (1,), 32
    rows = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_dir:
        for name in models:
            path, program, shape = prepare(name, image, Path(tmp_dir))
            for count in threads:
                set_threads(count)
                for batch in batches:
                    rows.append(bench(name, path, program, shape, batch, reps))
                    line = fmt_table(HEADER, [_cells(rows[-1])]).splitlines()[-1]
                    print(line, file=sys.stderr, flush=True)  # progress
    return {"image": image, "reps": reps, "rows": rows, "seconds": time.perf_counter() - t0}


HEADER = [
    "model",
    "input",
    "batch",
    "threads",
    "analog layers",
    "ort ms",
    "emulator ms",
    "emulator/ort",
    "over ms",
    "floor ms",
    "emulator/floor",
]


def _cells(r: dict[str, object]) -> list[object]:
    return [
        r["model"],
        "x".join(map(str, r["input"])),
        r["batch"],
        r["threads"],
        r["analog_layers"],
        r["ort_ms"],
        r["emulator_ms"],
        r["emulator_vs_ort"],
        r["over_ms"],
        r["floor_ms"],
        r["emulator_vs_floor"],
    ]


def table(result: dict[str, object]) -> str:
    return fmt_table(HEADER, [_cells(r) for r in result["rows"]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--image", type=int, default=64, help="image side for image models")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--models", default=",".join(ARCH))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = run(
        args.quick,
        args.reps,
        args.image,
        tuple(int(b) for b in args.batches.split(",")),
        tuple(int(t) for t in args.threads.split(",")),
        tuple(args.models.split(",")),
    )
    print(" ".join(f"{k}={v}" for k, v in machine_info().items()))
    print(f"image models at {result['image']} x {result['image']}")
    print(table(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

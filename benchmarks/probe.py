"""Peak memory (and time) of one workload in this fresh interpreter; prints one JSON line.

    python benchmarks/probe.py infer --runtime emulator --onnx M.onnx --program M.anacc \
        --arch bundled:digits_cnn --data test.npz --batch 1024 [--threads T]
    python benchmarks/probe.py compile --onnx M.onnx --calib calib.npz [--threads T]

``infer`` imports what any runtime needs and takes the peak RSS at that point as the baseline,
then loads the runtime (onnxruntime session, torch module with the same weights, or the
compiled program with an emulator instance) and the batch, runs one sample, and runs the
batch twice (the first run grows caches and arenas). ``total_mb``: the peak RSS above the
baseline (model, runtime state, data and the run). ``delta_mb``: the peak above the resident
set just before the batch runs, after handing freed heap memory back (the run's own working
memory).

``compile`` imports everything the compiler needs, takes the peak RSS at that point as the
baseline (``baseline_mb``: interpreter, numpy, torch, onnx, onnxruntime and anacc), then
compiles and saves the program to a temporary file. ``compile_mb`` and ``total_mb`` are the
peak RSS above the baseline after compiling and after saving.

The peak is the kernel's high-water mark of the resident set (``VmHWM`` in
``/proc/self/status``; ``ru_maxrss`` elsewhere, which after ``exec`` may still hold the
parent's peak). For ``delta_mb`` the mark is reset (writing ``5`` to
``/proc/self/clear_refs``); where that is refused it still holds the loading peak and
``method`` says ``no-reset``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import resource
import tempfile
import time
from pathlib import Path


def _status_mb(field: str) -> float | None:
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return None


def peak_mb() -> float:
    """Peak RSS of this process image. ``VmHWM`` rather than ``ru_maxrss``: after ``exec``
    the latter still holds the parent's peak."""
    peak = _status_mb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    rss = _status_mb("VmRSS")
    return rss if rss is not None else peak_mb()


def reset_peak() -> bool:
    """Hand freed heap memory back (glibc ``malloc_trim``) and restart the peak mark at the
    current resident set; False where the kernel refuses the reset."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to hand back
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def infer(args: argparse.Namespace) -> dict[str, object]:
    import netgen
    import numpy as np
    import torch
    from _common import (
        bundled,
        bundled_torch,
        ort_session,
        tile_rows,
        torch_twin,
        training_script,
    )
    from anacc.runtime.backends import get_backend
    from anacc.runtime.session import run_program

    import anacc

    kind, _, name = args.arch.partition(":")
    if kind == "bundled":  # its training script's imports belong to every runtime's baseline
        training_script(bundled(name))
    torch.set_num_threads(args.threads)
    baseline = peak_mb()
    if args.data.startswith("random:"):
        shape = tuple(int(d) for d in args.data.split(":", 1)[1].split("x"))
        x = np.random.default_rng(0).standard_normal((args.batch, *shape), dtype=np.float32)
    else:
        with np.load(args.data) as d:
            x = tile_rows(d["input"], args.batch)
    if args.runtime == "ort":
        sess = ort_session(args.onnx)

        def work(batch: np.ndarray) -> object:
            return sess.run(None, {"input": batch})
    elif args.runtime == "torch":
        if kind == "bundled":
            module = bundled_torch(bundled(name))
        else:
            module = torch_twin(args.onnx, netgen.resnet18())

        def work(batch: np.ndarray) -> object:
            with torch.inference_mode():
                return module(torch.from_numpy(batch))
    else:
        program = anacc.Program.load(args.program)
        backend = get_backend(args.runtime, program.chip, program.profile, seed=0)

        def work(batch: np.ndarray) -> object:
            return run_program(program, {"input": batch}, backend=backend, batch_size=args.batch)

    work(x[:1])  # page in the code and one-off state, so the peak is the batch's own
    loaded = peak_mb()
    reset = reset_peak()
    before = rss_mb()
    work(x)
    work(x)
    peak = peak_mb()
    return {
        "baseline_mb": baseline,
        "total_mb": max(peak, loaded) - baseline,
        "rss_before_mb": before,
        "delta_mb": max(0.0, peak - before),
        "method": "reset" if reset else "no-reset",
    }


def compile_(args: argparse.Namespace) -> dict[str, object]:
    import numpy as np  # noqa: F401
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import torch
    from anacc.compiler.pipeline import compile_model
    from anacc.compiler.program_io import save_program

    torch.set_num_threads(args.threads)
    baseline = peak_mb()
    t0 = time.perf_counter()
    program = compile_model(args.onnx, calib=args.calib)
    t1 = time.perf_counter()
    compiled = peak_mb()
    with tempfile.TemporaryDirectory() as tmp:
        save_program(program, Path(tmp) / "model.anacc")
        t2 = time.perf_counter()
    total = peak_mb()
    return {
        "baseline_mb": baseline,
        "compile_s": t1 - t0,
        "save_s": t2 - t1,
        "compile_mb": compiled - baseline,
        "total_mb": total - baseline,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p_inf = sub.add_parser("infer")
    p_inf.add_argument("--runtime", choices=("ort", "torch", "emulator", "quantized", "ideal"))
    p_inf.add_argument("--onnx", required=True)
    p_inf.add_argument("--program")
    p_inf.add_argument("--arch", default="")
    p_inf.add_argument("--data", required=True, help="an .npz with 'input', or random:CxHxW")
    p_inf.add_argument("--batch", type=int, required=True)
    p_inf.add_argument("--threads", type=int, default=1)
    p_cmp = sub.add_parser("compile")
    p_cmp.add_argument("--onnx", required=True)
    p_cmp.add_argument("--calib", required=True)
    p_cmp.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    result = infer(args) if args.what == "infer" else compile_(args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

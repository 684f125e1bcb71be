"""What every benchmark table shares: machine facts, interleaved timing, the bundled models and
their data, torch twins of the ONNX models, and peak-memory probes in fresh subprocesses.

Timing: :func:`interleaved` warms every candidate up, then repeats ``candidate 1, candidate
2, ...`` so a slow phase of a shared machine hits all of them alike; each timing loops a
candidate often enough to span ``min_seconds``. A figure is the median of its repetitions and
a ratio is the median of the per-repetition ratios to the reference measured beside it.

Memory: :func:`probe` runs ``benchmarks/probe.py`` in a fresh interpreter. The probe loads
what it needs, resets the kernel's peak-RSS mark (``/proc/self/clear_refs``; where that is not
allowed it records the resident set instead), runs the workload and reports the peak RSS above
that point (``VmHWM``): the memory the workload itself adds, without the interpreter,
torch and the model already loaded.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


@dataclass(frozen=True)
class Bundled:
    """A model shipped in ``models/`` and the name of its data set."""

    name: str
    dataset: str
    script: str  # module under models/ with build_model()

    @property
    def onnx(self) -> Path:
        return MODELS / f"{self.name}.onnx"

    def data(self, split: str) -> dict[str, np.ndarray]:
        with np.load(MODELS / "data" / f"{self.dataset}_{split}.npz") as d:
            return {k: d[k] for k in d.files}


BUNDLED = (
    Bundled("digits_mlp", "digits", "train_digits_mlp"),
    Bundled("digits_cnn", "digits_img", "train_digits_cnn"),
    Bundled("mnist1d_mlp", "mnist1d", "train_mnist1d_mlp"),
    Bundled("bss2_mnist", "mnist", "train_bss2_mnist"),
    Bundled("kws_lstm", "kws", "train_kws_lstm"),
)


def bundled(name: str) -> Bundled:
    return next(b for b in BUNDLED if b.name == name)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, object]:
    import onnxruntime

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
        "platform": platform.platform(),
    }


def set_threads(threads: int) -> None:
    """One thread count for torch (here) and onnxruntime (see :func:`ort_session`)."""
    torch.set_num_threads(threads)


def ort_session(path: str | Path):
    """An onnxruntime CPU session with as many intra-op threads as torch uses, its workers
    not busy-waiting after a run (as anacc's own digital sessions): in an interleaved
    comparison a spinning pool holds the core that the other candidate's threads need.
    Spinning costs onnxruntime alone little except at batch 1 with two threads (measured
    here: MobileNetV2 0.46 ms with, 0.93 ms without; ResNet-18 at batch 32 46.7 / 47.4 ms;
    with one thread there are no workers and nothing changes)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _seconds(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def interleaved(
    fns: dict[str, Callable[[], object]],
    reference: str,
    reps: int,
    *,
    warmup: int = 1,
    min_seconds: float = 0.01,
) -> dict[str, dict[str, float]]:
    """Per candidate: median seconds per call, median ratio to ``reference``, and the
    per-repetition ``times`` (for ratios between other pairs, :func:`median_ratio`)."""
    calls = {}
    for name, fn in fns.items():
        for _ in range(warmup - 1):
            fn()
        once = _seconds(fn, 1)  # the last warm-up call; a slow one sets calls to 1 already
        if once < min_seconds:
            once = _seconds(fn, 1)
        calls[name] = max(1, min(1000, int(min_seconds / max(once, 1e-9)) + 1))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(_seconds(fn, calls[name]))
    return {
        name: {
            "seconds": statistics.median(t),
            "ratio": median_ratio(t, times[reference]),
            "times": t,
        }
        for name, t in times.items()
    }


def median_ratio(times: list[float], reference: list[float]) -> float:
    """Median over repetitions of ``times[i] / reference[i]``."""
    return statistics.median(a / b for a, b in zip(times, reference, strict=True))


def tile_rows(x: np.ndarray, n: int) -> np.ndarray:
    """``n`` samples: ``x`` repeated along the batch axis as often as needed, then cut."""
    reps = -(-n // len(x))
    return np.ascontiguousarray(np.concatenate([x] * reps)[:n])


def torch_twin(onnx_path: str | Path, module: torch.nn.Module) -> torch.nn.Module:
    """``module`` (an eval-mode torch model of the same architecture) with the ONNX file's
    weights, matched by name (the TorchScript exporter keeps ``state_dict`` names)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(onnx_path))
    weights = {
        t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in proto.graph.initializer
    }
    weights.update(_lstm_weights(proto, module, weights))
    state = module.state_dict()
    missing = [k for k in state if k not in weights and not k.endswith("num_batches_tracked")]
    assert not missing, f"{onnx_path}: no initializer for {missing}"
    module.load_state_dict({k: weights.get(k, v) for k, v in state.items()})
    return module.eval()


def _lstm_weights(
    proto, module: torch.nn.Module, weights: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The ``state_dict`` entries of the module's one-layer, one-direction ``nn.LSTM`` from
    the graph's LSTM node (the exporter folds them into its W, R and B): ONNX orders the
    gates input, output, forget, cell; torch input, forget, cell, output."""
    lstms = [(n, m) for n, m in module.named_modules() if isinstance(m, torch.nn.LSTM)]
    nodes = [n for n in proto.graph.node if n.op_type == "LSTM"]
    if not lstms:
        return {}
    assert len(lstms) == 1 == len(nodes), "one LSTM (and one LSTM node) is all this maps"
    (name, lstm), node = lstms[0], nodes[0]
    assert lstm.num_layers == 1 and not lstm.bidirectional, "one layer, one direction"
    h = lstm.hidden_size
    order = torch.cat([torch.arange(h) + k * h for k in (0, 2, 3, 1)])  # i f c o from i o f c
    w, r = weights[node.input[1]][0], weights[node.input[2]][0]
    b = weights[node.input[3]][0]
    prefix = f"{name}." if name else ""
    return {
        f"{prefix}weight_ih_l0": w[order],
        f"{prefix}weight_hh_l0": r[order],
        f"{prefix}bias_ih_l0": b[: 4 * h][order],
        f"{prefix}bias_hh_l0": b[4 * h :][order],
    }


def training_script(model: Bundled):
    """The module under ``models/`` that trains ``model`` (it defines ``build_model``)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"models.{model.script}")


def bundled_torch(model: Bundled) -> torch.nn.Module:
    """The bundled model as an eval-mode torch module with the shipped weights."""
    return torch_twin(model.onnx, training_script(model).build_model())


def probes(arg_lists: list[list[str]], timeout: float = 600.0) -> list[dict[str, float]]:
    """Run ``benchmarks/probe.py ARGS`` for each argument list, all at once, each in a fresh
    interpreter; their JSON reports in order. Only for memory: the probes share the CPU."""
    script = str(Path(__file__).with_name("probe.py"))
    procs = [
        subprocess.Popen(
            [sys.executable, script, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in arg_lists
    ]
    reports = []
    for args, proc in zip(arg_lists, procs, strict=True):
        out, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"probe {' '.join(args)} failed:\n{err[-2000:]}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def probe(args: list[str], timeout: float = 600.0) -> dict[str, float]:
    """Run ``benchmarks/probe.py ARGS`` alone in a fresh interpreter; its JSON report."""
    return probes([args], timeout)[0]


def fmt_table(header: list[str], rows: list[list[object]]) -> str:
    """A plain-text table, columns right-aligned, as a markdown pipe table."""
    cells = [header, *[[_cell(c) for c in r] for r in rows]]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(header))]
    lines = [
        "| " + " | ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=True)) + " |"
        for r in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3f}"
    return str(value)


def script_main(
    doc: str,
    run: Callable[..., dict],
    table: Callable[[dict], str],
    *,
    reps: int | None = None,
    memory_flag: bool = False,
) -> None:
    """The command line every ``bench_*.py`` script shares: ``--quick``, ``--threads``,
    ``--out`` and, where the table has them, ``--reps`` and ``--no-memory``."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    if reps is not None:
        parser.add_argument("--reps", type=int, default=reps)
    parser.add_argument("--threads", type=int, default=1)
    if memory_flag:
        parser.add_argument("--no-memory", action="store_true", help="skip the memory probes")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    set_threads(args.threads)
    extra = {}
    if memory_flag:
        extra["memory"] = not args.no_memory
    result = run(args.quick, *([args.reps] if reps is not None else []), **extra)
    print(" ".join(f"{k}={v}" for k, v in machine_info().items()))
    print(table(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))

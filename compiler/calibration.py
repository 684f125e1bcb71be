"""Activation statistics of each analog layer's input, gathered from calibration data.

The compiled float graph (:func:`anacc.compiler.emit.graph_model`) runs in onnxruntime with
every analog layer's input tensor exposed as an extra output, batch by batch. Per layer (a
layer used several times, such as the recurrent weights of an unrolled LSTM, pools all its
uses) we keep streaming statistics (min, max, an exponential moving average of the per-batch
extremes), a uniform subsample of the input values (for percentile and MSE scale searches)
and a subsample of the layer's input rows, i.e. of the vectors the chip will see (im2col
patches for a convolution), for gain selection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from anacc.compiler.conv import ConvGeometry
from anacc.compiler.datafile import Dataset

from anacc.errors import DataError


@dataclass
class LayerStats:
    """Statistics of one analog layer's input over the calibration set."""

    min: float
    max: float
    ema_min: float
    ema_max: float
    values: np.ndarray  # float32 (n,), a uniform subsample of all input values
    rows: np.ndarray  # float32 (m, in_features), a subsample of the chip's input vectors
    samples: int


@dataclass(frozen=True)
class LayerProbe:
    """The tensors that feed one layer (one per use) and, for a convolution, its geometry."""

    tensors: tuple[str, ...]
    conv: ConvGeometry | None = None


@dataclass
class _Accumulator:
    values: list[np.ndarray] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)
    extremes: tuple[float, float, float, float] | None = None  # min, max, ema_min, ema_max

    def add_extremes(self, lo: float, hi: float, momentum: float) -> None:
        if self.extremes is None:
            self.extremes = (lo, hi, lo, hi)
            return
        mn, mx, emn, emx = self.extremes
        self.extremes = (
            min(mn, lo),
            max(mx, hi),
            momentum * emn + (1 - momentum) * lo,
            momentum * emx + (1 - momentum) * hi,
        )


def session(model: onnx.ModelProto, what: str):
    """An onnxruntime session of ``model`` (one thread, quiet); a DataError if it fails."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(
            model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise DataError(f"{what}: onnxruntime cannot run the model ({exc})") from None


def collect_stats(
    model: onnx.ModelProto,
    data: Dataset,
    probes: Mapping[str, LayerProbe],
    *,
    rng: np.random.Generator,
    batch_size: int = 64,
    max_values: int = 200_000,
    max_rows: int = 2048,
    ema_momentum: float = 0.9,
) -> dict[str, LayerStats]:
    """Run ``model`` (whose outputs include every probed tensor) over ``data`` and summarize
    every probed layer's input."""
    inputs = {i.name for i in model.graph.input}
    fetch = sorted({t for p in probes.values() for t in p.tensors if t not in inputs})
    sess = session(model, "calibration")
    feeds = [f for _, f in data.runs(batch_size)]
    acc = {name: _Accumulator() for name in probes}
    for feed in feeds:
        outs = dict(zip(fetch, sess.run(fetch, feed), strict=True)) if fetch else {}
        outs.update(feed)
        for name, probe in probes.items():
            tensors = [np.asarray(outs[t], dtype=np.float32) for t in probe.tensors]
            _add(acc[name], tensors, probe.conv, len(feeds), rng, max_values, max_rows)
            lo = min(float(x.min()) for x in tensors)
            hi = max(float(x.max()) for x in tensors)
            acc[name].add_extremes(lo, hi, ema_momentum)
    result = {}
    for name, a in acc.items():
        assert a.extremes is not None, "calibration data has at least one batch"
        mn, mx, emn, emx = a.extremes
        result[name] = LayerStats(
            mn, mx, emn, emx, np.concatenate(a.values), np.concatenate(a.rows), data.samples
        )
    return result


def _add(
    acc: _Accumulator,
    tensors: Sequence[np.ndarray],
    conv: ConvGeometry | None,
    n_batches: int,
    rng: np.random.Generator,
    max_values: int,
    max_rows: int,
) -> None:
    keep = max(1, max_values // (n_batches * len(tensors)))
    keep_rows = max(1, max_rows // (n_batches * len(tensors)))
    for x in tensors:
        flat = x.reshape(-1)
        acc.values.append(flat if flat.size <= keep else rng.choice(flat, keep, replace=False))
        if conv is not None:
            rows = conv.sample_rows(x, keep_rows, rng)
        else:
            rows = x.reshape(-1, x.shape[-1])
            if rows.shape[0] > keep_rows:
                rows = rows[rng.choice(rows.shape[0], keep_rows, replace=False)]
        acc.rows.append(rows)

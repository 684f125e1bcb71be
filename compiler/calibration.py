"""Activation statistics of each analog layer's input, gathered from calibration data.

The float source model runs in onnxruntime with every analog layer's input tensor exposed as
an extra graph output, batch by batch. Per layer we keep streaming statistics (min, max, an
exponential moving average of the per-batch extremes), a uniform subsample of the input values
(for percentile and MSE scale searches) and a subsample of the layer's input rows, i.e. of the
vectors the chip will see (im2col patches for a convolution), for gain selection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from anacc.compiler.quant import conv_output_shape

from anacc.errors import DataError


@dataclass
class LayerStats:
    """Statistics of one analog layer's input tensor over the calibration set."""

    min: float
    max: float
    ema_min: float
    ema_max: float
    values: np.ndarray  # float32 (n,), a uniform subsample of all input values
    rows: np.ndarray  # float32 (m, in_features), a subsample of the chip's input vectors
    samples: int


@dataclass(frozen=True)
class LayerProbe:
    """Which tensor feeds a layer and, for a lowered conv, its geometry."""

    tensor: str
    conv: dict | None = None


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    # The batch dimension is free at run time whatever the exporter wrote.
    for vi in list(m.graph.input) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if len(dims) and not (dims[0].HasField("dim_value") and dims[0].dim_value == 1):
            dims[0].dim_param = "N"
    del m.graph.value_info[:]
    present = {o.name for o in m.graph.output}
    for name in names:
        if name not in present:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
            present.add(name)
    return m


def _conv_rows(x: np.ndarray, conv: dict, keep: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``keep`` random rows of ``im2col(x)`` (all of them if there are no more), drawn
    as ``rows[rng.choice(len(rows), keep)]`` would draw them, without building the others."""
    out_spatial = conv_output_shape(tuple(x.shape[2:]), conv)
    positions = math.prod(out_spatial)
    n_rows = x.shape[0] * positions
    pick = np.arange(n_rows) if n_rows <= keep else rng.choice(n_rows, keep, replace=False)
    k, s, d, p = conv["kernel_shape"], conv["strides"], conv["dilations"], conv["pads"]
    n = len(k)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p[i], p[i + n]) for i in range(n)])
    # index arrays broadcasting to (rows, C, *kernel): the sample, the channel, and per
    # spatial axis the input coordinate of each tap (output position * stride + tap * dilation)
    ones = (1,) * n
    index = [(pick // positions).reshape(-1, 1, *ones), np.arange(x.shape[1]).reshape(1, -1, *ones)]
    out_pos = np.unravel_index(pick % positions, out_spatial)
    for i in range(n):
        coord = out_pos[i][:, None] * s[i] + np.arange(k[i]) * d[i]  # (rows, k_i)
        index.append(coord.reshape(-1, 1, *(k[i] if j == i else 1 for j in range(n))))
    return xp[tuple(index)].reshape(len(pick), -1)


def collect_stats(
    model: onnx.ModelProto,
    inputs: dict[str, np.ndarray],
    probes: dict[str, LayerProbe],
    *,
    rng: np.random.Generator,
    batch_size: int = 64,
    max_values: int = 200_000,
    max_rows: int = 2048,
    ema_momentum: float = 0.9,
) -> dict[str, LayerStats]:
    """Run the float model over ``inputs`` and summarize every probed layer's input."""
    import onnxruntime as ort

    tensors = sorted({p.tensor for p in probes.values()})
    graph_inputs = {i.name for i in model.graph.input}
    fetch = [t for t in tensors if t not in graph_inputs]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(
            _with_outputs(model, fetch).SerializeToString(),
            opts,
            providers=["CPUExecutionProvider"],
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise DataError(f"calibration: onnxruntime cannot run the model ({exc})") from None
    n = next(iter(inputs.values())).shape[0]
    if any(
        len(i.type.tensor_type.shape.dim)
        and i.type.tensor_type.shape.dim[0].HasField("dim_value")
        and i.type.tensor_type.shape.dim[0].dim_value == 1
        for i in model.graph.input
        if i.name not in {t.name for t in model.graph.initializer}
    ):
        batch_size = 1  # the exporter fixed the batch at 1
    acc: dict[str, dict] = {name: {"values": [], "rows": []} for name in probes}
    n_batches = (n + batch_size - 1) // batch_size
    for b0 in range(0, n, batch_size):
        feed = {k: v[b0 : b0 + batch_size] for k, v in inputs.items()}
        outs = dict(zip(fetch, sess.run(fetch, feed), strict=True)) if fetch else {}
        outs.update({k: v for k, v in feed.items() if k in tensors})
        for name, probe in probes.items():
            x = np.asarray(outs[probe.tensor], dtype=np.float32)
            a = acc[name]
            lo, hi = float(x.min()), float(x.max())
            if "min" not in a:
                a.update(min=lo, max=hi, ema_min=lo, ema_max=hi)
            else:
                a["min"], a["max"] = min(a["min"], lo), max(a["max"], hi)
                a["ema_min"] = ema_momentum * a["ema_min"] + (1 - ema_momentum) * lo
                a["ema_max"] = ema_momentum * a["ema_max"] + (1 - ema_momentum) * hi
            flat = x.reshape(-1)
            keep = max(1, max_values // n_batches)
            a["values"].append(flat if flat.size <= keep else rng.choice(flat, keep, replace=False))
            keep_rows = max(1, max_rows // n_batches)
            if probe.conv:
                rows = _conv_rows(x, probe.conv, keep_rows, rng)
            else:
                rows = x.reshape(-1, x.shape[-1])
                if rows.shape[0] > keep_rows:
                    rows = rows[rng.choice(rows.shape[0], keep_rows, replace=False)]
            a["rows"].append(rows)
    return {
        name: LayerStats(
            min=a["min"],
            max=a["max"],
            ema_min=a["ema_min"],
            ema_max=a["ema_max"],
            values=np.concatenate(a["values"]),
            rows=np.concatenate(a["rows"]),
            samples=n,
        )
        for name, a in acc.items()
    }

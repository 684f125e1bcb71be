"""One analog step: a layer's input tensor through the chip and back to float.

:func:`analog_forward` is the one analog code path, for dense layers and convolutions alike:

1. the input encoding, ``(scale, offset)`` of one input LSB: the program's static one, or
   for a program compiled without calibration data the batch's own (from its extremes);
2. the input encoded into the chip's unsigned range per the layer's signed-input strategy
   (``split``: the positive and negative parts stacked along the batch), element by element
   on the input tensor, in one compiled pass that also counts NaN entries and the inputs the
   encoding clips (:func:`encoded_rows`, :mod:`~anacc.runtime.encoding`);
3. the chip's input vectors: the rows of the encoded tensor, or for a convolution its im2col
   patches, from the encoded input written channels-last inside a border of the encoding of
   zero (so encoding before the im2col reads the same integers as encoding the patches, for
   a fraction of the work);
4. one backend call with all of the layer's tiles, row chunks and parts;
5. the digital sum of the per-run ADC reads over row chunks (and parts), rescaled to float,
   plus the shift correction and the bias, folded back into the output's shape. A run whose
   rows hold no weight for a column (a grouped convolution's off-diagonal blocks) reads only
   its neuron's offset and noise there: the host knows the weights and leaves such reads out
   of the sum (:func:`used_reads`). A convolution's output is channel-major; where its
   columns would fall in one cache set (:func:`set_aliased`) the sum is written a column at a
   time.

The ``ideal`` backend gets the float rows instead. Inputs outside the range the encoding
represents are clipped; :class:`ClipCount` counts them (a convolution's input entries count
once per patch they appear in).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from anacc.compiler.program import ProgramLayer
from anacc.compiler.quant import Encoding, zero_code
from anacc.runtime import encoding
from anacc.runtime.backends import Backend, readout
from anacc.runtime.backends.base import LayerCache
from anacc.runtime.profiler import Profiler

from anacc.errors import DataError

# chip inputs and per-run reads of one block of samples (see analog_forward)
BLOCK_BYTES = 4 * 2**20
_NO_READS = np.zeros((0, 1, 1), np.float32)
# the host's L1 data cache (x86-64: 64 sets of 64-byte lines, 8 ways or more); see set_aliased
CACHE_SETS = 64
CACHE_LINE = 64
CACHE_WAYS = 8
# every read is used (see used_reads)
_ALL_USED = np.zeros((0, 0), np.float32)
_USED = LayerCache()


@dataclass
class ClipCount:
    """Inputs one analog layer received, and how many lay outside its calibrated range."""

    clipped: int = 0
    inputs: int = 0

    @property
    def fraction(self) -> float:
        return self.clipped / self.inputs if self.inputs else 0.0


@dataclass
class LayerTrace:
    """What one analog layer saw during a run (collected only when tracing is on)."""

    adc: list[torch.Tensor] = field(default_factory=list)  # per call: (rows, chunks, out)
    clipped_inputs: int = 0
    inputs: int = 0


def extremes(layer: ProgramLayer, x: torch.Tensor) -> tuple[float, float] | None:
    """Smallest and largest entry (None if empty); a NaN is a :class:`DataError`."""
    if not x.numel():
        return None
    # one pass for the NaN check, a dynamic scale and the clip count (aminmax gives NaN if any
    # entry is NaN)
    lo, hi = (float(v) for v in torch.aminmax(x))
    if math.isnan(lo):
        raise DataError(nan_message(layer, x))
    return lo, hi


def nan_message(layer: ProgramLayer, x: torch.Tensor) -> str:
    return (
        f"analog layer {layer.name} received {int(torch.isnan(x).sum())} NaN values: an "
        "earlier step overflowed float32; scale the input data into a moderate range"
    )


def input_encoding(
    layer: ProgramLayer, input_max: int, bounds: tuple[float, float] | None
) -> Encoding:
    """The layer's static encoding, or for a program compiled without calibration data the
    one the batch's extremes ``bounds`` call for."""
    if layer.input_scale is not None:
        return Encoding(layer.input_scale, layer.input_offset)
    lowest, highest = bounds if bounds is not None else (0.0, 0.0)
    offset = 0.0
    if layer.signed == "split":
        span = max(-lowest, highest)
    elif layer.signed == "shift":
        offset = min(lowest, 0.0)
        span = highest - offset
    else:
        span = highest
    return Encoding(span / input_max if span > 0 else 1.0, offset)


def count_clipped(
    layer: ProgramLayer,
    x: torch.Tensor,
    enc: Encoding,
    input_max: int,
    bounds: tuple[float, float] | None,
    copies: torch.Tensor | None = None,
) -> int:
    """Entries of ``x`` outside the range ``enc`` represents; a side nothing passes (by
    ``bounds``) is not counted; with ``copies`` (broadcast against ``x``) each entry counts
    that many times."""
    hi = enc.offset + enc.scale * input_max
    lo = -hi if layer.signed == "split" else enc.offset

    values = x.detach().numpy()
    weights = None if copies is None else copies.numpy().astype(np.float64).reshape(-1)

    def count(mask: np.ndarray) -> int:
        # numpy: a fraction of the time of torch's boolean kernels; few entries clip
        if weights is None:
            return int(np.count_nonzero(mask))
        return round(float(weights[np.flatnonzero(mask) % weights.size].sum()))

    if bounds is None or lo > hi:
        return count((values < lo) | (values > hi))
    # float32 entries >= a float64 bound also pass the bound rounded to float32
    below = count(values < lo) if bounds[0] < lo else 0
    above = count(values > hi) if bounds[1] > hi else 0
    return below + above


def encoded_rows(
    layer: ProgramLayer, x: torch.Tensor, enc: Encoding, input_max: int, pad_value: float
) -> tuple[torch.Tensor, int, int]:
    """The chip's input vectors of float32 ``x`` encoded, ``(parts * vectors,
    in_features)`` (``split``: the positive parts of every vector, then the negative ones),
    the number of NaN entries of ``x`` and how many entries lie outside the range ``enc``
    represents (a convolution's entries count once per patch that reads them). One compiled
    pass over ``x`` (:mod:`~anacc.runtime.encoding`); a convolution's patches read the
    encoded input channels-last inside a border of ``pad_value`` (the code of 0)."""
    high = enc.offset + enc.scale * input_max
    low = -high if layer.signed == "split" else enc.offset
    terms = np.array([enc.scale, enc.offset, input_max, low, high])
    mode = encoding.MODES[layer.signed]
    parts = 2 if layer.signed == "split" else 1
    conv = layer.conv
    if conv is None:
        flat = np.ascontiguousarray(x.detach().reshape(-1, x.shape[-1]).numpy())
        out = np.empty((parts * flat.shape[0], flat.shape[1]), np.float32)
        nans, clipped = encoding.encode_rows(flat, mode, terms, out)
        return torch.from_numpy(out), nans, clipped
    images = x.detach() if conv.rank == 2 else x.detach().unsqueeze(2)
    n, c, h, w = images.shape
    pads = conv.pads_2d((h, w))
    padded = np.empty((parts * n, h + pads[0] + pads[2], w + pads[1] + pads[3], c), np.float32)
    copies = conv.multiplicity(tuple(x.shape[2:])).numpy().reshape(h, w).astype(np.int64)
    nans, clipped = encoding.encode_channels_last(
        np.ascontiguousarray(images.numpy()),
        mode,
        terms,
        pad_value,
        np.asarray(pads, np.int64),
        copies,
        padded,
    )
    grid = conv.patch_grid((h, w))
    if c == 1 or grid[0] * grid[1] == 1:
        # one channel or one tap: torch's strided copy (or a view) moves longer runs
        return conv.patches(torch.from_numpy(padded), (h, w)), nans, clipped
    rows = np.empty((parts * n * grid[6] * grid[7], c * grid[0] * grid[1]), np.float32)
    encoding.gather_patches(padded, np.asarray(grid, np.int64), rows)
    return torch.from_numpy(rows), nans, clipped


def set_aliased(positions: int, columns: int) -> bool:
    """Whether one output row of a channel-major block (``columns`` values ``positions``
    float32 apart) falls on more lines of one L1 cache set than the set holds
    (:data:`CACHE_SETS` sets of :data:`CACHE_LINE` bytes, :data:`CACHE_WAYS` ways): then
    :func:`~anacc.runtime.backends.readout.combine_channel_major` writes the block a column
    at a time (for a 32 x 32 output, every column falls in one set: about 4x faster); else
    :func:`~anacc.runtime.backends.readout.combine` writes it a row at a time (faster for
    fewer columns a set)."""
    stride = 4 * positions
    if stride % CACHE_LINE:
        return False
    sets = CACHE_SETS // math.gcd(CACHE_SETS, stride // CACHE_LINE)
    return columns > CACHE_WAYS * sets


def used_reads(layer: ProgramLayer) -> np.ndarray:
    """``(row chunks, out_features)`` float32: 1 where the chunk's rows hold a nonzero integer
    weight for the column, else 0 (its read is the neuron's offset and noise alone, and the
    digital sum leaves it out); an empty array when every read is used. Built once per
    version of the layer's weights."""
    a = layer.analog

    def build() -> np.ndarray:
        weight_q = np.asarray(a.weight_q)
        used = np.stack([(weight_q[start:stop] != 0).any(axis=0) for start, stop in a.row_chunks])
        return _ALL_USED if used.all() else used.astype(np.float32)

    # keyed by the tiles object (a new mapping is a new tuple): row_chunks sorts the tiles
    return _USED.get(a, (a.version, a.tiles), build)


def rescale(layer: ProgramLayer, gain: float, reads: torch.Tensor, enc: Encoding) -> torch.Tensor:
    """ADC reads ``(parts * rows, chunks, out)`` -> float ``(rows, out)``: the digital sum over
    the row chunks (the used reads, :func:`used_reads`) and parts, rescaled, plus the shift
    correction and the bias. The torch form of what :func:`analog_forward` does with
    :func:`~anacc.runtime.backends.readout.combine` (the same float32 operations)."""
    rows = reads.shape[0] // (2 if layer.signed == "split" else 1)
    used = used_reads(layer)
    if used.size:
        reads = reads * torch.from_numpy(used)
    y = reads[:rows].sum(dim=1)
    if layer.signed == "split":  # the digital combination: positive minus negative part
        y.sub_(reads[rows:].sum(dim=1))
    scale, shift, bias = (torch.from_numpy(t) for t in digital_terms(layer, gain, enc))
    return y.mul_(scale).add_(shift).add_(bias)


def digital_terms(
    layer: ProgramLayer, gain: float, enc: Encoding
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The digital side's terms per output column, as float32 arrays ``(scale, shift,
    bias)``: the summed reads times ``scale``, plus the shift correction ``shift`` (zero
    unless the input encoding is shifted) and the bias (zero without one)."""
    a = layer.analog
    width = a.out_features
    w_scale = np.asarray(layer.weight_scale, dtype=np.float32)
    # float32 times the scalar rounded to float32 (numpy's and torch's rule alike)
    scale = np.empty(width, np.float32)
    scale[:] = w_scale * (enc.scale / (gain * a.num_sends))
    shift = np.zeros(width, np.float32)
    if layer.signed == "shift" and enc.offset != 0.0:
        w_deq = torch.from_numpy(a.weight_q.astype(np.float32)) * torch.from_numpy(w_scale)
        shift = (enc.offset * w_deq.sum(dim=0)).numpy()  # torch's summation order
    bias = np.zeros(width, np.float32) if layer.bias is None else layer.bias
    return (
        scale,
        np.ascontiguousarray(shift, dtype=np.float32),
        np.ascontiguousarray(bias, dtype=np.float32),
    )


def rows_of(layer: ProgramLayer, x: torch.Tensor, pad_value: float = 0.0) -> torch.Tensor:
    """The chip's input vectors of ``x``: im2col patches for a convolution, else the rows of
    the last axis."""
    if layer.conv is not None:
        return layer.conv.im2col(x, pad_value)
    return x.reshape(-1, x.shape[-1])


def fold(layer: ProgramLayer, y: torch.Tensor, x_shape: torch.Size) -> torch.Tensor:
    """Output rows back into the output tensor's shape (inverse of :func:`rows_of`)."""
    conv = layer.conv
    if conv is not None:
        out_spatial = conv.output_shape(tuple(x_shape[2:]))
        return conv.col2im(y, x_shape[0], out_spatial)
    return y.reshape((*x_shape[:-1], y.shape[-1]))


def block_samples(layer: ProgramLayer, x_shape: torch.Size, block_bytes: int) -> int:
    """Samples (axis 0 of the layer's input) per block: as many as keep one block's chip
    input vectors and per-run reads (float32) within ``block_bytes``, at least one."""
    a = layer.analog
    rows = math.prod(x_shape[1:-1]) if layer.conv is None else layer.conv.positions(x_shape[2:])
    per_sample = 4 * rows * (a.in_features + len(a.row_chunks) * a.out_features)
    return max(1, block_bytes // max(per_sample, 1))


def analog_forward(
    layer: ProgramLayer,
    x: torch.Tensor,
    backend: Backend,
    clip: ClipCount | None = None,
    trace: LayerTrace | None = None,
    profiler: Profiler | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> torch.Tensor:
    """``layer(x)`` computed the way the chip computes it (no autograd); see the module
    docstring. Counts clipped inputs into ``clip`` and ``trace`` where given; adds its time
    per kind of work to ``profiler``.

    The samples run in blocks of about ``block_bytes`` of chip inputs and reads (one block
    when tracing): the memory stays bounded and each block's passes run in the cache. The
    parts of a ``split`` layer go in one backend call when the batch is one block, else in
    one call each per block. Every call is a new draw of the noise, so the blocking is part
    of what a seed reproduces (it depends only on the shapes).
    """
    if not backend.quantizes:
        y = backend.linear(layer.analog, rows_of(layer, x))
        if layer.bias is not None:
            y = y + torch.from_numpy(layer.bias)
        return fold(layer, y, x.shape)
    chip = backend.chip
    # a program compiled without calibration data encodes each batch by its own extremes
    bounds = extremes(layer, x) if layer.input_scale is None else None
    enc = input_encoding(layer, chip.input_max, bounds)
    pad = zero_code(layer.signed, enc, chip.input_max)
    x = x.to(torch.float32)
    shape = x.shape if x.dim() > 1 else torch.Size((1, *x.shape))
    samples = shape[0]
    step = samples if trace is not None else block_samples(layer, shape, block_bytes)
    out_features = layer.analog.out_features
    out = x.new_empty(output_shape(layer, x.shape, out_features))
    # dense layers sum their reads straight into the output's rows; a convolution's rows are
    # folded into its channel-major blocks
    rows_out = out.view(-1, out_features) if layer.conv is None else None
    traced: list[list[torch.Tensor]] = [[] for _ in range(2 if layer.signed == "split" else 1)]
    terms = digital_terms(layer, backend.gain_per_send, enc)
    used = used_reads(layer)
    clipped = 0
    for first in range(0, samples, step):
        count = min(step, samples - first)
        # the block's chip inputs, encoded and checked in one pass (a block at a time: the
        # memory stays bounded)
        rows_q, nans, block_clipped = encoded_rows(
            layer, x if count == samples else x[first : first + count], enc, chip.input_max, pad
        )
        if nans:
            raise DataError(nan_message(layer, x))
        clipped += block_clipped
        if profiler is not None:
            profiler.lap("encode/im2col")
        if count == samples and layer.signed == "split":  # both parts of the batch in one call
            reads = backend.mac(layer.analog, rows_q, checked=True)
            half = reads.shape[0] // 2
            part_reads = [reads[:half], reads[half:]]
        else:
            half = rows_q.shape[0] // 2
            parts = [rows_q[:half], rows_q[half:]] if layer.signed == "split" else [rows_q]
            part_reads = [backend.mac(layer.analog, part, checked=True) for part in parts]
        if trace is not None:
            for p, reads in enumerate(part_reads):
                traced[p].append(reads.detach())
        if rows_out is not None:  # (vectors, 1, C)
            n_rows = part_reads[0].shape[0]
            dest = rows_out[first * n_rows // count : (first + count) * n_rows // count]
            dest = dest.unsqueeze(1)
        else:  # (samples, C, positions): channel-major
            dest = out[first : first + count].view(count, out_features, -1)
        pos = part_reads[0].to(torch.float32).numpy()
        neg = part_reads[1].to(torch.float32).numpy() if len(part_reads) == 2 else _NO_READS
        if rows_out is not None:
            readout.combine(pos, neg, *terms, used, dest.numpy())
        elif set_aliased(dest.shape[2], out_features):
            readout.combine_channel_major(pos, neg, *terms, used, dest.numpy())
        else:
            readout.combine(pos, neg, *terms, used, dest.transpose(1, 2).numpy())
        if profiler is not None:
            profiler.lap("rescale")
    if clip is not None or trace is not None:
        if layer.conv is None:
            vectors = x.numel() // x.shape[-1]
        else:
            vectors = layer.conv.positions(tuple(x.shape[2:])) * x.shape[0]
        inputs = layer.analog.in_features * vectors
        if clip is not None:
            clip.clipped += clipped
            clip.inputs += inputs
        if trace is not None:
            trace.clipped_inputs += clipped
            trace.inputs += inputs
            trace.adc.extend(torch.cat(t) if len(t) > 1 else t[0] for t in traced)
    return out


def output_shape(layer: ProgramLayer, x_shape: torch.Size, out_features: int) -> tuple[int, ...]:
    """The shape of ``layer(x)`` for an input of shape ``x_shape``."""
    if layer.conv is not None:
        return (x_shape[0], out_features, *layer.conv.output_shape(tuple(x_shape[2:])))
    return (*x_shape[:-1], out_features)

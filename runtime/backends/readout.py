"""The emulator's readout in one pass: noise, offset, saturation and the ADC, per read.

After the matmul has put each run's charge into the emulator's sample-major read buffer
``(B, R, C)``, every read still needs its noise (a standard normal times the sigma of its
run and number of active inputs), its neuron's offset, the soft saturation beyond the
neuron's linear limits and the ADC (round, clamp to its range). Written as torch operations
these are about ten passes over the buffer and its helpers (normals, sigma gather, offset,
extremes, candidates, rounding); :func:`readout_table` does all of them in one compiled
loop that reads each element once, with the standard normal looked up from the bits of
:class:`~anacc.runtime.backends.noise.NormalSource` in the same loop.

The arithmetic per read is that of the torch form, operation by operation in float32:
``v = charge + (offset + z * sigma)``, minus the dynamic saturation's loss on the columns
that have one; beyond a limit ``e = v - clamp(v, low, high)`` and ``v -= e * |e| / (|e| +
headroom)``; then ``clamp(v, adc_min, adc_max)`` and rounding half to even. (The torch form
let the matmul accumulate the charge onto the noise; where the BLAS kernel adds the buffer at
the end that is the same sum, elsewhere a read can differ in its last bit before rounding.)
:func:`combine` then does the digital side of a block of reads.

The loops compile on first use (numba) and are cached on disk, so a later process loads them.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Loops index row slices from 0 and use numpy's error model (no zero-division check): both
# are needed for the loops to compile to vector code.
_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}
# output rows of one sample that combine_channel_major() sums before it writes them a column
# at a time
_TILE = 32


@njit(inline="always", **_JIT)
def _adc(v, high, low, headroom, adc_min, adc_max):  # pragma: no cover - compiled
    # branch-free: the excess is 0 inside the limits, and then the knee removes nothing
    e = v - min(max(v, low), high)
    v = v - e * abs(e) / (abs(e) + headroom)
    return np.rint(min(max(v, adc_min), adc_max))


@njit(inline="always", **_JIT)
def _active(inputs):  # pragma: no cover - compiled
    count = 0
    for k in range(inputs.size):
        count += inputs[k] != 0.0
    return count


@njit(inline="always", **_JIT)
def _check_tables(buf, xs, variance, offset, high, low, cols, lost):  # pragma: no cover
    """Raise unless the inputs and tables fit the reads (the loops do not check bounds)."""
    batch, runs, width = buf.shape
    if lost.shape != (batch, runs, cols.size):
        raise ValueError("readout: the saturation loss does not match the reads")
    for j in range(cols.size):
        if cols[j] < 0 or cols[j] >= width:
            raise ValueError("readout: a saturating column lies outside the reads")
    if xs.shape[0] != batch or xs.shape[1] != runs:
        raise ValueError("readout: the inputs do not match the reads")
    if offset.shape != (runs, width) or high.shape != (runs, width) or low.shape != (runs, width):
        raise ValueError("readout: the neuron tables do not match the reads")
    if variance.shape[0] != runs or variance.shape[1] > width:
        raise ValueError("readout: the noise variances do not match the reads")


@njit(inline="always", **_JIT)
def _sigma(sigma, filled, variance, floor, r, active):  # pragma: no cover - compiled
    """Run ``r``'s noise sigma per column with ``active`` inputs active: ``sqrt(floor +
    active * variance[r])``, zero on padded columns; computed on first use in a call (a
    batch has far fewer distinct counts than reads) into ``sigma[r, active]``."""
    line = sigma[r, active]
    if not filled[r, active]:
        a = np.float32(active)
        v = variance[r]
        for c in range(v.size):
            line[c] = np.sqrt(floor + a * v[c])
        for c in range(v.size, line.size):
            line[c] = np.float32(0.0)
        filled[r, active] = True
    return line


@njit(inline="always", **_JIT)
def _membrane(reads, z, s, o, cols, lost):  # pragma: no cover - compiled
    """``reads += offset + z * sigma`` on one run's row, then minus the dynamic-saturation
    loss on its columns ``cols`` (in this order: the torch form's float32 sums)."""
    for c in range(reads.size):
        reads[c] = reads[c] + (o[c] + z[c] * s[c])
    for j in range(cols.size):
        reads[cols[j]] = reads[cols[j]] - lost[j]


@njit(**_JIT)
def readout_table(
    buf,
    xs,
    bits,
    table,
    tail_pos,
    tail_val,
    cols,
    lost,
    variance,
    offset,
    high,
    low,
    limits,
):  # pragma: no cover - compiled
    """Reads of ``buf`` ``(B, R, C)`` (float32, contiguous: the charges) in place.

    ``xs`` ``(B, R, n)``: the runs' inputs, sample-major like the reads (their nonzero count
    scales the noise variance);
    ``bits`` uint16, one per read in ``buf``'s order: the normal is ``table[bits[i]]``,
    except at the flat positions ``tail_pos`` where it is ``tail_val``; ``cols`` and
    ``lost`` ``(B, R, len(cols))``: the dynamic saturation's loss on those columns
    (``cols`` empty: none); ``variance`` ``(R, C')``: the noise variance per active input
    of each run's columns (``C' <= C``: the padded columns beyond are not read, their
    charges stay); ``offset``, ``high``, ``low`` ``(R, C)``; ``limits``: ``(headroom,
    adc_min, adc_max, readout variance)``.
    """
    batch, runs, width = buf.shape
    columns = variance.shape[1]
    if bits.size < buf.size or (tail_pos.size and tail_pos[-1] >= buf.size):
        raise ValueError("readout: the bits do not match the reads")
    _check_tables(buf, xs, variance, offset, high, low, cols, lost)
    headroom, adc_min, adc_max, floor = limits[0], limits[1], limits[2], limits[3]
    sigma = np.empty((runs, xs.shape[2] + 1, width), np.float32)
    filled = np.zeros((runs, xs.shape[2] + 1), np.bool_)
    flat = buf.reshape(-1)
    # the charges at the tail positions, before the loop overwrites them (few: 2**-15 of all)
    tail_charge = np.empty(tail_pos.size, np.float32)
    for t in range(tail_pos.size):
        tail_charge[t] = flat[tail_pos[t]]
    z = np.empty(width, np.float32)
    for b in range(batch):
        for r in range(runs):
            s = _sigma(sigma, filled, variance, floor, r, _active(xs[b, r]))
            o, hi, lo = offset[r], high[r], low[r]
            first = (b * runs + r) * width
            reads = flat[first : first + width]
            u = bits[first : first + columns]
            # the lookups apart: a gather in the loop below would keep it from vectorizing
            for c in range(columns):
                z[c] = table[u[c]]
            if cols.size:  # membrane first, then the ADC
                _membrane(reads[:columns], z[:columns], s, o, cols, lost[b, r])
                for c in range(columns):
                    reads[c] = _adc(reads[c], hi[c], lo[c], headroom, adc_min, adc_max)
                continue
            for c in range(columns):
                v = reads[c] + (o[c] + z[c] * s[c])
                reads[c] = _adc(v, hi[c], lo[c], headroom, adc_min, adc_max)
    for t in range(tail_pos.size):
        i = tail_pos[t]
        c = i % width
        if c >= columns:
            continue
        r = (i // width) % runs
        b = i // (width * runs)
        s = _sigma(sigma, filled, variance, floor, r, _active(xs[b, r]))
        v = tail_charge[t] + (offset[r, c] + tail_val[t] * s[c])
        for j in range(cols.size):
            if cols[j] == c:
                v = v - lost[b, r, j]
        flat[i] = _adc(v, high[r, c], low[r, c], headroom, adc_min, adc_max)


@njit(**_JIT)
def readout_normals(
    buf, xs, normals, cols, lost, variance, offset, high, low, limits
):  # pragma: no cover - compiled
    """:func:`readout_table` with the standard normals given, ``normals`` shaped as ``buf``."""
    batch, runs, width = buf.shape
    columns = variance.shape[1]
    if normals.shape != buf.shape:
        raise ValueError("readout: the normals do not match the reads")
    _check_tables(buf, xs, variance, offset, high, low, cols, lost)
    headroom, adc_min, adc_max, floor = limits[0], limits[1], limits[2], limits[3]
    sigma = np.empty((runs, xs.shape[2] + 1, width), np.float32)
    filled = np.zeros((runs, xs.shape[2] + 1), np.bool_)
    for b in range(batch):
        for r in range(runs):
            s = _sigma(sigma, filled, variance, floor, r, _active(xs[b, r]))
            o, hi, lo = offset[r], high[r], low[r]
            reads = buf[b, r, :columns]
            _membrane(reads, normals[b, r, :columns], s, o, cols, lost[b, r])
            for c in range(columns):
                reads[c] = _adc(reads[c], hi[c], lo[c], headroom, adc_min, adc_max)


@njit(**_JIT)
def combine(pos, neg, scale, shift, bias, used, out):  # pragma: no cover - compiled
    """The digital side of a block of reads, in one pass: ``out[g // P, g % P, c] =
    (sum_r pos[g, r, c] - sum_r neg[g, r, c]) * scale[c] + shift[c] + bias[c]``, the sums
    over the runs ``r`` with ``used[r, c] = 1`` (all runs when ``used`` is empty).

    ``pos`` ``(G, R, C)``: the reads of each input vector's runs; ``neg``: those of the
    negative part of a ``split`` layer, or an empty array; ``used`` ``(R, C)`` float32, 1
    or 0 (a read times 1 is the read, times 0 adds nothing: the sum of the used reads, in
    the same order); ``out`` ``(G / P, P, C)``, any strides (a convolution's channel-major
    output block as ``(N, positions, C)``).
    """
    rows, runs, width = pos.shape
    per_sample = out.shape[1]
    if rows != out.shape[0] * per_sample or out.shape[2] != width:
        raise ValueError("combine: the reads and the output do not match")
    if scale.size < width or shift.size < width or bias.size < width:
        raise ValueError("combine: the per-column terms do not match the reads")
    if neg.shape[0] and (neg.shape[0] != rows or neg.shape[1] != runs or neg.shape[2] != width):
        raise ValueError("combine: the parts' reads differ in shape")
    masked = used.shape[0] > 0
    if masked and (used.shape[0] != runs or used.shape[1] != width):
        raise ValueError("combine: the used reads do not match the reads")
    has_neg = neg.shape[0] > 0
    acc = np.empty(width, np.float32)
    for g in range(rows):
        if masked:
            for c in range(width):
                acc[c] = pos[g, 0, c] * used[0, c]
            for r in range(1, runs):
                for c in range(width):
                    acc[c] += pos[g, r, c] * used[r, c]
            if has_neg:
                for r in range(runs):
                    for c in range(width):
                        acc[c] -= neg[g, r, c] * used[r, c]
        else:
            for c in range(width):
                acc[c] = pos[g, 0, c]
            for r in range(1, runs):
                for c in range(width):
                    acc[c] += pos[g, r, c]
            if has_neg:
                for r in range(runs):
                    for c in range(width):
                        acc[c] -= neg[g, r, c]
        dest = out[g // per_sample, g % per_sample]
        for c in range(width):
            dest[c] = acc[c] * scale[c] + shift[c] + bias[c]


@njit(inline="always", **_JIT)
def _sum_reads(pos, neg, used, masked, has_neg, g, acc):  # pragma: no cover - compiled
    """``acc`` = the (used) reads of row ``g`` summed over the runs, the negative part's
    subtracted (see :func:`combine`, which keeps the same loops inline: calling this from
    its row loop made the dense layers' sum about 1.4x slower)."""
    runs, width = pos.shape[1], pos.shape[2]
    if masked:
        for c in range(width):
            acc[c] = pos[g, 0, c] * used[0, c]
        for r in range(1, runs):
            for c in range(width):
                acc[c] += pos[g, r, c] * used[r, c]
        if has_neg:
            for r in range(runs):
                for c in range(width):
                    acc[c] -= neg[g, r, c] * used[r, c]
    else:
        for c in range(width):
            acc[c] = pos[g, 0, c]
        for r in range(1, runs):
            for c in range(width):
                acc[c] += pos[g, r, c]
        if has_neg:
            for r in range(runs):
                for c in range(width):
                    acc[c] -= neg[g, r, c]


@njit(**_JIT)
def combine_channel_major(pos, neg, scale, shift, bias, used, out):  # pragma: no cover
    """:func:`combine` into a convolution's channel-major output block ``out`` ``(N, C,
    positions)`` (C-contiguous), ``pos`` ``(N * positions, R, C)``.

    A column's outputs lie ``positions`` apart, often a multiple of 1 KiB, where writing one
    output row at a time lands every column in the same few cache sets (a 32 x 32 output:
    all in one). Up to :data:`_TILE` rows of one sample are summed first, then written a
    column at a time, contiguous along the positions.
    """
    samples, width, per_sample = out.shape
    rows, runs = pos.shape[0], pos.shape[1]
    if rows != samples * per_sample or pos.shape[2] != width:
        raise ValueError("combine_channel_major: the reads and the output do not match")
    if scale.size < width or shift.size < width or bias.size < width:
        raise ValueError("combine_channel_major: the per-column terms do not match the reads")
    if neg.shape[0] and (neg.shape[0] != rows or neg.shape[1] != runs or neg.shape[2] != width):
        raise ValueError("combine_channel_major: the parts' reads differ in shape")
    masked = used.shape[0] > 0
    if masked and (used.shape[0] != runs or used.shape[1] != width):
        raise ValueError("combine_channel_major: the used reads do not match the reads")
    has_neg = neg.shape[0] > 0
    sums = np.empty((_TILE, width), np.float32)
    column = np.empty(_TILE, np.float32)
    for sample in range(samples):
        for first in range(0, per_sample, _TILE):
            count = min(_TILE, per_sample - first)
            g = sample * per_sample + first
            for t in range(count):
                _sum_reads(pos, neg, used, masked, has_neg, g + t, sums[t])
            for c in range(width):
                for t in range(count):
                    column[t] = sums[t, c]
                dest = out[sample, c, first : first + count]
                s, h, b = scale[c], shift[c], bias[c]
                for t in range(count):
                    dest[t] = column[t] * s + h + b


@njit(**_JIT)
def derive_charges(
    weight_q,
    gather,
    synapse,
    neuron_gain,
    factors,
    weight2,
    charges,
    charge,
    weight,
    variance,
    before,
):  # pragma: no cover - compiled
    """A layer version's charges in one pass over its integer weights ``weight_q`` ``(in,
    C)``, chunked by ``gather`` ``(R, n)`` (the weight row of each position; ``in`` on
    padding, a zero weight), each element once, in the torch form's float32 operations:

    - ``charges`` ``(2, R, n, C)``: ``max(w, 0)`` and ``-min(w, 0)``, times ``synapse`` (the
      synapse gains of the + and - rows);
    - ``charge`` ``(R, n, C)``: the signed charge ``charges[0] - charges[1]``;
    - ``weight`` ``(R, n, Cp)``: ``charge * (neuron_gain * factors[0])``, zero beyond ``C``;
    - ``variance`` ``(R, C)``: the noise variance per active input, ``(sum_k w**2 *
      weight2[r] + factors[1]) * factors[2]``.

    ``factors``: float32 ``(gain per send x num_sends, per-event variance, num_sends)``.
    Returns the largest ``|charge - before|`` (float32), ``before`` an
    earlier version's signed charge, or 0.0 when ``before`` is empty.
    """
    runs, n = gather.shape
    rows, width = weight_q.shape
    if synapse.shape != (2, runs, n, width) or charges.shape != synapse.shape:
        raise ValueError("derive: the synapse gains or charges do not match the weights")
    if charge.shape != (runs, n, width) or weight.shape[:2] != (runs, n) or weight.shape[2] < width:
        raise ValueError("derive: the charge or weight buffers do not match the weights")
    if variance.shape != (runs, width):
        raise ValueError("derive: the variances do not match the weights")
    if neuron_gain.shape != (runs, width) or weight2.size < runs or factors.size < 3:
        raise ValueError("derive: the neuron tables do not match the weights")
    compare = before.size > 0
    if compare and before.shape != charge.shape:
        raise ValueError("derive: the earlier charges do not match the weights")
    drift = np.float32(0.0)
    for r in range(runs):
        for k in range(n):
            if gather[r, k] < 0 or gather[r, k] > rows:
                raise ValueError("derive: a position's weight row lies outside the weights")
    gain = np.empty(width, np.float32)
    square = np.empty(width, np.float32)
    w = np.empty(width, np.float32)
    zero = np.float32(0.0)
    for r in range(runs):
        for c in range(width):
            gain[c] = neuron_gain[r, c] * factors[0]
            square[c] = zero
        for k in range(n):
            row = gather[r, k]
            if row < rows:
                for c in range(width):
                    w[c] = np.float32(weight_q[row, c])
            else:
                for c in range(width):
                    w[c] = zero
            s0, s1 = synapse[0, r, k], synapse[1, r, k]
            p, m, q, out = charges[0, r, k], charges[1, r, k], charge[r, k], weight[r, k]
            for c in range(width):
                p[c] = max(w[c], zero) * s0[c]
                m[c] = -min(w[c], zero) * s1[c]
                q[c] = p[c] - m[c]
                out[c] = q[c] * gain[c]
                square[c] += w[c] * w[c]
            if compare:
                old = before[r, k]
                for c in range(width):
                    drift = max(drift, abs(q[c] - old[c]))
            for c in range(width, out.size):
                out[c] = zero
        for c in range(width):
            variance[r, c] = (square[c] * weight2[r] + factors[1]) * factors[2]
    return drift


@njit(**_JIT)
def peak_windows(charges, time_order, plan, out):  # pragma: no cover - compiled
    """The largest charge inside a window of event slots, per part, run and column:
    ``out[p, r, c]`` = max over the window's last event ``e`` of ``periods * total + (the
    charges of the ``whole`` slots ending at ``e``) + frac * (the charge of the slot before
    them)``, ``total`` the run's whole charge; a window reaches back across the start of the
    send into the repetition before it when ``wraps`` (else into silence).

    ``charges`` ``(P, R, n, C)``, non-negative, positions in the layout's row order;
    ``time_order`` ``(R, n)``: the positions in event order; ``plan`` ``(R, 5)`` float64 per
    run: ``(rows, periods, whole, frac, wraps)`` (:func:`~anacc.runtime.backends.emulator.
    window_plan`). Sums run in float64 as a sliding window (add the newest slot, drop the
    oldest): linear in the run's length, whatever the window.
    """
    parts, runs, n, width = charges.shape
    if out.shape != (parts, runs, width) or time_order.shape != (runs, n):
        raise ValueError("peak windows: the output or the event order does not match")
    if plan.shape != (runs, 5):
        raise ValueError("peak windows: the plan does not match the runs")
    for r in range(runs):
        rows, whole = int(plan[r, 0]), int(plan[r, 2])
        if rows < 1 or rows > n or whole < 0 or whole >= rows:
            raise ValueError("peak windows: a run's window does not fit its rows")
        for k in range(rows):
            if time_order[r, k] < 0 or time_order[r, k] >= n:
                raise ValueError("peak windows: an event position lies outside the run")
    base = np.empty(width, np.float64)
    acc = np.empty(width, np.float64)
    best = np.empty(width, np.float64)
    for p in range(parts):
        for r in range(runs):
            rows, periods, whole = int(plan[r, 0]), plan[r, 1], int(plan[r, 2])
            frac, wraps = plan[r, 3], plan[r, 4] != 0.0
            seq, order = charges[p, r], time_order[r]
            for c in range(width):
                base[c] = 0.0
                acc[c] = 0.0
                best[c] = 0.0  # padded window ends hold nothing
            for k in range(rows):
                x = seq[order[k]]
                for c in range(width):
                    base[c] += x[c]
            for c in range(width):
                base[c] *= periods
            if wraps:  # the window that ends just before the first slot
                for k in range(rows - whole, rows):
                    x = seq[order[k]]
                    for c in range(width):
                        acc[c] += x[c]
            for e in range(rows):
                x = seq[order[e]]
                for c in range(width):
                    acc[c] += x[c]
                j = e - whole  # the slot before the whole ones: it leaves, and counts frac
                if j >= 0 or wraps:
                    y = seq[order[j % rows]]
                    for c in range(width):
                        acc[c] -= y[c]
                        best[c] = max(best[c], base[c] + acc[c] + frac * y[c])
                else:
                    for c in range(width):
                        best[c] = max(best[c], base[c] + acc[c])
            for c in range(width):
                out[p, r, c] = best[c]


@njit(**_JIT)
def saturating_columns(xs, peak_load, spread_load, factors):  # pragma: no cover - compiled
    """The columns whose synaptic input load may pass its linear range in this call, sorted:
    where, in some part and run, ``min(factors[0] * peak_load, largest * spread_load)``
    exceeds ``factors[1]`` (the linear load), ``largest`` being the run's largest sum of
    inputs over the batch (a sum of small integers: exact in float32 in any order).

    ``xs`` ``(B, R, n)`` (sample-major); ``peak_load``, ``spread_load`` ``(2, R, C)``;
    ``factors`` float32 ``(input_max, linear load)``.
    """
    batch, runs, n = xs.shape
    parts, _, width = peak_load.shape
    if peak_load.shape[1] != runs or spread_load.shape != peak_load.shape:
        raise ValueError("saturation: the load tables do not match the runs")
    largest = np.zeros(runs, np.float32)
    for b in range(batch):
        for r in range(runs):
            line = xs[b, r]
            total = np.float32(0.0)
            for k in range(n):
                total += line[k]
            largest[r] = max(largest[r], total)
    hit = np.zeros(width, np.bool_)
    for p in range(parts):
        for r in range(runs):
            for c in range(width):
                bound = min(factors[0] * peak_load[p, r, c], largest[r] * spread_load[p, r, c])
                hit[c] |= bound > factors[1]
    return np.nonzero(hit)[0]


@njit(**_JIT)
def saturation_loss(cols, charge, kappa, inv_kappa, headroom, lost):  # pragma: no cover
    """What the knee of the synaptic input takes from the charge of the columns ``cols``:
    ``lost[b, r, j]`` (float32) for column ``cols[j]``, in the torch form's float32 operations.

    ``charge`` ``(R, B, >= 2k)``: the signed charge of the columns, then their total (the
    sum of both parts' magnitudes), then any padding; ``kappa``, ``inv_kappa`` ``(2, R,
    C)``: a part's load per unit of charge over the linear load, and its inverse. A part's
    charge is ``(total +- signed) / 2``, its excess ``e = max(charge * kappa - 1, 0)``, and
    it loses ``e**2 / (e + headroom) / kappa``; the loss is the excitatory part's minus the
    inhibitory part's.
    """
    runs, batch, double = charge.shape
    k = cols.size
    if double < 2 * k or lost.shape != (batch, runs, k):
        raise ValueError("saturation: the charges or the loss do not match the columns")
    if kappa.shape[:2] != (2, runs) or inv_kappa.shape != kappa.shape:
        raise ValueError("saturation: the kappa tables do not match the runs")
    for j in range(k):
        if cols[j] < 0 or cols[j] >= kappa.shape[2]:
            raise ValueError("saturation: a column lies outside the kappa tables")
    half, one, zero = np.float32(0.5), np.float32(1.0), np.float32(0.0)
    room = np.float32(headroom)
    for r in range(runs):
        for b in range(batch):
            line = charge[r, b]
            for j in range(k):
                c = cols[j]
                signed, total = line[j], line[k + j]
                e = max((total + signed) * half * kappa[0, r, c] - one, zero)
                i = max((total - signed) * half * kappa[1, r, c] - one, zero)
                excitatory = e * e / (e + room) * inv_kappa[0, r, c]
                inhibitory = i * i / (i + room) * inv_kappa[1, r, c]
                lost[b, r, j] = excitatory - inhibitory


@njit(**_JIT)
def saturation_terms(
    peak, total, charges, neuron_gain, factors, kappa, inv_kappa, spread
):  # pragma: no cover - compiled
    """What the dynamic saturation needs per part, run and column, from a version's peak
    window loads ``peak`` ``(2, R, C)``, its total charges ``total`` (``charges`` summed over
    the positions) and its charges ``(2, R, n, C)``, in the torch form's float32 operations:

    - ``rho = peak / max(total, 1e-30)`` (0 where ``total`` is 0): the share of a column's
      charge inside its heaviest window;
    - ``kappa = rho / (factors[1] * (neuron_gain * factors[0]))`` (``factors``: float32 gain
      per send x num_sends, linear load) and ``inv_kappa = 1 / max(kappa, 1e-30)`` (0 where
      ``kappa`` is 0);
    - ``spread = rho * (the largest charge of the column)``.
    """
    parts, runs, n, width = charges.shape
    if peak.shape != (parts, runs, width) or total.shape != peak.shape:
        raise ValueError("saturation terms: the peak loads or totals do not match the charges")
    if kappa.shape != peak.shape or inv_kappa.shape != peak.shape or spread.shape != peak.shape:
        raise ValueError("saturation terms: the outputs do not match the charges")
    if neuron_gain.shape != (runs, width):
        raise ValueError("saturation terms: the neuron gains do not match the charges")
    tiny, zero, one = np.float32(1e-30), np.float32(0.0), np.float32(1.0)
    largest = np.empty(width, np.float32)
    for p in range(parts):
        for r in range(runs):
            for c in range(width):
                largest[c] = charges[p, r, 0, c]
            for k in range(1, n):
                row = charges[p, r, k]
                for c in range(width):
                    largest[c] = max(largest[c], row[c])
            for c in range(width):
                t = total[p, r, c]
                rho = peak[p, r, c] / max(t, tiny) if t > zero else zero
                k = rho / (factors[1] * (neuron_gain[r, c] * factors[0]))
                kappa[p, r, c] = k
                inv_kappa[p, r, c] = one / max(k, tiny) if k > zero else zero
                spread[p, r, c] = rho * largest[c]


@njit(**_JIT)
def synapse_gains(table, column_base, slot, pair, out):  # pragma: no cover - compiled
    """The synapse gain of the + and - row of each position: ``out`` ``(2, R, n, C)``.

    ``table``: the chip instance's gains ``(half, row, neuron)``, flattened; ``pair``:
    ``(rows per signed weight, neurons per row)``; ``column_base`` ``(R, C)``: the flat index
    of the synapse on the first row of the tile column that computes column ``c`` of run
    ``r``; ``slot`` ``(R, n)``: each position's row-pair slot. Position ``k`` sits on the
    ``pair[0]`` rows from ``pair[0] * slot[r, k]`` on (counted from the tile's first row):
    its - part on the first of them, its + part on the last.
    """
    parts, runs, n, width = out.shape
    rows_per, row_size = pair[0], pair[1]
    if parts != 2 or column_base.shape != (runs, width) or slot.shape != (runs, n):
        raise ValueError("synapse gains: the layout does not match the output")
    last = (rows_per - 1) * row_size
    for r in range(runs):
        top = 0
        for k in range(n):
            top = max(top, slot[r, k])
        for c in range(width):
            if (
                column_base[r, c] < 0
                or column_base[r, c] + (rows_per * top) * row_size + last >= table.size
            ):
                raise ValueError("synapse gains: a synapse lies outside the chip")
    for r in range(runs):
        base = column_base[r]
        for k in range(n):
            offset = rows_per * slot[r, k] * row_size
            plus, minus = out[0, r, k], out[1, r, k]
            for c in range(width):
                first = base[c] + offset
                minus[c] = table[first]
                plus[c] = table[first + last]


@njit(**_JIT)
def nonzero_rows(weight, first, last):  # pragma: no cover - compiled
    """Per run ``r`` and column ``c`` of ``weight`` ``(R, n, C)``: the first and the last
    position with a nonzero weight (``first = n``, ``last = -1`` for a column of zeros),
    scanning from each end, so a column costs what its zero ends cost."""
    runs, n, width = weight.shape
    if first.shape != (runs, width) or last.shape != (runs, width):
        raise ValueError("nonzero_rows: the outputs do not match the weights")
    for r in range(runs):
        for c in range(width):
            k = 0
            while k < n and weight[r, k, c] == 0.0:
                k += 1
            first[r, c] = k
            j = n - 1
            while j >= k and weight[r, j, c] == 0.0:
                j -= 1
            last[r, c] = j

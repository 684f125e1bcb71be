"""Standard normal noise for the emulator, drawn fast: :class:`NormalSource`.

Every read of the emulated chip needs one standard normal per run, millions per forward pass,
and ``torch.randn`` spends most of its time in its serial Mersenne Twister. This source draws
exactly as many values as a call needs, by inverse-transform sampling with a table:

- random bits come from the ``SFC64`` generator, its state set per call from the call's
  64-bit seed by splitmix64 (64 bits give four 16-bit uniforms); a compiled loop
  (:func:`sfc64`) gives the words numpy's ``SFC64`` gives, several times faster;
- a 16-bit uniform ``i`` picks bin ``i`` of ``2**16`` equiprobable bins of the normal's
  central region ``|z| < q`` and returns the bin's conditional mean (one table lookup);
- with probability ``2 * tail`` (``tail = 2**-16`` per side; ``q`` is the normal's
  ``1 - tail`` quantile) a value comes from the tails instead, drawn exactly by the inverse
  CDF in float64. Which positions hold tail values is drawn apart from the table lookups, as
  the geometric gaps between them (a Bernoulli process: every position is independently a
  tail value with the right probability, and no pass over the output has to look for them);
  the gaps, the tail values' uniforms and their signs continue the same generator after the
  words of the table lookups (:func:`seeded_draws`, one compiled call).

Mean and symmetry are exact, the variance is ``1 - 3e-9`` (the spread inside the central
bins is lost), the tails beyond ``q`` (about 4.2) are exact, and the distribution function
is within ``2**-17`` of the normal's everywhere: far below what any test on a feasible
number of draws resolves. Values at different positions and in different calls are
independent (up to the quality of ``SFC64``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit

TABLE_BITS = 16
TAIL = 2.0**-TABLE_BITS  # probability of each tail
_MASK64 = 2**64 - 1
# SFC64's own seeding discards this many outputs after setting its state
_WARMUP = 12
_U64 = np.uint64
# log(1 - p) for p = 2 * TAIL, the probability that a position holds a tail value
_LOG_KEEP = math.log1p(-2.0 * TAIL)


@njit(cache=True, nogil=True)
def sfc64(state: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """Fill the uint64 array ``out`` with SFC64's next outputs from ``state`` ``(a, b, c,
    counter)``, which is advanced in place: the words numpy's ``SFC64.random_raw`` gives from
    that state (numpy's loop calls the generator through a pointer per word, several times
    slower)."""
    a, b, c, count = state[0], state[1], state[2], state[3]
    for i in range(out.size):
        word = a + b + count
        count += _U64(1)
        a = b ^ (b >> _U64(11))
        b = c + (c << _U64(3))
        c = ((c << _U64(24)) | (c >> _U64(40))) + word
        out[i] = word
    state[0], state[1], state[2], state[3] = a, b, c, count


@njit(cache=True, nogil=True)
def _splitmix(state, word):  # pragma: no cover - compiled
    state = (state ^ word) + _U64(0x9E3779B97F4A7C15)
    state = (state ^ (state >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    state = (state ^ (state >> _U64(27))) * _U64(0x94D049BB133111EB)
    return state ^ (state >> _U64(31))


@njit(cache=True, nogil=True)
def seeded_words(seed, count, warmup):  # pragma: no cover - compiled
    """SFC64 set from the 64-bit ``seed`` (``a, b, c = derived_seed(seed, k)`` for ``k = 1,
    2, 3``, counter 1), ``warmup`` outputs discarded, then ``count`` words: ``(words,
    state)``, ``state`` where the generator stands after them."""
    state = np.empty(4, np.uint64)
    for k in range(3):
        state[k] = _splitmix(_splitmix(_U64(0), seed), _U64(k + 1))
    state[3] = _U64(1)
    sfc64(state, np.empty(warmup, np.uint64))
    words = np.empty(count, np.uint64)
    sfc64(state, words)
    return words, state


@njit(cache=True, nogil=True)
def _unit(word):  # pragma: no cover - compiled
    """A uniform in (0, 1] from the top 53 bits of a word."""
    return (np.float64(word >> _U64(11)) + 1.0) * 2.0**-53


@njit(cache=True, nogil=True)
def seeded_draws(seed, n, warmup, log_keep):  # pragma: no cover - compiled
    """What ``n`` standard normals of ``seed`` need: ``(words, where, u, sign)``. ``words``
    are :func:`seeded_words`' ``ceil(n / 4)`` words; the generator then gives, word by word,
    the gap before the next tail position (geometric: ``floor(log(U) / log_keep)`` with ``U``
    uniform in (0, 1] and ``log_keep = log(1 - p)``, ``p`` a position's tail probability)
    and that position's uniform ``u`` in (0, 1] (top 53 bits) and sign (lowest bit, +-1),
    until a gap passes position ``n - 1``. ``where`` is sorted."""
    words, state = seeded_words(seed, -(-n // 4), warmup)
    capacity = 16
    where = np.empty(capacity, np.int64)
    u = np.empty(capacity, np.float64)
    sign = np.empty(capacity, np.float64)
    pair = np.empty(2, np.uint64)
    count = 0
    position = -1
    while True:
        sfc64(state, pair)
        gap = math.floor(math.log(_unit(pair[0])) / log_keep)
        if gap >= n - 1 - position:
            break
        position += 1 + int(gap)
        if count == capacity:
            capacity *= 2
            where = np.concatenate((where, np.empty(capacity - count, np.int64)))
            u = np.concatenate((u, np.empty(capacity - count, np.float64)))
            sign = np.concatenate((sign, np.empty(capacity - count, np.float64)))
        where[count] = position
        u[count] = _unit(pair[1])
        sign[count] = 1.0 if pair[1] & _U64(1) else -1.0
        count += 1
    return words, where[:count], u[:count], sign[:count]


def derived_seed(*words: int) -> int:
    """A 64-bit seed mixed from ``words`` with splitmix64 steps (cheap: one per call)."""
    state = 0
    for word in words:
        state = ((state ^ (word & _MASK64)) + 0x9E3779B97F4A7C15) & _MASK64
        state = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        state = ((state ^ (state >> 27)) * 0x94D049BB133111EB) & _MASK64
        state ^= state >> 31
    return state


def central_table(bits: int = TABLE_BITS, tail: float = TAIL) -> torch.Tensor:
    """``2**bits`` conditional means of the normal over equiprobable bins of ``|z| < q``,
    ``q`` the ``1 - tail`` quantile (float64 arithmetic, float32 result)."""
    size = 2**bits
    edges = tail + (1.0 - 2.0 * tail) * torch.arange(size + 1, dtype=torch.float64) / size
    z = torch.special.ndtri(edges)
    density = torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    means = (density[:-1] - density[1:]) / ((1.0 - 2.0 * tail) / size)
    means = 0.5 * (means - means.flip(0))  # exactly symmetric
    return means.to(torch.float32)


class NormalSource:
    """Draws standard normals into tensors; see the module docstring. The table is built
    once per source (256 KiB)."""

    def __init__(self) -> None:
        self.table = central_table()
        self.table_values = self.table.numpy()  # the same memory, for compiled loops
        self._index = torch.empty(0, dtype=torch.int32)

    def parts(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``n`` standard normals of ``seed`` before the lookup: ``(bits, where,
        values)``, the normal at position ``i`` being ``table[bits[i]]`` except at the sorted
        positions ``where``, which hold the tail values ``values`` (float32)."""
        words, where, u, sign = seeded_draws(_U64(seed), n, _WARMUP, _LOG_KEEP)
        if where.size:
            # the tail beyond q is ndtri(TAIL * u) (negative), mirrored for sign -1
            magnitude = torch.special.ndtri(torch.from_numpy(TAIL * u)).numpy()
            values = (magnitude * sign).astype(np.float32)
        else:
            values = np.empty(0, np.float32)
        return words.view(np.uint16)[:n], where, values

    def fill(self, out: torch.Tensor, seed: int) -> torch.Tensor:
        """Fill the contiguous float32 tensor ``out`` with standard normals drawn from the
        64-bit ``seed``; returns ``out``."""
        assert out.is_contiguous() and out.dtype == torch.float32
        n = out.numel()
        if n == 0:
            return out
        bits, where, values = self.parts(n, seed)
        if self._index.numel() < n:
            self._index = torch.empty(n, dtype=torch.int32)
        index = self._index[:n]
        index.copy_(torch.from_numpy(bits))
        flat = out.view(-1)
        torch.index_select(self.table, 0, index, out=flat)
        if where.size:
            flat[torch.from_numpy(where)] = torch.from_numpy(values)
        return out

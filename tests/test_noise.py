"""The emulator's fast standard normals: the table, moments, goodness of fit against the
normal distribution, the tails, independence and determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from anacc.runtime.backends.noise import (
    _WARMUP,
    TAIL,
    NormalSource,
    central_table,
    derived_seed,
    seeded_words,
    sfc64,
)

N = 2_000_000


def normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))


def draws(seed: int = 0, n: int = N) -> np.ndarray:
    return NormalSource().fill(torch.empty(n), seed).numpy().astype(np.float64)


def test_table_holds_the_conditional_means_of_equiprobable_central_bins():
    table = central_table(bits=8).numpy().astype(np.float64)
    q = -float(torch.special.ndtri(torch.tensor(TAIL, dtype=torch.float64)))
    # the bins' conditional means, integrated numerically in float64
    edges = np.linspace(TAIL, 1 - TAIL, 257)
    expected = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        z = torch.special.ndtri(torch.linspace(a, b, 20001, dtype=torch.float64)[1:-1]).numpy()
        expected.append(z.mean())
    np.testing.assert_allclose(table, expected, atol=2e-3)
    assert np.all(np.diff(table) > 0) and -q < table[0] and table[-1] < q
    np.testing.assert_array_equal(table, -table[::-1])


def test_moments_match_the_standard_normal():
    z = draws(1)
    se = 1 / math.sqrt(N)
    assert abs(z.mean()) < 5 * se
    assert abs(z.var() - 1) < 5 * math.sqrt(2) * se
    assert abs((z**3).mean()) < 5 * math.sqrt(15) * se
    assert abs((z**4).mean() - 3) < 5 * math.sqrt(96) * se


def test_kolmogorov_smirnov_and_chi_square_accept_the_normal():
    z = np.sort(draws(2))
    cdf = normal_cdf(z[:: len(z) // 200_000])  # KS on an evenly thinned sorted sample
    n = len(cdf)
    ranks = np.arange(1, n + 1) / n
    ks = max(np.max(ranks - cdf), np.max(cdf - (ranks - 1 / n)))
    assert ks * math.sqrt(n) < 1.95  # p = 0.001

    # chi-square over 100 equiprobable bins of the normal (99 degrees of freedom)
    edges = torch.special.ndtri(torch.linspace(0, 1, 101, dtype=torch.float64)[1:-1]).numpy()
    counts = np.bincount(np.searchsorted(edges, z), minlength=100)
    expected = len(z) / 100
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 149  # p = 0.001 for 99 degrees of freedom


def test_tails_beyond_the_table_have_the_normal_frequencies():
    z = draws(3, 8_000_000)
    for t in (3.0, 4.0, 4.5, 5.0):
        expected = len(z) * 2 * (1 - normal_cdf(np.array([t]))[0])
        observed = int((np.abs(z) > t).sum())
        assert abs(observed - expected) < 5 * math.sqrt(expected) + 1, t
    assert np.abs(z).max() > 4.5  # the tails are not cut at the table's end


def test_neighbours_and_calls_are_uncorrelated_and_seeds_repeat():
    z = draws(4)
    se = 1 / math.sqrt(N)
    for lag in (1, 2, 3, 4, 5, 8):
        assert abs(np.mean(z[:-lag] * z[lag:])) < 5 * se, lag
    other = draws(5)
    assert abs(np.mean(z * other)) < 5 * se
    np.testing.assert_array_equal(z, draws(4))
    assert not np.array_equal(z[:1000], other[:1000])


def test_fill_writes_any_contiguous_shape():
    out = torch.full((3, 7, 5), float("nan"))
    NormalSource().fill(out, 9)
    assert torch.isfinite(out).all()
    flat = NormalSource().fill(torch.empty(105), 9)
    assert torch.equal(out.reshape(-1), flat)


def test_the_compiled_generator_gives_numpys_sfc64_words():
    """``sfc64`` is numpy's SFC64: the same words from the same state, and the same state
    after them (the tails continue the generator from there)."""
    state = np.array([0x0123456789ABCDEF, 2**64 - 3, 12345, 1], dtype=np.uint64)
    reference = np.random.SFC64(0)
    reference.state = {
        "bit_generator": "SFC64",
        "state": {"state": state.copy()},
        "has_uint32": 0,
        "uinteger": 0,
    }
    expected = reference.random_raw(1001)
    words = np.empty(1001, dtype=np.uint64)
    sfc64(state, words)
    assert np.array_equal(words, expected)
    assert np.array_equal(state, reference.state["state"]["state"])


def test_fill_is_the_table_lookup_of_the_parts_with_the_tails():
    source = NormalSource()
    n = 300_000  # about 9 tail values
    bits, where, values = source.parts(n, 7)
    filled = source.fill(torch.empty(n), 7).numpy()
    assert where.size > 0 and np.all(np.diff(where) > 0)
    assert np.all(np.abs(values) > float(source.table.max()))
    expected = source.table.numpy()[bits]
    expected[where] = values
    assert np.array_equal(filled, expected)


def test_tail_positions_are_a_bernoulli_process():
    """Each position holds a tail value independently with probability ``2 * TAIL``: the
    count is binomial, the gaps between tail positions (and before the first) geometric."""
    source = NormalSource()
    n, p = 2_000_000, 2 * TAIL
    gaps, count = [], 0
    for seed in range(40):
        _, where, values = source.parts(n, seed)
        assert np.all(where >= 0) and np.all(where < n) and np.all(np.diff(where) > 0)
        assert values.shape == where.shape and values.dtype == np.float32
        count += where.size
        gaps.append(np.diff(where, prepend=-1) - 1)
    expected = 40 * n * p
    assert abs(count - expected) < 5 * math.sqrt(expected)
    g = np.sort(np.concatenate(gaps)).astype(np.float64)
    cdf = 1.0 - (1.0 - p) ** (g + 1)  # P(gap <= g)
    ranks = np.arange(1, g.size + 1) / g.size
    ks = max(np.max(ranks - cdf), np.max(cdf - (ranks - 1 / g.size)))
    assert ks * math.sqrt(g.size) < 1.95  # p = 0.001


def test_a_call_without_tail_positions_has_empty_tails():
    bits, where, values = NormalSource().parts(0, 3)
    assert bits.size == where.size == values.size == 0
    bits, where, values = NormalSource().parts(5, 3)
    assert bits.shape == (5,) and where.dtype == np.int64 and values.dtype == np.float32


@pytest.mark.parametrize("seed", [0, 7, 2**63 + 5, 2**64 - 1])
def test_seeded_words_follow_the_documented_seeding(seed):
    """The compiled seeding: state (derived_seed(seed, k) for k = 1, 2, 3; counter 1), the
    warm-up discarded, then the words, as the Python steps give them."""
    state = np.array([derived_seed(seed, k) for k in (1, 2, 3)] + [1], dtype=np.uint64)
    sfc64(state, np.empty(_WARMUP, np.uint64))
    expected = np.empty(50, np.uint64)
    sfc64(state, expected)
    words, after = seeded_words(np.uint64(seed), 50, _WARMUP)
    np.testing.assert_array_equal(words, expected)
    np.testing.assert_array_equal(after, state)

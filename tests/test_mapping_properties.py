"""Property tests of tiling and row mapping (hypothesis)."""

import numpy as np
from anacc.passes.map_rows import row_slots, spread_order
from anacc.passes.tile import near_equal_splits, tile_layer
from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=200, deadline=None)
@given(
    n_in=st.integers(1, 700),
    n_out=st.integers(1, 900),
    rows=st.integers(1, 300),
    cols=st.integers(1, 600),
    halves=st.integers(1, 4),
)
def test_tiling_covers_every_weight_exactly_once(n_in, n_out, rows, cols, halves):
    tiles = tile_layer(n_in, n_out, rows, cols, halves)
    cover = np.zeros((n_in, n_out), dtype=np.int32)
    for t in tiles:
        assert t.n_rows <= rows and t.n_cols <= cols
        assert 0 <= t.half < halves
        cover[t.rows[0] : t.rows[1], t.cols[0] : t.cols[1]] += 1
    assert (cover == 1).all()
    # the fewest tiles possible, near-equal sizes
    assert len(tiles) == -(-n_in // rows) * -(-n_out // cols)
    sizes = {t.n_rows for t in tiles}
    assert max(sizes) - min(sizes) <= 1
    # placement: consecutive tiles fill the halves of a load before the next load
    assert [t.half + halves * t.load for t in tiles] == list(range(len(tiles)))


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 5000), m=st.integers(1, 400))
def test_near_equal_splits_partition(n, m):
    parts = near_equal_splits(n, m)
    assert parts[0][0] == 0 and parts[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))
    lens = [b - a for a, b in parts]
    assert max(lens) <= m and max(lens) - min(lens) <= 1


@given(n=st.integers(1, 600))
def test_spread_order_is_a_permutation(n):
    assert sorted(spread_order(n).tolist()) == list(range(n))


@settings(max_examples=100, deadline=None)
@given(
    n_in=st.integers(1, 400),
    n_out=st.integers(1, 20),
    chunk=st.integers(1, 128),
    order=st.sampled_from(["natural", "interleaved"]),
    seed=st.integers(0, 2**31),
)
def test_row_mapping_is_a_bijection_that_reconstructs_the_weights(n_in, n_out, chunk, order, seed):
    rng = np.random.default_rng(seed)
    w_q = rng.integers(-63, 64, size=(n_in, n_out)).astype(np.int16)
    chunks = near_equal_splits(n_in, chunk)
    slots = row_slots(w_q, chunks, order)
    for a, b in chunks:
        assert sorted(slots[a:b].tolist()) == list(range(b - a))
        # physical row pairs: inhibitory row 2p holds max(-w, 0), excitatory 2p+1 max(w, 0)
        phys = np.zeros((2 * (b - a), n_out), dtype=np.int16)
        phys[2 * slots[a:b]] = np.maximum(-w_q[a:b], 0)
        phys[2 * slots[a:b] + 1] = np.maximum(w_q[a:b], 0)
        assert ((phys[0::2] > 0) & (phys[1::2] > 0)).sum() == 0
        rebuilt = (phys[1::2] - phys[0::2])[slots[a:b]]
        np.testing.assert_array_equal(rebuilt, w_q[a:b])


def test_interleaved_order_spreads_the_strongest_rows():
    w = np.ones((128, 4), dtype=np.int16)
    w[:16] = 63  # strong rows clustered at the start
    slots = row_slots(w, [(0, 128)], "interleaved")
    strong = np.sort(slots[:16])
    assert np.diff(strong).min() >= 128 // 16 // 2
    natural = row_slots(w, [(0, 128)], "natural")
    assert np.diff(np.sort(natural[:16])).max() == 1

"""Property tests of tiling and row mapping (hypothesis)."""

from pathlib import Path

import numpy as np
from anacc.compiler.placement import (
    OBJECTIVES,
    Geometry,
    LayerDemand,
    lower_bound_runs,
    place,
    runs_per_sample,
)
from anacc.passes.map_rows import row_slots, spread_order
from anacc.passes.tile import near_equal_splits
from hypothesis import given, settings
from hypothesis import strategies as st

LAYERS = st.lists(
    st.tuples(st.integers(1, 700), st.integers(1, 900), st.integers(1, 300)),
    min_size=1,
    max_size=4,
)
GEOMETRY = st.builds(
    Geometry, halves=st.integers(1, 3), rows=st.integers(8, 160), cols=st.integers(16, 300)
)


@settings(max_examples=150, deadline=None)
@given(
    layers=LAYERS,
    geo=GEOMETRY,
    objective=st.sampled_from(OBJECTIVES),
    chips=st.integers(1, 3),
)
def test_placements_cover_every_weight_once_per_copy_and_never_share_a_synapse(
    layers, geo, objective, chips
):
    demands = [
        LayerDemand(
            f"l{i}",
            tuple(near_equal_splits(n_in, geo.rows)),
            tuple(near_equal_splits(n_out, geo.cols)),
            vectors,
        )
        for i, (n_in, n_out, vectors) in enumerate(layers)
    ]
    placed = place(demands, geo, {d.name: 35.0 for d in demands}, objective=objective, chips=chips)
    owner: dict[tuple[int, int, int], tuple[str, int]] = {}
    for d, (n_in, n_out, _) in zip(demands, layers, strict=True):
        layer = placed.layers[d.name]
        assert 1 <= layer.copies <= max(1, d.vectors)
        cover = np.zeros((layer.copies, n_in, n_out), dtype=np.int32)
        run_load: dict[int, int] = {}
        for t in layer.tiles:
            assert 0 <= t.half < geo.halves and 0 <= t.load < placed.loads
            assert t.row_offset >= 0 and t.row_offset + t.n_rows <= geo.rows
            assert t.col_offset >= 0 and t.col_offset + t.n_cols <= geo.cols
            cover[t.copy, t.rows[0] : t.rows[1], t.cols[0] : t.cols[1]] += 1
            assert run_load.setdefault(t.run, t.load) == t.load  # a run stays in one load
            for col in range(t.col_offset, t.col_offset + t.n_cols):
                key = (t.load, t.half, col)  # every tile owns its neurons
                assert key not in owner, f"{d.name} tile {t.index} on {key} of {owner.get(key)}"
                owner[key] = (d.name, t.index)
        assert (cover == 1).all()
        # the tiles of one run take disjoint row pairs on a half unless they hold one input
        for run in run_load:
            for half in range(geo.halves):
                held = [t for t in layer.tiles if t.run == run and t.half == half]
                rows = np.zeros(geo.rows, dtype=object)
                for t in held:
                    for r in range(t.row_offset, t.row_offset + t.n_rows):
                        key = (t.copy, t.rows)
                        assert rows[r] in (0, key)
                        rows[r] = key
        runs = runs_per_sample(d.vectors, layer.copies, layer.runs_per_cycle)
        assert runs >= lower_bound_runs(d, geo)
    assert len(placed.load_chip) == placed.loads
    assert set(placed.load_chip) <= set(range(chips))


def test_time_placement_reaches_the_bound_on_the_digits_cnn_shapes():
    geo = Geometry(2, 128, 256)
    demands = [
        LayerDemand("c1", ((0, 9),), ((0, 16),), 64),
        LayerDemand("c2", ((0, 72), (72, 144)), ((0, 32),), 64),
        LayerDemand("fc", ((0, 128), (128, 256), (256, 384), (384, 512)), ((0, 10),), 1),
    ]
    placed = place(demands, geo, {d.name: 35.0 for d in demands}, objective="time")
    runs = {
        d.name: runs_per_sample(
            d.vectors, placed.layers[d.name].copies, placed.layers[d.name].runs_per_cycle
        )
        for d in demands
    }
    assert runs == {"c1": 3, "c2": 64, "fc": 2}
    assert sum(lower_bound_runs(d, geo) for d in demands) == 69
    assert placed.loads == 1
    naive = place(demands, geo, {d.name: 35.0 for d in demands}, objective="naive")
    naive_runs = sum(
        runs_per_sample(d.vectors, 1, naive.layers[d.name].runs_per_cycle) for d in demands
    )
    assert (naive_runs, naive.loads) == (196, 4)  # one tile per half, as anacc 0.1 mapped


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 5000), m=st.integers(1, 400))
def test_near_equal_splits_partition(n, m):
    parts = near_equal_splits(n, m)
    assert parts[0][0] == 0 and parts[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:], strict=False))
    lens = [b - a for a, b in parts]
    assert max(lens) <= m and max(lens) - min(lens) <= 1


@settings(deadline=None)
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


def _conv_then_dense(tmp: Path, c_in, c_out, k, size, dense, seed):
    """A conv (many vectors per sample: the time placement copies it where columns are free)
    and a dense layer, compiled with the time and the naive placement, and five inputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    import anacc

    rng = np.random.default_rng(seed)
    out_hw = size - k + 1
    flat = c_out * out_hw * out_hw
    inits = [
        numpy_helper.from_array(rng.standard_normal((c_out, c_in, k, k)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal((flat, dense)).astype(np.float32), "v"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("MatMul", ["f", "v"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c_in, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", dense])],
        initializer=inits,
    )
    path = tmp / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    x = rng.uniform(0, 1, (5, c_in, size, size)).astype(np.float32)
    calib = {"x": rng.uniform(0, 1, (16, c_in, size, size)).astype(np.float32)}
    packed = anacc.compile(path, calib=calib)
    single = anacc.compile(path, calib=calib, placement="naive")
    return packed, single, x


def _same_outputs(packed, single, x) -> None:
    from anacc.runtime.session import run_program

    for backend in ("ideal", "quantized"):
        a = run_program(packed, {"x": x}, backend=backend).outputs["y"]
        b = run_program(single, {"x": x}, backend=backend).outputs["y"]
        np.testing.assert_array_equal(a, b)


@settings(max_examples=12, deadline=None)
@given(
    c_in=st.integers(1, 6),
    c_out=st.integers(1, 40),
    k=st.integers(1, 3),
    size=st.integers(3, 9),
    dense=st.integers(1, 300),
    seed=st.integers(0, 2**16),
)
def test_copies_compute_what_one_copy_computes(tmp_path_factory, c_in, c_out, k, size, dense, seed):
    """``ideal`` and ``quantized`` give the same outputs bit for bit with the time placement
    (copies where the columns allow them) and the naive one, whichever copy a vector ran on."""
    tmp = tmp_path_factory.mktemp("copies")
    packed, single, x = _conv_then_dense(tmp, c_in, c_out, k, size, dense, seed)
    conv = next(iter(packed.layers))
    assert single.layers[conv].analog.copies == 1
    _same_outputs(packed, single, x)


def test_a_copied_conv_computes_what_one_copy_computes(tmp_path):
    """The same with a conv the time placement surely copies (12 copies, 3 runs per sample)."""
    packed, single, x = _conv_then_dense(tmp_path, 2, 8, 3, 8, 10, 1)
    conv = next(iter(packed.layers))
    assert packed.layers[conv].analog.copies == 12 and single.layers[conv].analog.copies == 1
    _same_outputs(packed, single, x)

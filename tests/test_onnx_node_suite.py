"""ONNX's node test cases compile and reproduce their expected outputs through anacc.

The cases are ONNX's own (``onnx.backend.test.case.node``): a small model per op behaviour
with inputs and expected outputs, the independent reference. Held to them are the *kept*
cases (float32 tensors in and out, default domain, reproduced by onnxruntime); see
scripts/node_suite.py for how each runs and docs/ops.md for the counts and the list of cases
anacc refuses, which this test keeps true. The whole suite takes a minute and is marked slow;
a smoke subset of a few cases, each chosen for a path that once failed, runs always.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from anacc.compiler.ops import runs_digitally

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import node_suite  # noqa: E402

# Shares measured with onnx 1.23.2, onnxruntime 1.32.0, torch 2.13.0 (docs/ops.md): anacc
# 99.3 %, the torch path 90.9 %, node by node 80.8 %; the floors sit a little below.
MIN_ANACC_SHARE = 0.95
MIN_TORCH_PATH_SHARE = 0.88
MIN_NODE_BY_NODE_SHARE = 0.78

# module of onnx.backend.test.case.node -> cases from it, each for a path that once failed
SMOKE = {
    "relu": ["test_relu"],
    "constant": ["test_constant"],  # a Constant as the graph output
    "globalmaxpool": ["test_globalmaxpool"],  # opset 22 without a converter adapter
    "spacetodepth": ["test_spacetodepth_crd_mode_example"],  # opset 28 attribute value
    "rmsnormalization": ["test_rms_normalization_3d_axis2_epsilon"],  # op new in opset 23
    "attention": ["test_attention_4d_expanded", "test_attention_3d_gqa_causal"],
    "causal_conv_with_state": ["test_causal_conv_with_state_basic"],  # needs input shapes
    "resize": [
        "test_resize_downsample_scales_cubic_antialias",
        "test_resize_upsample_scales_cubic_A_n0p5_exclude_outside",
    ],
    "convtranspose": ["test_convtranspose_output_shape"],
    "lpnormalization": ["test_l2normalization_axis_0"],
    "mod": ["test_mod_float_edge_cases_fmod_0_float32"],  # refused: NaN/Inf input data
    "rangeop": ["test_range_float_type_positive_delta_expanded"],  # scalar inputs (a Loop)
    "scan": ["test_scan9_scalar"],  # a scalar input and output
}


def _docs() -> str:
    return node_suite.OPS_DOC.read_text()


@pytest.fixture(scope="module")
def smoke_cases() -> dict[str, node_suite.NodeCase]:
    wanted = {name for names in SMOKE.values() for name in names}
    cases = {c.name: c for c in node_suite.tensor_cases(sorted(SMOKE)) if c.name in wanted}
    assert set(cases) == wanted, f"cases missing from onnx: {sorted(wanted - set(cases))}"
    return cases


@pytest.mark.parametrize("name", sorted(n for names in SMOKE.values() for n in names))
def test_smoke_case_runs_through_anacc_and_the_torch_path(
    name: str, smoke_cases: dict[str, node_suite.NodeCase], tmp_path: Path
) -> None:
    case = smoke_cases[name]
    assert case.float32
    assert node_suite.run_onnxruntime(case) == "", "onnxruntime no longer reproduces the case"
    refused, torch_path, missing = node_suite.check_case(case, tmp_path)
    documented = node_suite.documented(_docs())
    if name in documented:
        assert not refused.ok
        assert refused.reason.startswith(documented[name].removesuffix("...")), refused.reason
        return
    assert refused.ok, refused.reason
    if missing:  # the ops keep the case off the torch path, as docs/ops.md lists
        assert all(f"| {op} |" in _docs() for op in missing)
        return
    assert torch_path is not None and torch_path.ok, torch_path


def test_docs_list_each_refused_case_with_a_reason() -> None:
    text = _docs()
    for markers in (node_suite.REFUSED, node_suite.COUNTS, node_suite.TORCH_GAPS):
        assert text.index(markers[0]) < text.index(markers[1])
    refused = node_suite.documented(text)
    assert refused, "the list of refused cases is empty or unreadable"
    assert all(reason.strip() for reason in refused.values())


def test_docs_list_the_ops_with_a_torch_form() -> None:
    listed = " ".join(node_suite.between(_docs(), node_suite.TORCH_FORMS).split())
    assert listed == node_suite.torch_forms_text(), "rerun scripts/node_suite.py --write"


def test_runs_digitally_answers_for_newer_opsets() -> None:
    assert runs_digitally("RMSNormalization", "", 23)
    assert runs_digitally("Attention", "", 25)
    assert runs_digitally("Swish", "", 24)  # a function op onnxruntime expands
    assert runs_digitally("Relu", "", 28)
    assert runs_digitally("Constant", "", 21)  # an initializer once the graph is loaded
    assert not runs_digitally("Attention", "", 21)  # not an op of opset 21
    assert not runs_digitally("Upsample", "", 10)  # deprecated: no kernel, no function
    assert not runs_digitally("ImageDecoder", "", 20)
    assert not runs_digitally("NoSuchOp", "", 21)


@pytest.mark.slow
def test_node_suite_reproduces_through_anacc_and_the_torch_forms(tmp_path: Path) -> None:
    cases = node_suite.reproduced_cases()
    run = node_suite.run_suite(cases, tmp_path)
    summary = "\n".join(run.summary())
    assert run.kept >= 700, summary  # the suite is all there

    refused = set(run.refused)
    documented = set(node_suite.documented(_docs()))
    assert refused == documented, (
        f"refused but not in docs/ops.md: {sorted(refused - documented)}; "
        f"in docs/ops.md but reproduced: {sorted(documented - refused)} "
        "(rerun scripts/node_suite.py --write and check the reasons)\n" + summary
    )
    assert sum(o.ok for o in run.anacc) >= MIN_ANACC_SHARE * run.kept, summary

    failing = {o.name: o.reason for o in run.torch if not o.ok}
    assert not failing, f"torch forms that exist but do not reproduce: {failing}"
    assert sum(o.ok for o in run.torch) >= MIN_TORCH_PATH_SHARE * run.kept, summary
    assert sum(o.ok for o in run.nodes) >= MIN_NODE_BY_NODE_SHARE * run.tensor_cases, summary

    # every op of a model onnxruntime runs at an opset above 21 counts as digital
    newer = [c for c in cases if max(i.version for i in c.model.opset_import) > 21]
    assert len(newer) > 300
    wrong = {
        (n.op_type, i.version)
        for c in newer
        for i in c.model.opset_import
        for n in c.model.graph.node
        if not runs_digitally(n.op_type, "", i.version)
    }
    assert not wrong, f"runs_digitally says no to ops onnxruntime runs: {sorted(wrong)}"

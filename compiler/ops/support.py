"""Which ops the digital side runs: onnxruntime's CPU kernels and ONNX's function ops.

onnxruntime runs an op of a model when its CPU provider registers a kernel for the op's
version at the model's opset, when ONNX defines the op as a function of other ops (then
onnxruntime expands it), or when it resolves the op while loading the graph (``Constant``
becomes an initializer); the same rules hold for models kept at an opset newer than 21.
:func:`runs_digitally` answers that for one op, whatever its element types (onnxruntime lacks
some types of some kernels; the compiler finds those when it loads the program into
onnxruntime); :func:`cpu_kernel_ops` lists the default-domain ops with CPU kernels (for the
docs).
"""

from __future__ import annotations

import functools

import onnx
from anacc.compiler.ops.registry import normal_domain

_CPU = "CPUExecutionProvider"
# The domains onnxruntime's CPU provider serves.
DOMAINS = ("", "ai.onnx.ml", "com.microsoft")
# Ops onnxruntime resolves while loading a graph, without a kernel.
_GRAPH_LEVEL = frozenset({("", "Constant")})


@functools.cache
def _kernels() -> dict[tuple[str, str], tuple[tuple[int, int], ...]]:
    from onnxruntime.capi import _pybind_state

    table: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for k in _pybind_state.get_all_opkernel_def():
        if k.provider == _CPU:
            table.setdefault((normal_domain(k.domain), k.op_name), []).append(
                tuple(k.version_range)
            )
    return {key: tuple(ranges) for key, ranges in table.items()}


def _since_version(op: str, domain: str, opset: int) -> int | None:
    """The version of ``op``'s schema in force at ``opset``; None if ONNX does not know it."""
    try:
        return onnx.defs.get_schema(op, opset, domain).since_version
    except onnx.defs.SchemaError:
        return None


def runs_digitally(op: str, domain: str, opset: int) -> bool:
    """True if onnxruntime (CPU) runs ``op`` of ``domain`` in a model of that domain's
    version ``opset``."""
    domain = normal_domain(domain)
    ranges = _kernels().get((domain, op))
    since = _since_version(op, domain, opset)
    if (domain, op) in _GRAPH_LEVEL:
        return since is not None
    if ranges is not None:
        version = since if since is not None else opset
        if any(lo <= version <= hi for lo, hi in ranges):
            return True
    if since is None:
        return False
    schema = onnx.defs.get_schema(op, opset, domain)
    return bool(schema.has_function or schema.has_context_dependent_function)


def cpu_kernel_ops(min_opset: int, max_opset: int) -> list[str]:
    """Default-domain ops with a CPU kernel valid somewhere in ``min_opset..max_opset``."""
    return sorted(
        name
        for (domain, name), ranges in _kernels().items()
        if not domain and any(lo <= max_opset and hi >= min_opset for lo, hi in ranges)
    )

"""anacc: compile ONNX models onto analog matrix-multiply chips.

>>> import anacc
>>> program = anacc.compile("models/digits_mlp.onnx", calib="models/data/digits_calib.npz")
>>> session = anacc.Session(program, backend="emulator", seed=0)
>>> outputs = session.run({"input": x})

``compile``, ``Program`` and ``Session`` are imported on first use, so ``anacc --help`` stays
quick.
"""

from anacc.errors import AnaccError

__version__ = "0.2.0"

__all__ = ["AnaccError", "Program", "Session", "__version__", "compile"]


def __getattr__(name: str):
    if name in ("compile", "Program", "Session"):
        from anacc import api

        return getattr(api, name)
    raise AttributeError(f"module 'anacc' has no attribute {name!r}")

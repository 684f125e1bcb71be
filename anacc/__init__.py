"""anacc: compile ONNX models onto analog matrix-multiply chips."""

from anacc.errors import AnaccError

__version__ = "0.1.0"

__all__ = ["AnaccError", "__version__"]

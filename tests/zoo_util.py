"""The model zoo (models/zoo) imported as the package ``zoo``, without putting the
repository root on sys.path (which would make compiler, passes and runtime importable as
top-level names)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ZOO_DIR = Path(__file__).resolve().parents[1] / "models" / "zoo"


def load_zoo() -> ModuleType:
    if "zoo" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "zoo", ZOO_DIR / "__init__.py", submodule_search_locations=[str(ZOO_DIR)]
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["zoo"] = module
        spec.loader.exec_module(module)
    return sys.modules["zoo"]

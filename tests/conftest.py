"""Suite-wide hooks: the robustness suite's closing line that says how many cases it tried.

Each process keeps its :class:`~robustness_util.Tally` in ``config.stash``. At the end of the
session the tallies are added up as plain dicts (under pytest-xdist a worker hands its tally
to the controller through ``workeroutput``) and printed as
``robustness: N cases, T tracebacks, H hangs (per category)``. They live here, not in
``tests/robustness/``, because pytest-xdist's controller loads only the conftest files of the
paths it is given.
"""

from __future__ import annotations

from typing import Any

import pytest

TALLY = pytest.StashKey[Any]()
TOTALS = pytest.StashKey[dict]()
WORKER_KEY = "robustness_tally"


@pytest.fixture(scope="session")
def tally(pytestconfig: pytest.Config) -> Any:
    from robustness_util import Tally  # tests/robustness is on sys.path for its own tests

    if TALLY not in pytestconfig.stash:
        pytestconfig.stash[TALLY] = Tally()
    return pytestconfig.stash[TALLY]


def _add(config: pytest.Config, part: dict[str, Any]) -> None:
    totals = config.stash.setdefault(
        TOTALS, {"cases": 0, "tracebacks": 0, "hangs": 0, "by_category": {}}
    )
    for key in ("cases", "tracebacks", "hangs"):
        totals[key] += part[key]
    for name, n in part["by_category"].items():
        totals["by_category"][name] = totals["by_category"].get(name, 0) + n


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if TALLY not in config.stash:
        return
    part = config.stash[TALLY].as_dict()
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[WORKER_KEY] = part
    else:
        _add(config, part)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    part = getattr(node, "workeroutput", {}).get(WORKER_KEY)
    if part is not None:
        _add(node.config, part)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    totals = config.stash.get(TOTALS, None)
    if not totals or not totals["cases"]:
        return
    parts = ", ".join(f"{k} {v}" for k, v in sorted(totals["by_category"].items()))
    terminalreporter.write_line(
        f"robustness: {totals['cases']} cases, {totals['tracebacks']} tracebacks, "
        f"{totals['hangs']} hangs ({parts})"
    )

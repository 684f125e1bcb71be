"""Suite-wide hooks: the robustness suite's closing line that says how many cases it tried,
and ``ray_cluster``, a Ray cluster started the way a user starts one (for the tests of
``anacc tune`` and of chip instances on a cluster).

Each process keeps its :class:`~robustness_util.Tally` in ``config.stash``. At the end of the
session the tallies are added up as plain dicts (under pytest-xdist a worker hands its tally
to the controller through ``workeroutput``) and printed as
``robustness: N cases, T tracebacks, H hangs (per category)``. They live here, not in
``tests/robustness/``, because pytest-xdist's controller loads only the conftest files of the
paths it is given.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# Property tests check results, not speed: a loaded CI machine must not fail them on time.
settings.register_profile("anacc", deadline=None)
settings.load_profile("anacc")

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


# -- a Ray cluster --------------------------------------------------------------------------------

HAVE_RAY = importlib.util.find_spec("ray") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(request):
    """A cluster started the way a user starts one, ``ray start --head`` with one CPU, on a
    free port; it requires a token, as every cluster started where a Ray token exists does
    (any local search leaves one in ~/.ray). Its home, token and temp folder are its own.
    Yields the port, the environment of the cluster's users and Ray's temp folder."""
    if not HAVE_RAY:
        pytest.skip("needs the tune extra (ray)")
    # a short root: Ray puts unix sockets under its temp folder, whose paths are length-limited
    root = Path(tempfile.mkdtemp(prefix="anacc-rc-"))
    home = root / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"}
    }
    env.update(HOME=str(home), RAY_TMPDIR=str(root / "tmp"), RAY_USAGE_STATS_ENABLED="0")
    port = free_port()
    ray = shutil.which("ray", path=str(Path(sys.executable).parent))
    assert ray is not None, "the tune extra installs Ray's command line"
    start = subprocess.Popen(
        [ray, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )

    def stop() -> None:
        # Not `ray stop --force`: it ends every Ray process on the machine, the module's own
        # session and anyone else's included. The cluster's daemons stay in the process
        # group of `ray start`: end that group, at once, as --force does.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(start.pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)

    request.addfinalizer(stop)
    output, _ = start.communicate(timeout=120)
    assert start.returncode == 0, output
    yield port, env, root / "tmp" / "ray"

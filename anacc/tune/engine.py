"""The engine of a search: a Ray session, local or on an existing cluster.

Contract. :func:`require_engine` says how to install Ray Tune and Optuna when they are missing
(they live in the ``tune`` extra and are imported on use only). :func:`ray_session` yields the
Ray module with a session: the caller's if one is initialized, else a local instance that it
starts and stops, or the cluster at an address that it joins and leaves. An address is
``auto`` (the cluster started on this machine), ``HOST:PORT`` (the cluster's GCS, the port of
``ray start --head --port``) or ``ray://HOST:PORT`` (Ray Client); :func:`check_address`
refuses a malformed one, or one that does not answer within :data:`ADDRESS_TIMEOUT_S`, with
one :class:`~anacc.errors.OptionError` before anything runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from typing import Any

from anacc.errors import OptionError

ADDRESS_TIMEOUT_S = 5.0
INSTALL_HINT = "pip install 'anacc[tune]'"


def require_engine() -> None:
    """Raise :class:`OptionError` with the install line when Ray Tune or Optuna is missing."""
    try:
        import optuna  # noqa: F401
        import ray.tune  # noqa: F401
        from ray.tune.search.optuna import OptunaSearch  # noqa: F401
    except ImportError as exc:
        raise OptionError(
            f"anacc tune needs Ray Tune and Optuna ({exc}); install them with: {INSTALL_HINT}"
        ) from None


def check_address(address: str) -> None:
    """Refuse a malformed ``address``, or one whose port does not answer in time."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise OptionError(f"Ray address '{address}': write HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=ADDRESS_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OptionError(
            f"Ray cluster at '{address}' is not reachable ({reason}); check the address or "
            "start the cluster with 'ray start --head'"
        ) from None


@contextlib.contextmanager
def ray_session(address: str | None, cpus: int) -> Iterator[Any]:
    """The Ray module with a session: the caller's if one is initialized (used as it is,
    whatever ``address`` says), else a local instance (``cpus`` CPUs, temp files in a fresh
    temp folder, no dashboard, no usage reporting) or the cluster at ``address`` (checked to
    answer within :data:`ADDRESS_TIMEOUT_S` first); a session started here is stopped at the
    end."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    tmp = None
    try:
        if address is not None:
            check_address(address)
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        else:
            # A short folder: Ray puts unix sockets there, whose paths are length-limited.
            tmp = tempfile.mkdtemp(prefix="anacc-ray-")
            ray.init(
                num_cpus=cpus,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
                _temp_dir=tmp,
                _node_ip_address="127.0.0.1",
            )
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        where = f"the Ray cluster at '{address}'" if address else "a local Ray instance"
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OptionError(f"cannot start or join {where}: {message}") from None
    try:
        yield ray
    finally:
        ray.shutdown()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

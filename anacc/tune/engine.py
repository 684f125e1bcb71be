"""The engine of a search: a Ray session, local or on an existing cluster.

Contract. :func:`require_engine` says how to install Ray Tune and Optuna when they are missing
(they live in the ``tune`` extra and are imported on use only). :func:`ray_session` yields the
Ray module with a session: the caller's if one is initialized, else a local instance that it
starts and stops, or the cluster at an address that it joins and leaves. An address is
``auto`` (the cluster started on this machine), ``HOST:PORT`` (the cluster's GCS, the port of
``ray start --head --port``) or ``ray://HOST:PORT`` (Ray Client); :func:`check_address`
refuses a malformed one, or one that does not answer within :data:`ADDRESS_TIMEOUT_S`, with
one :class:`~anacc.errors.OptionError` before anything runs.

Token authentication. Since Ray 2.59, a cluster started on a machine that holds a Ray token
(``~/.ray/auth_token``, ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``; any local ``ray.init()``
leaves one, a local search included) requires that token. ``ray.init(address="auto")`` turns
token mode on for the driver when a token is there; an explicit address never does, so a
driver joining by ``HOST:PORT`` is refused on every request until Ray gives up connecting.
:func:`ray_session` therefore applies Ray's ``auto`` rule to an explicit ``HOST:PORT`` that
names this machine, where the local token is the cluster's token. For a cluster on another
machine the token stays Ray's business: set ``RAY_AUTH_MODE=token`` with the cluster's token,
as Ray documents; anacc never sends the local token elsewhere on its own.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from anacc.errors import OptionError

ADDRESS_TIMEOUT_S = 5.0
INSTALL_HINT = "pip install 'anacc[tune]'"
CLIENT_SCHEME = "ray://"
AUTH_HINT = (
    "if the cluster uses token authentication, set RAY_AUTH_MODE=token and give its token "
    "(~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)"
)


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


@dataclass(frozen=True)
class ClusterAddress:
    """A parsed ``HOST:PORT`` or ``ray://HOST:PORT``; ``host`` without IPv6 brackets."""

    host: str
    port: int
    client: bool


def parse_address(address: str) -> ClusterAddress | None:
    """The host and port of ``address``; None for ``auto``. A malformed one is an error."""
    if address == "auto":
        return None
    client = address.startswith(CLIENT_SCHEME)
    host, sep, port = address.removeprefix(CLIENT_SCHEME).rpartition(":")
    if not sep or not host or not port.isdigit():
        raise OptionError(f"Ray address '{address}': write HOST:PORT, ray://HOST:PORT or auto")
    return ClusterAddress(host.strip("[]"), int(port), client)


def check_address(address: str) -> None:
    """Refuse a malformed ``address``, or one whose port does not answer in time."""
    parsed = parse_address(address)
    if parsed is None:
        return
    try:
        with socket.create_connection((parsed.host, parsed.port), timeout=ADDRESS_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OptionError(
            f"Ray cluster at '{address}' is not reachable ({reason}); check the address or "
            "start the cluster with 'ray start --head'"
        ) from None


def is_this_machine(host: str) -> bool:
    """Whether ``host`` names this machine: a loopback address, or one a socket can bind to
    (only the machine's own addresses can be bound)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    for family, _, _, _, sockaddr in infos:
        ip = sockaddr[0]
        if ipaddress.ip_address(ip.split("%")[0]).is_loopback:
            return True
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((ip, 0))
            except OSError:
                continue
            return True
    return False


def _use_local_token() -> None:
    """Turn Ray's token mode on for this process when a local token exists and the user has
    not chosen a mode (``RAY_AUTH_MODE``): what ``ray.init(address="auto")`` does itself.

    Ray reads the mode once into its configuration, so setting the variable alone is not
    enough once Ray is imported; its own helper also refreshes the configuration. As after
    ``auto``, the mode stays on for the rest of the process; a cluster without
    authentication accepts a driver that sends a token, so this closes no door. Ray before
    token authentication by default has no such helper and needs nothing."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:
        return
    # The helper warns that token mode is on; ``auto`` says nothing at the session's
    # logging level, and neither should an explicit address.
    auth_logger = logging.getLogger("ray._private.authentication")
    level = auth_logger.level
    auth_logger.setLevel(logging.ERROR)
    try:
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    finally:
        auth_logger.setLevel(level)


def _join(ray: Any, address: str) -> None:
    check_address(address)
    parsed = parse_address(address)
    if parsed is not None and not parsed.client and is_this_machine(parsed.host):
        _use_local_token()
    ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)


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
    # RayError: e.g. token mode on and no token to be found (AuthenticationError)
    failures = (ConnectionError, RuntimeError, ValueError, TimeoutError, ray.exceptions.RayError)
    tmp = None
    try:
        if address is not None:
            _join(ray, address)
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
    except failures as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        where = f"the Ray cluster at '{address}'" if address else "a local Ray instance"
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = ""
        if address is not None and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
            hint = f"; {AUTH_HINT}"
        raise OptionError(f"cannot start or join {where}: {message}{hint}") from None
    try:
        yield ray
    finally:
        ray.shutdown()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

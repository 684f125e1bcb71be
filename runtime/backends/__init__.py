"""Backends that execute analog layers: ``ideal``, ``quantized`` and ``emulator``.

``get_backend(name, chip, profile, seed=0)`` builds one by name; ``BACKEND_NAMES`` lists them.
The interface is in :mod:`anacc.runtime.backends.base`.
"""

from __future__ import annotations

from anacc.compiler.chip import ChipSpec, Profile
from anacc.runtime.backends.base import AnalogBackend, Backend
from anacc.runtime.backends.emulator import EmulatorBackend
from anacc.runtime.backends.ideal import IdealBackend
from anacc.runtime.backends.quantized import QuantizedBackend

from anacc.errors import OptionError

BACKEND_NAMES = ("ideal", "quantized", "emulator")

__all__ = [
    "BACKEND_NAMES",
    "AnalogBackend",
    "Backend",
    "EmulatorBackend",
    "IdealBackend",
    "QuantizedBackend",
    "get_backend",
]


def get_backend(name: str, chip: ChipSpec, profile: Profile | str, seed: int = 0) -> Backend:
    """The backend ``name`` for ``chip`` at ``profile`` (a :class:`Profile` or its name).

    ``seed`` is the emulated chip instance id (fixed-pattern effects and the noise stream);
    the ``ideal`` and ``quantized`` backends are deterministic and ignore it.
    """
    if isinstance(profile, str):
        profile = chip.profile(profile)
    if seed < 0:
        raise OptionError(f"the chip instance seed must be a non-negative integer, got {seed}")
    if name == "ideal":
        return IdealBackend(chip, profile)
    if name == "quantized":
        return QuantizedBackend(chip, profile)
    if name == "emulator":
        return EmulatorBackend(chip, profile, seed=seed)
    raise OptionError(f"unknown backend '{name}'; choose one of: {', '.join(BACKEND_NAMES)}")

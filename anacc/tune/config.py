"""From one configuration of the search space to what the compiler takes: a chip profile and
compile options.

Contract. A configuration is a full mapping of dimension name -> value (see
:meth:`~anacc.tune.space.SearchSpace.full`). :func:`tuned_chip` adds its knobs as the
profile :data:`TUNED_PROFILE` to a copy of the chip (the gain per send follows from them
through the chip's analog model); :func:`compile_options` gives the matching
:class:`~anacc.compiler.options.CompileOptions`. :func:`baseline_points` are the chip's named
profiles at the default compile options, where the space holds them: the first trials of every
new search.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from anacc.compiler.chip import ChipSpec, Profile
from anacc.compiler.options import CompileOptions
from anacc.tune.space import SearchSpace

TUNED_PROFILE = "tuned"

_DEFAULTS = CompileOptions()


def tuned_profile(chip: ChipSpec, config: Mapping[str, Any], name: str = TUNED_PROFILE) -> Profile:
    """A profile with the knobs of ``config`` over ``chip``'s analog model."""
    return Profile(
        name=name,
        description=(
            f"found by anacc tune: OTA bias {config['ota_bias']}, tau_syn "
            f"{config['tau_syn_us']:.4g} us, wait {config['wait_cycles']} cycles"
        ),
        ota_bias=int(config["ota_bias"]),
        tau_syn_us=float(config["tau_syn_us"]),
        wait_cycles=int(config["wait_cycles"]),
        analog=chip.analog,
    )


def tuned_chip(chip: ChipSpec, config: Mapping[str, Any], name: str = TUNED_PROFILE) -> ChipSpec:
    """A copy of ``chip`` with the profile of ``config`` added (or replaced) as ``name``."""
    profiles = {**chip.profiles, name: tuned_profile(chip, config, name)}
    return dataclasses.replace(chip, profiles=profiles)


def scale_option(config: Mapping[str, Any]) -> str:
    """The ``--scale`` option of ``config`` (``percentile:<p>`` or the method's name)."""
    method = config["scale_method"]
    # One spelling for the trial and the printed command, free of float noise from the grid.
    p = config["scale_percentile"]
    return f"percentile:{p:.10g}" if method == "percentile" else method


def compile_options(config: Mapping[str, Any]) -> CompileOptions:
    """The compile options of ``config`` (the others at their defaults)."""
    return CompileOptions(
        scale=scale_option(config),
        weight_scale=config["weight_scale"],
        signed=config["signed"],
        row_order=config["row_order"],
        gain_factor=float(config["gain_factor"]),
    )


def default_config(profile: Profile) -> dict[str, Any]:
    """The configuration of a named profile at the default compile options."""
    return {
        "ota_bias": profile.ota_bias,
        "tau_syn_us": profile.tau_syn_us,
        "wait_cycles": profile.wait_cycles,
        "gain_factor": _DEFAULTS.gain_factor,
        "scale_method": _DEFAULTS.scale_method,
        "scale_percentile": _DEFAULTS.percentile,
        "weight_scale": _DEFAULTS.weight_scale,
        "row_order": _DEFAULTS.row_order,
        "signed": _DEFAULTS.signed,
    }


def baseline_points(chip: ChipSpec, space: SearchSpace) -> dict[str, dict[str, Any]]:
    """Searched parameters of each named profile at default options that the space holds."""
    out = {}
    for name, profile in sorted(chip.profiles.items()):
        config = default_config(profile)
        if all(d.contains(config[d.name]) for d in space.dimensions):
            out[name] = {d.name: config[d.name] for d in space.searched}
    return out


def same_params(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two parameter sets are the same point (floats equal to rounding)."""
    if a.keys() != b.keys():
        return False
    for k, v in a.items():
        w = b[k]
        if isinstance(v, float) or isinstance(w, float):
            if isinstance(v, str) or isinstance(w, str) or not math.isclose(v, w, rel_tol=1e-12):
                return False
        elif v != w:
            return False
    return True


# -- settings and trial records -----------------------------------------------------------------

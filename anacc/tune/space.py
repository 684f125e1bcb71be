"""The search space of ``anacc tune``: its dimensions, from the chip and a ``--space`` file.

Contract. :func:`search_space` spans the chip's physical knobs (``ota_bias``, ``tau_syn_us``,
``wait_cycles``, ranges from ``chip.analog``), the global ``gain_factor`` (limited by
``ranges.num_sends_max``), the input scale method and percentile, the weight scale, the row
order and the signed-input strategy, in the fixed order :data:`DIMENSION_NAMES`. Overrides
(from :func:`load_space_file`) narrow or pin dimensions; anything malformed is one
:class:`~anacc.errors.OptionError` that names the source and the dimension. A space
serializes to plain JSON (``to_dict``/``from_dict``) for the settings file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from anacc.compiler.chip import ChipSpec
from anacc.compiler.options import ROW_ORDERS, SIGNED_STRATEGIES, WEIGHT_SCALES, CompileOptions
from anacc.errors import OptionError

GAIN_FACTOR_SPAN = 4.0  # default gain factor range: [1/span, span], capped by num_sends_max
PERCENTILE_RANGE = (99.0, 99.999)  # default search range of the scale percentile
PERCENTILE_STEP = 0.001
SCALE_METHODS = ("max", "percentile", "mse", "ema")

_DEFAULTS = CompileOptions()


@dataclass(frozen=True)
class Dimension:
    """One coordinate of the search space.

    ``kind`` is ``int``, ``float`` or ``choice``. Numeric dimensions span ``low..high``
    (log-uniform when ``log``, on a grid of ``step`` when given), choice dimensions
    ``choices``. A dimension with one value (``low == high`` or a single choice) is fixed:
    it is not searched.
    """

    name: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[str, ...] = ()
    step: float | None = None

    @property
    def fixed(self) -> bool:
        return len(self.choices) == 1 if self.kind == "choice" else self.low == self.high

    @property
    def fixed_value(self) -> Any:
        assert self.fixed, f"{self.name} is searched"
        if self.kind == "choice":
            return self.choices[0]
        return int(self.low) if self.kind == "int" else float(self.low)

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.kind == "int" and value != int(value):
            return False
        return self.low <= value <= self.high

    def describe(self) -> str:
        if self.kind == "choice":
            return " | ".join(self.choices)
        scale = ", log" if self.log else ""
        step = f", step {self.step:g}" if self.step else ""
        return f"{self.low:g} .. {self.high:g} ({self.kind}{scale}{step})"

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "choice":
            return {"name": self.name, "kind": self.kind, "choices": list(self.choices)}
        low, high = (int(self.low), int(self.high)) if self.kind == "int" else (self.low, self.high)
        return {
            "name": self.name,
            "kind": self.kind,
            "low": low,
            "high": high,
            "log": self.log,
            "step": self.step,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Dimension:
        if d["kind"] == "choice":
            return cls(d["name"], "choice", choices=tuple(d["choices"]))
        return cls(d["name"], d["kind"], d["low"], d["high"], bool(d["log"]), step=d["step"])


@dataclass(frozen=True)
class SearchSpace:
    """The dimensions of a search, in a fixed order (see :func:`search_space`)."""

    dimensions: tuple[Dimension, ...]

    @property
    def searched(self) -> tuple[Dimension, ...]:
        return tuple(d for d in self.dimensions if not d.fixed)

    def dimension(self, name: str) -> Dimension:
        return next(d for d in self.dimensions if d.name == name)

    def full(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The complete configuration: ``params`` of the searched dimensions plus the fixed."""
        out = {}
        for d in self.dimensions:
            if d.fixed:
                out[d.name] = d.fixed_value
            else:
                value = params[d.name]
                out[d.name] = int(value) if d.kind == "int" else value
        return out

    def to_dict(self) -> list[dict[str, Any]]:
        return [d.to_dict() for d in self.dimensions]

    @classmethod
    def from_dict(cls, data: Sequence[Mapping[str, Any]]) -> SearchSpace:
        return cls(tuple(Dimension.from_dict(d) for d in data))


def _numeric_limits(chip: ChipSpec) -> dict[str, tuple[str, float, float, bool, float, float]]:
    """name -> (kind, default low, default high, log, hard low, hard high)."""
    a = chip.analog
    for key, (lo, hi) in (
        ("ota_bias_range", a.ota_bias_range),
        ("tau_syn_us_range", a.tau_syn_us_range),
        ("wait_cycles_range", a.wait_cycles_range),
    ):
        if not 0 < lo <= hi:
            raise OptionError(
                f"chip '{chip.name}': range 'analog.{key}' is [{lo:g}, {hi:g}]; the search "
                "needs a positive [min, max] with min <= max; fix the chip file"
            )
    sends = chip.num_sends_max
    if sends < 1:
        raise OptionError(
            f"chip '{chip.name}': 'ranges.num_sends_max' is {sends}; it must be at least 1"
        )
    span = min(GAIN_FACTOR_SPAN, float(sends))
    return {
        "ota_bias": ("int", *a.ota_bias_range, True, *a.ota_bias_range),
        "tau_syn_us": ("float", *a.tau_syn_us_range, True, *a.tau_syn_us_range),
        "wait_cycles": ("int", *a.wait_cycles_range, True, *a.wait_cycles_range),
        "gain_factor": ("float", 1.0 / span, span, True, 1.0 / sends, float(sends)),
        "scale_percentile": ("float", *PERCENTILE_RANGE, False, 50.0, 100.0),
    }


# choice dimension -> (valid choices, default choices)
_CHOICES = MappingProxyType(
    {
        "scale_method": (SCALE_METHODS, SCALE_METHODS),
        "weight_scale": (WEIGHT_SCALES, (_DEFAULTS.weight_scale,)),
        "row_order": (ROW_ORDERS, ROW_ORDERS),
        "signed": (SIGNED_STRATEGIES, SIGNED_STRATEGIES),
    }
)
DIMENSION_NAMES = (
    "ota_bias",
    "tau_syn_us",
    "wait_cycles",
    "gain_factor",
    "scale_method",
    "scale_percentile",
    "weight_scale",
    "row_order",
    "signed",
)


def search_space(
    chip: ChipSpec, overrides: Mapping[str, Any] | None = None, source: str = "search space"
) -> SearchSpace:
    """The search space of ``chip``, narrowed or pinned by ``overrides``.

    ``overrides`` maps a dimension name to a ``[min, max]`` list or a single number (numeric
    dimensions; within the chip's range for the physical knobs, ``1/num_sends_max ..
    num_sends_max`` for the gain factor, ``50 .. 100`` for the percentile) or to a list of
    choices or a single choice. The weight scale is pinned to ``column`` unless overridden.
    Anything malformed raises :class:`OptionError` naming ``source`` and the dimension.
    """
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(DIMENSION_NAMES))
    if unknown:
        raise OptionError(
            f"{source}: unknown dimension '{unknown[0]}'; use {', '.join(DIMENSION_NAMES)}"
        )
    limits = _numeric_limits(chip)
    dims = []
    for name in DIMENSION_NAMES:
        if name in limits:
            kind, low, high, log, hard_low, hard_high = limits[name]
            if name in overrides:
                low, high = _numeric_override(
                    overrides[name], name, kind, hard_low, hard_high, source
                )
            step = PERCENTILE_STEP if name == "scale_percentile" else None
            dims.append(Dimension(name, kind, low, high, log, step=step))
        else:
            valid, default = _CHOICES[name]
            choices = (
                _choice_override(overrides[name], name, valid, source)
                if name in overrides
                else default
            )
            dims.append(Dimension(name, "choice", choices=tuple(choices)))
    space = SearchSpace(tuple(dims))
    if "percentile" not in space.dimension("scale_method").choices:
        p = _DEFAULTS.percentile or PERCENTILE_RANGE[1]
        dims = [
            Dimension(d.name, "float", p, p) if d.name == "scale_percentile" else d for d in dims
        ]
        space = SearchSpace(tuple(dims))
    if not space.searched:
        raise OptionError(f"{source}: every dimension is fixed; leave at least one to search")
    return space


def _numeric_override(
    value: Any, name: str, kind: str, hard_low: float, hard_high: float, source: str
) -> tuple[float, float]:
    want = f"a number or [min, max] within {hard_low:g}..{hard_high:g}"
    if kind == "int":
        want = f"an integer or [min, max] of integers within {hard_low:g}..{hard_high:g}"

    def number(v: Any) -> bool:
        ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        return ok and (kind != "int" or float(v).is_integer())

    if number(value):
        low = high = value
    elif isinstance(value, list) and len(value) == 2 and all(number(v) for v in value):
        low, high = value
    else:
        raise OptionError(f"{source}: '{name}' must be {want}, got {json.dumps(value)}")
    if low > high:
        raise OptionError(
            f"{source}: '{name}' range [{low:g}, {high:g}] is inverted; write [min, max]"
        )
    if low < hard_low or high > hard_high or (name == "scale_percentile" and low <= hard_low):
        raise OptionError(
            f"{source}: '{name}' range [{low:g}, {high:g}] leaves the allowed "
            f"{hard_low:g}..{hard_high:g}; narrow it"
        )
    return float(low), float(high)


def _choice_override(value: Any, name: str, valid: Sequence[str], source: str) -> list[str]:
    choices = [value] if isinstance(value, str) else value
    ok = (
        isinstance(choices, list)
        and choices
        and all(isinstance(c, str) for c in choices)
        and len(set(choices)) == len(choices)
    )
    if not ok:
        raise OptionError(
            f"{source}: '{name}' must be one of {', '.join(valid)} or a list of distinct "
            f"ones, got {json.dumps(value)}"
        )
    bad = [c for c in choices if c not in valid]
    if bad:
        raise OptionError(f"{source}: '{name}' has no choice '{bad[0]}'; use {', '.join(valid)}")
    return choices


def load_space_file(path: str | Path) -> dict[str, Any]:
    """The overrides of a ``--space`` JSON file (an object of dimension name -> value)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OptionError(f"{path}: no such search space file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OptionError(f"{path}: not a readable JSON file ({exc}); fix it") from None
    if not isinstance(data, dict):
        raise OptionError(f"{path}: must hold a JSON object of dimension name -> range")
    return data

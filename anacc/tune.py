"""``anacc tune``: search a calibration profile and compile options for one model.

Contract. A search evaluates ``trials`` configurations of the *search space*: the chip's
physical knobs (``ota_bias``, ``tau_syn_us``, ``wait_cycles``, ranges from ``chip.analog``),
the global ``gain_factor`` (limited by ``ranges.num_sends_max``), the input scale method and
percentile, the weight scale, the row order and the signed-input strategy. A configuration
becomes a profile ``tuned`` in a copy of the chip (its gain per send follows from the knobs),
is compiled, optionally fine-tuned (per emulated chip instance), and evaluated on the emulator
on the validation data for chip instances ``0..seeds-1`` (mean and spread). Every trial also
records the estimated energy and time per inference (:func:`anacc.compiler.cost.program_cost`
with the active inputs measured on the first :data:`COST_SAMPLES` validation samples); the
``accuracy-energy`` objective optimizes both, and the Pareto front is kept in the report.

The first trials of a new search are the chip's named profiles at the default compile
options (where the space contains them), so every report has its baselines.

Engine: Ray Tune with its Optuna search algorithm (TPE). anacc starts a small local Ray
instance and stops it afterwards, joins an existing cluster (``address``), or uses the Ray
session of the calling process if one is already initialized. Ray and Optuna are imported on
use only; they live in the ``tune`` extra.

Bookkeeping in ``out_dir``: ``tune.json`` (the settings, the resolved chip and space, the
model's hash), ``trials.jsonl`` (one line per finished trial, appended by the driver as each
trial ends) and the Tune experiment folders under ``ray/``. Running the same search on the
same folder again (``resume``) reads the finished trials back, hands them to the sampler as
history and runs only the remaining ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shlex
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anacc.compiler.chip import ChipSpec, Profile
from anacc.compiler.datafile import Dataset, InputSpec, load_dataset
from anacc.compiler.options import ROW_ORDERS, SIGNED_STRATEGIES, WEIGHT_SCALES, CompileOptions
from anacc.compiler.program import atomic_write
from anacc.errors import AnaccError, DataError, OptionError

OBJECTIVES = ("accuracy", "accuracy-energy")
TUNED_PROFILE = "tuned"
SETTINGS_FILE = "tune.json"
TRIALS_FILE = "trials.jsonl"
RAY_FOLDER = "ray"
COST_SAMPLES = 256  # validation samples whose active inputs enter the energy estimate
GAIN_FACTOR_SPAN = 4.0  # default gain factor range: [1/span, span], capped by num_sends_max
PERCENTILE_RANGE = (99.0, 99.999)  # default search range of the scale percentile
PERCENTILE_STEP = 0.001
ADDRESS_TIMEOUT_S = 5.0
STUDY_NAME = "anacc-tune"
INSTALL_HINT = "pip install 'anacc[tune]'"
SETTINGS_VERSION = 1

_DEFAULTS = CompileOptions()
SCALE_METHODS = ("max", "percentile", "mse", "ema")


# -- search space ------------------------------------------------------------------------------


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

    def distributions(self) -> dict[str, Any]:
        """Optuna distributions of the searched dimensions."""
        import optuna

        out: dict[str, Any] = {}
        for d in self.searched:
            if d.kind == "choice":
                out[d.name] = optuna.distributions.CategoricalDistribution(list(d.choices))
            elif d.kind == "int":
                out[d.name] = optuna.distributions.IntDistribution(
                    int(d.low), int(d.high), log=d.log
                )
            else:
                out[d.name] = optuna.distributions.FloatDistribution(
                    d.low, d.high, log=d.log, step=d.step
                )
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


_CHOICES = {
    "scale_method": (SCALE_METHODS, SCALE_METHODS),
    "weight_scale": (WEIGHT_SCALES, (_DEFAULTS.weight_scale,)),
    "row_order": (ROW_ORDERS, ROW_ORDERS),
    "signed": (SIGNED_STRATEGIES, SIGNED_STRATEGIES),
}
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


# -- from a configuration to a chip profile and compile options ---------------------------------


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


@dataclass(frozen=True)
class TuneSettings:
    """Everything that defines a search; ``trials`` is the total number of trials."""

    model: Path
    val: Path
    chip: ChipSpec
    space: SearchSpace
    calib: Path | None = None
    train: Path | None = None
    finetune_epochs: int = 0
    trials: int = 30
    objective: str = "accuracy"
    seeds: int = 3
    val_samples: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise OptionError(f"trials {self.trials}: use 1 or more")
        if self.objective not in OBJECTIVES:
            raise OptionError(f"objective '{self.objective}': use one of {', '.join(OBJECTIVES)}")
        if self.seeds < 1:
            raise OptionError(f"seeds {self.seeds}: use 1 or more emulated chip instances")
        if self.finetune_epochs < 0:
            raise OptionError("finetune epochs must be 0 (no fine-tuning) or more")
        if self.finetune_epochs and self.train is None:
            raise OptionError("fine-tuning in the trials needs training data; pass --train")
        if self.val_samples is not None and self.val_samples < 1:
            raise OptionError(f"val samples {self.val_samples}: use 1 or more")

    @property
    def emulator_seeds(self) -> tuple[int, ...]:
        return tuple(range(self.seeds))

    def to_dict(self) -> dict[str, Any]:
        def path(p: Path | None) -> str | None:
            return None if p is None else str(p)

        return {
            "model": str(self.model),
            "val": str(self.val),
            "calib": path(self.calib),
            "train": path(self.train),
            "finetune_epochs": self.finetune_epochs,
            "trials": self.trials,
            "objective": self.objective,
            "seeds": self.seeds,
            "val_samples": self.val_samples,
            "seed": self.seed,
            "chip": self.chip.to_dict(),
            "space": self.space.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TuneSettings:
        def path(p: str | None) -> Path | None:
            return None if p is None else Path(p)

        return cls(
            model=Path(d["model"]),
            val=Path(d["val"]),
            calib=path(d["calib"]),
            train=path(d["train"]),
            finetune_epochs=int(d["finetune_epochs"]),
            trials=int(d["trials"]),
            objective=d["objective"],
            seeds=int(d["seeds"]),
            val_samples=d["val_samples"],
            seed=int(d["seed"]),
            chip=ChipSpec.from_dict(d["chip"], "chip of the stored search"),
            space=SearchSpace.from_dict(d["space"]),
        )


def settings_difference(stored: TuneSettings, new: TuneSettings) -> str | None:
    """The first setting (other than the trial count) in which ``new`` differs, or None."""
    for f in dataclasses.fields(TuneSettings):
        if f.name != "trials" and getattr(stored, f.name) != getattr(new, f.name):
            return f.name
    return None


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial as ``trials.jsonl`` holds it.

    ``params`` are the searched parameters; ``config`` is the full configuration.
    ``accuracy`` is the objective's accuracy (after fine-tuning when the search fine-tunes,
    else equal to ``plain_accuracy``), ``accuracies`` its value per emulated chip instance;
    energy and time are per inference. ``baseline`` names the chip profile the trial
    reproduces at default options, if any.
    """

    number: int
    status: str
    params: dict[str, Any]
    config: dict[str, Any]
    session: int
    trial_id: str
    baseline: str | None = None
    accuracy: float | None = None
    accuracy_std: float | None = None
    accuracies: tuple[float, ...] = ()
    plain_accuracy: float | None = None
    plain_accuracy_std: float | None = None
    energy_uj: float | None = None
    time_us: float | None = None
    gain_per_send: float | None = None
    num_sends: dict[str, int] = field(default_factory=dict)
    seconds: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["accuracies"] = list(self.accuracies)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in d.items() if k in names}
        values["accuracies"] = tuple(values.get("accuracies", ()))
        return cls(**values)


def read_records(out_dir: Path) -> list[TrialRecord]:
    """The finished trials in ``out_dir``. Every record is one line with its newline; a last
    line without one was torn by a crash mid-write and is not a record."""
    path = Path(out_dir) / TRIALS_FILE
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(TrialRecord.from_dict(json.loads(line)))
        except (json.JSONDecodeError, TypeError, KeyError, AttributeError) as exc:
            raise OptionError(
                f"{path}: line {i + 1} is not a trial record ({exc}); the search folder is damaged"
            ) from None
    return records


def _drop_torn_tail(out_dir: Path) -> None:
    """Cut a torn last line (a crash mid-write) so that new records follow whole lines."""
    path = Path(out_dir) / TRIALS_FILE
    if not path.is_file():
        return
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep != len(data):
        with path.open("r+b") as f:
            f.truncate(keep)


def _append_record(out_dir: Path, record: TrialRecord) -> None:
    path = Path(out_dir) / TRIALS_FILE
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record.to_dict()) + "\n")
        f.flush()
        os.fsync(f.fileno())


def objective_values(record: TrialRecord, objective: str) -> list[float]:
    assert record.ok and record.accuracy is not None and record.energy_uj is not None
    if objective == "accuracy":
        return [record.accuracy]
    return [record.accuracy, record.energy_uj]


def pareto_front(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """Finished trials not dominated in (higher accuracy, lower energy), by rising energy."""
    ok = [r for r in records if r.ok]
    front = []
    for r in ok:
        dominated = any(
            o.accuracy >= r.accuracy
            and o.energy_uj <= r.energy_uj
            and (o.accuracy > r.accuracy or o.energy_uj < r.energy_uj)
            for o in ok
        )
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: (r.energy_uj, -r.accuracy, r.number))


def best_record(records: Sequence[TrialRecord], objective: str) -> TrialRecord | None:
    """The trial whose configuration the search recommends.

    ``accuracy``: the highest mean accuracy (ties: lower energy, then the earlier trial).
    ``accuracy-energy``: on the Pareto front, the lowest-energy trial whose mean accuracy is
    within one standard deviation (over chip instances) of the most accurate trial's.
    """
    ok = [r for r in records if r.ok]
    if not ok:
        return None
    top = min(ok, key=lambda r: (-r.accuracy, r.energy_uj, r.number))
    if objective == "accuracy":
        return top
    near = [r for r in pareto_front(ok) if r.accuracy >= top.accuracy - (top.accuracy_std or 0)]
    return min(near, key=lambda r: (r.energy_uj, -r.accuracy, r.number))


def study_from_records(
    space: SearchSpace,
    records: Sequence[TrialRecord],
    objective: str,
    storage: Any = None,
) -> Any:
    """An Optuna study holding the finished ``records`` (failed ones as failed trials)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = ["maximize"] if objective == "accuracy" else ["maximize", "minimize"]
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, directions=directions)
    dists = space.distributions()
    for r in records:
        params = {k: r.params[k] for k in dists}
        if r.ok:
            trial = optuna.trial.create_trial(
                params=params, distributions=dists, values=objective_values(r, objective)
            )
        else:
            trial = optuna.trial.create_trial(
                params=params, distributions=dists, state=optuna.trial.TrialState.FAIL
            )
        study.add_trial(trial)
    return study


# -- one trial ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs, shipped once to the Ray object store."""

    model_name: str
    model_bytes: bytes
    chip: ChipSpec
    space: SearchSpace
    calib: Dataset | None
    val: Dataset
    train: Dataset | None
    seeds: tuple[int, ...]
    finetune_epochs: int


def _head(data: Dataset, n: int | None) -> Dataset:
    if n is None or n >= data.samples:
        return data
    labels = None if data.labels is None else data.labels[:n]
    return Dataset({k: v[:n] for k, v in data.inputs.items()}, labels, data.path)


def evaluate_config(
    config: Mapping[str, Any], ctx: TrialContext, model: str | Path
) -> dict[str, Any]:
    """Compile ``model`` with the configuration, fine-tune if asked, and measure it."""
    from anacc.compiler.cost import program_cost
    from anacc.compiler.pipeline import compile_model
    from anacc.passes.finetune import FinetuneOptions, finetune
    from anacc.runtime.error_budget import measure_layers
    from anacc.runtime.executor import run_program
    from anacc.runtime.report import vectors_per_sample

    t0 = time.perf_counter()
    chip = tuned_chip(ctx.chip, config)
    program = compile_model(
        model,
        chip=chip,
        profile=TUNED_PROFILE,
        calib=ctx.calib,
        options=compile_options(config),
    )
    plain = [run_program(program, ctx.val, backend="emulator", seed=s).accuracy for s in ctx.seeds]
    final = plain
    if ctx.finetune_epochs:
        assert ctx.train is not None, "fine-tuning needs training data"
        final = []
        for s in ctx.seeds:
            opts = FinetuneOptions(epochs=ctx.finetune_epochs, seed=s)
            tuned = finetune(program, ctx.train, ctx.val, opts).program
            final.append(run_program(tuned, ctx.val, backend="emulator", seed=s).accuracy)
    budget = measure_layers(program, _head(ctx.val, COST_SAMPLES), seed=ctx.seeds[0])
    cost = program_cost(
        program,
        vectors_per_sample(program),
        active_inputs={b.name: b.active_inputs for b in budget},
    )
    return {
        "accuracy": float(np.mean(final)),
        "accuracy_std": float(np.std(final)),
        "accuracies": [float(a) for a in final],
        "plain_accuracy": float(np.mean(plain)),
        "plain_accuracy_std": float(np.std(plain)),
        "energy_uj": float(cost.energy_uj_per_sample),
        "time_us": float(cost.time_us_per_sample),
        "gain_per_send": chip.profile(TUNED_PROFILE).gain_per_send,
        "num_sends": {name: int(layer.analog.num_sends) for name, layer in program.layers.items()},
        "seconds": time.perf_counter() - t0,
    }


def _trainable(config: dict[str, Any], ctx: TrialContext) -> dict[str, Any]:
    """The Ray Tune function trainable: one configuration, one result."""
    with tempfile.TemporaryDirectory(prefix="anacc-trial-") as tmp:
        model = Path(tmp) / ctx.model_name
        model.write_bytes(ctx.model_bytes)
        return evaluate_config(ctx.space.full(config), ctx, model)


# -- the search ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchOutcome:
    """What a call of :func:`run_search` leaves: all finished trials and the written files."""

    settings: TuneSettings
    records: tuple[TrialRecord, ...]
    new_trials: int
    best: TrialRecord
    pareto: tuple[TrialRecord, ...]
    command: str
    files: tuple[Path, ...]

    @property
    def finished(self) -> int:
        return len(self.records)

    @property
    def complete(self) -> bool:
        return self.finished >= self.settings.trials


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


def load_settings(out_dir: str | Path) -> TuneSettings:
    """The settings of the search stored in ``out_dir``."""
    path = Path(out_dir) / SETTINGS_FILE
    if not path.is_file():
        raise OptionError(
            f"{out_dir}: holds no search ({SETTINGS_FILE} is missing); check --resume"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != SETTINGS_VERSION:
            raise OptionError(f"{path}: written by an incompatible anacc version; start anew")
        return TuneSettings.from_dict(data["settings"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise OptionError(f"{path}: damaged search settings ({exc}); start a new search") from None


def _model_inputs(model: Path) -> tuple[list[InputSpec], bytes]:
    from anacc.compiler.frontend import graph_from_onnx, load_onnx
    from anacc.compiler.pipeline import input_specs

    proto = load_onnx(model)
    return input_specs(graph_from_onnx(proto, source=str(model))), proto.SerializeToString()


def trial_context(settings: TuneSettings) -> TrialContext:
    """The model and data of ``settings``, read and checked once for all trials."""
    specs, model_bytes = _model_inputs(settings.model)
    val = _head(load_dataset(settings.val, specs), settings.val_samples)
    if val.labels is None:
        raise DataError(f"{settings.val}: validation data needs 'labels' to measure accuracy")
    train = load_dataset(settings.train, specs) if settings.finetune_epochs else None
    if train is not None and train.labels is None:
        raise DataError(f"{settings.train}: training data needs 'labels'")
    return TrialContext(
        model_name=settings.model.name,
        model_bytes=model_bytes,
        chip=settings.chip,
        space=settings.space,
        calib=None if settings.calib is None else load_dataset(settings.calib, specs),
        val=val,
        train=train,
        seeds=settings.emulator_seeds,
        finetune_epochs=settings.finetune_epochs,
    )


def _prepare_folder(settings: TuneSettings, out_dir: Path) -> list[TrialRecord]:
    from anacc.compiler.frontend import model_sha256

    sha = model_sha256(settings.model)
    path = out_dir / SETTINGS_FILE
    if path.is_file():
        stored = load_settings(out_dir)
        diff = settings_difference(stored, settings)
        if diff is not None:
            raise OptionError(
                f"{out_dir}: holds a search with another '{diff}'; resume it unchanged or "
                "choose another output folder"
            )
        if json.loads(path.read_text(encoding="utf-8")).get("model_sha256") != sha:
            raise OptionError(
                f"{settings.model}: the model changed since the search in {out_dir} started; "
                "start a new search"
            )
    elif out_dir.exists() and not out_dir.is_dir():
        raise OptionError(f"{out_dir}: is a file; give a folder for the search")
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise OptionError(f"{out_dir}: exists and is not empty; choose a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    _drop_torn_tail(out_dir)
    blob = {"version": SETTINGS_VERSION, "model_sha256": sha, "settings": settings.to_dict()}
    atomic_write(path, json.dumps(blob, indent=1).encode())
    return read_records(out_dir)


def _check_address(address: str) -> None:
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
            _check_address(address)
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


def _recorder(
    out_dir: Path,
    settings: TuneSettings,
    session: int,
    first_number: int,
    baselines: Mapping[str, Mapping[str, Any]],
    log: Callable[[str], None],
) -> Any:
    """A Tune callback that appends every finished trial to ``trials.jsonl`` as it ends."""
    from ray.tune import Callback

    space = settings.space

    class Recorder(Callback):
        def __init__(self) -> None:
            self.number = first_number

        def _write(self, trial: Any, status: str, result: Mapping[str, Any], error: str | None):
            params = {d.name: trial.config[d.name] for d in space.searched}
            baseline = next((n for n, p in baselines.items() if same_params(p, params)), None)
            record = TrialRecord.from_dict(
                {
                    **{k: v for k, v in result.items() if k in _RESULT_KEYS},
                    "number": self.number,
                    "status": status,
                    "params": params,
                    "config": space.full(params),
                    "session": session,
                    "trial_id": trial.trial_id,
                    "baseline": baseline,
                    "error": error,
                }
            )
            _append_record(out_dir, record)
            self.number += 1
            log(_trial_line(record, settings))

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any):
            self._write(trial, "ok", trial.last_result, None)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any):
            self._write(trial, "error", {}, _error_line(trial))

    return Recorder()


_RESULT_KEYS = {
    "accuracy",
    "accuracy_std",
    "accuracies",
    "plain_accuracy",
    "plain_accuracy_std",
    "energy_uj",
    "time_us",
    "gain_per_send",
    "num_sends",
    "seconds",
}


def _error_line(trial: Any) -> str:
    """The last line of the trial's error (the exception itself) and where the rest is."""
    staged = Path(trial.error_file) if trial.error_file else None
    text = staged.read_text("utf-8", errors="replace") if staged and staged.is_file() else ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "the trial failed; see the Tune experiment folder"
    # Tune stages the file in Ray's temp folder and then copies it into the experiment.
    return f"{lines[-1]} (traceback: {Path(trial.path) / staged.name})"


def _trial_line(r: TrialRecord, settings: TuneSettings) -> str:
    head = f"trial {r.number + 1}/{settings.trials}"
    if not r.ok:
        return f"{head}: failed: {r.error}"
    tag = f" [{r.baseline}]" if r.baseline else ""
    c = r.config
    return (
        f"{head}{tag}: accuracy {100 * r.accuracy:.2f} +- {100 * r.accuracy_std:.2f} %, "
        f"{r.energy_uj:.1f} uJ, {r.time_us:.0f} us | OTA {c['ota_bias']}, tau "
        f"{c['tau_syn_us']:.3g} us, wait {c['wait_cycles']}, gain x{c['gain_factor']:.2f}, "
        f"{scale_option(c)}, {c['signed']}, {c['row_order']}"
    )


def run_search(
    settings: TuneSettings,
    out_dir: str | Path,
    *,
    address: str | None = None,
    cpus: int = 2,
    max_new_trials: int | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> SearchOutcome:
    """Run (or continue) the search of ``settings`` in ``out_dir`` and write its outputs.

    A folder that already holds this search (same settings but possibly a larger ``trials``)
    is continued: its finished trials are kept and only the remaining ones run, at most
    ``max_new_trials`` of them in this call. ``cpus`` sizes a local Ray instance.
    """
    require_engine()
    if cpus < 1:
        raise OptionError(f"cpus {cpus}: use 1 or more")
    if max_new_trials is not None and max_new_trials < 1:
        raise OptionError(f"max new trials {max_new_trials}: use 1 or more")
    if address is not None:
        _check_address(address)
    out_dir = Path(out_dir)
    ctx = trial_context(settings)
    records = _prepare_folder(settings, out_dir)
    remaining = settings.trials - len(records)
    if max_new_trials is not None:
        remaining = min(remaining, max_new_trials)
    if remaining > 0:
        log(
            f"searching {remaining} trial(s) of {settings.trials} "
            f"({len(records)} finished before) in {out_dir}"
        )
        _run_trials(settings, ctx, out_dir, records, remaining, address, cpus, log)
    before = len(records)
    records = read_records(out_dir)
    return finish(settings, out_dir, records, len(records) - before)


def _run_trials(
    settings: TuneSettings,
    ctx: TrialContext,
    out_dir: Path,
    records: list[TrialRecord],
    count: int,
    address: str | None,
    cpus: int,
    log: Callable[[str], None],
) -> None:
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    # Tune's newer console output prints its banner whatever the verbosity; the classic one
    # stays quiet at verbosity 0, and anacc prints one line per trial itself.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    space = settings.space
    baselines = baseline_points(settings.chip, space)
    storage = optuna.storages.InMemoryStorage()
    # A resumed session gets its own sampler seed so that it does not replay the first one.
    sampler = optuna.samplers.TPESampler(seed=settings.seed + len(records))
    study = study_from_records(space, records, settings.objective, storage)
    for params in baselines.values():
        if not any(same_params(params, r.params) for r in records):
            study.enqueue_trial(params)
    metric: str | list[str] = "accuracy"
    mode: str | list[str] = "max"
    if settings.objective == "accuracy-energy":
        metric, mode = ["accuracy", "energy_uj"], ["max", "min"]
    session = _next_session(out_dir, records)
    with ray_session(address, cpus) as ray:
        concurrency = cpus if address is None else max(1, int(ray.cluster_resources()["CPU"]))
        searcher = OptunaSearch(
            space=space.distributions(),
            metric=metric,
            mode=mode,
            sampler=sampler,
            storage=storage,
            study_name=STUDY_NAME,
        )
        trainable = tune.with_resources(tune.with_parameters(_trainable, ctx=ctx), {"cpu": 1})
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                num_samples=count,
                max_concurrent_trials=concurrency,
                reuse_actors=True,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=f"search-{session}",
                storage_path=str((out_dir / RAY_FOLDER).resolve()),
                verbose=0,
                callbacks=[_recorder(out_dir, settings, session, len(records), baselines, log)],
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        # anacc prints one line per trial, failures included (with the path of their
        # traceback); Tune's own log would repeat each failure as a traceback.
        tune_logger = logging.getLogger("ray.tune")
        level = tune_logger.level
        tune_logger.setLevel(logging.CRITICAL)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
                tuner.fit()
        finally:
            tune_logger.setLevel(level)


def _next_session(out_dir: Path, records: Sequence[TrialRecord]) -> int:
    """The number of this call's Tune experiment: after every earlier session, including one
    that was interrupted before a trial finished."""
    folders = [p.name.removeprefix("search-") for p in (out_dir / RAY_FOLDER).glob("search-*")]
    earlier = [r.session for r in records] + [int(n) for n in folders if n.isdigit()]
    return 1 + max(earlier, default=0)


def _trial_dirname(trial: Any) -> str:
    return f"trial-{trial.trial_id}"


def compile_command(settings: TuneSettings, out_dir: Path, config: Mapping[str, Any]) -> list[str]:
    """The ``anacc compile`` command line that reproduces ``best.anacc`` (absolute paths)."""
    out_dir = out_dir.resolve()
    opts = compile_options(config)
    cmd = ["anacc", "compile", str(settings.model)]
    if settings.calib is not None:
        cmd += ["--calib", str(settings.calib)]
    cmd += ["--chip", str(out_dir / "best_chip.toml"), "--profile", TUNED_PROFILE]
    cmd += ["--scale", opts.scale, "--weight-scale", opts.weight_scale, "--signed", opts.signed]
    cmd += ["--row-order", opts.row_order, "--gain-factor", repr(opts.gain_factor)]
    return [*cmd, "-o", str(out_dir / "best.anacc")]


def finish(
    settings: TuneSettings, out_dir: str | Path, records: Sequence[TrialRecord], new_trials: int
) -> SearchOutcome:
    """Write the best chip, options, program and reports for the finished ``records``."""
    from anacc.compiler.chip_writer import write_chip
    from anacc.compiler.pipeline import compile_model
    from anacc.tune_report import build_report, write_reports

    out_dir = Path(out_dir)
    best = best_record(records, settings.objective)
    if best is None:
        first = next((r.error for r in records if r.error), "no trial finished")
        raise AnaccError(f"no trial of the search in {out_dir} succeeded; first error: {first}")
    chip = tuned_chip(settings.chip, best.config)
    chip_path = write_chip(
        chip,
        out_dir / "best_chip.toml",
        header=(
            f"Chip '{chip.name}' with the profile '{TUNED_PROFILE}' found by anacc tune\n"
            f"for {settings.model.name} (trial {best.number + 1}; see report.txt)."
        ),
    )
    command = compile_command(settings, out_dir, best.config)
    options = compile_options(best.config)
    options_blob = {
        "chip": str(chip_path.resolve()),
        "profile": TUNED_PROFILE,
        "options": options.to_dict(),
        "command": shlex.join(command),
    }
    options_path = out_dir / "best_options.json"
    atomic_write(options_path, (json.dumps(options_blob, indent=1) + "\n").encode())
    program = compile_model(
        settings.model, chip=chip, profile=TUNED_PROFILE, calib=settings.calib, options=options
    )
    program_path = program.save(out_dir / "best.anacc")
    pareto = tuple(pareto_front(records))
    report = build_report(settings, tuple(records), best, pareto, shlex.join(command))
    files = (chip_path, options_path, program_path, *write_reports(report, out_dir))
    return SearchOutcome(
        settings=settings,
        records=tuple(records),
        new_trials=new_trials,
        best=best,
        pareto=pareto,
        command=shlex.join(command),
        files=files,
    )

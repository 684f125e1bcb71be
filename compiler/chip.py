"""Chip descriptions: load, validate and query a chip's geometry, ranges, timing and profiles.

A chip description is a TOML file (``compiler/chips/<name>.toml`` ships with the package; a
user may pass their own path). :func:`load_chip` reads and validates it into a frozen
:class:`ChipSpec`; every malformed, missing or out-of-range key raises
:class:`~anacc.errors.ChipError` naming the key by its dotted path and the expected type or
range. :meth:`ChipSpec.to_dict` and :meth:`ChipSpec.from_dict` round-trip exactly, so a
program file can embed the chip it was compiled for.

The file has the sections ``geometry``, ``ranges``, ``timing``, ``energy``, ``analog`` (the
coefficients of the analog model, shared by all profiles: the circuit physics) and
``profiles.<name>`` (the calibration knobs of one named calibration). A :class:`Profile`
turns its knobs and the shared :class:`AnalogModel` into the derived quantities the backends
use (gain per send, noise terms, the synaptic window); docs/chip-model.md explains the model.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from anacc.errors import ChipError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

_CHIP_PACKAGE = "anacc.compiler.chips"


@dataclass(frozen=True)
class AnalogModel:
    """Coefficients of the analog model (see docs/chip-model.md for the equations).

    The ``reference_*`` knobs are the calibration at which ``reference_gain_per_send`` and
    ``reference_noise_sigma_lsb`` hold; the ``noise_reference_*`` fields describe the
    measurement (inputs, weights, sends) at which that noise sigma is defined. The four
    ``noise_fraction_*`` split the reference noise variance into its sources and sum to 1.
    """

    ota_bias_range: tuple[int, int]
    tau_syn_us_range: tuple[float, float]
    wait_cycles_range: tuple[int, int]
    reference_ota_bias: int
    reference_tau_syn_us: float
    reference_wait_cycles: int
    reference_gain_per_send: float
    gain_ota_exponent: float
    gain_tau_exponent: float
    reference_noise_sigma_lsb: float
    noise_reference_active_inputs: int
    noise_reference_input: int
    noise_reference_weight: int
    noise_reference_num_sends: int
    noise_fraction_readout: float
    noise_fraction_ota: float
    noise_fraction_drift: float
    noise_fraction_event: float
    neuron_gain_sigma: float
    neuron_offset_sigma_lsb: float
    synapse_gain_sigma: float
    spatial_gain_gradient: float
    saturation_point_sigma: float
    saturation_headroom_lsb: float
    synin_linear_load: float
    synin_headroom: float


@dataclass(frozen=True)
class NoiseTerms:
    """Trial-to-trial noise variance of one output, in ADC LSB squared.

    ``variance = readout + num_sends * active_inputs * (per_event + per_event_weight2 * m**2)``
    where ``m`` is the root-mean-square integer weight of the column in that run.
    """

    readout: float
    per_event: float
    per_event_weight2: float

    def variance(self, num_sends: int, active_inputs: float, weight_rms: float) -> float:
        events = num_sends * active_inputs
        return self.readout + events * (self.per_event + self.per_event_weight2 * weight_rms**2)


@dataclass(frozen=True)
class Profile:
    """One named calibration of the chip: its knobs and the model that turns them into numbers.

    Knobs: ``ota_bias`` (synaptic input OTA bias, DAC units), ``tau_syn_us`` (synaptic time
    constant) and ``wait_cycles`` (clock cycles between input events).
    """

    name: str
    description: str
    ota_bias: int
    tau_syn_us: float
    wait_cycles: int
    analog: AnalogModel

    @property
    def ota_gain_ratio(self) -> float:
        """OTA transconductance relative to the reference calibration."""
        a = self.analog
        return (self.ota_bias / a.reference_ota_bias) ** a.gain_ota_exponent

    @property
    def tau_ratio(self) -> float:
        return self.tau_syn_us / self.analog.reference_tau_syn_us

    @property
    def gain_per_send(self) -> float:
        """Nominal ADC LSB per unit of ``input * weight`` and per send."""
        a = self.analog
        return a.reference_gain_per_send * self.ota_gain_ratio * self.tau_ratio**a.gain_tau_exponent

    @property
    def noise_terms(self) -> NoiseTerms:
        """The noise variance terms at this profile's knobs (docs/chip-model.md, "Noise")."""
        a = self.analog
        var_ref = a.reference_noise_sigma_lsb**2
        events_ref = a.noise_reference_num_sends * a.noise_reference_active_inputs
        wait_ratio = self.wait_cycles / a.reference_wait_cycles
        per_time = a.noise_fraction_ota * self.ota_gain_ratio**2 * self.tau_ratio
        per_time += a.noise_fraction_drift
        gain_ratio = self.gain_per_send / a.reference_gain_per_send
        return NoiseTerms(
            readout=var_ref * a.noise_fraction_readout,
            per_event=var_ref * wait_ratio * per_time / events_ref,
            per_event_weight2=var_ref
            * a.noise_fraction_event
            * gain_ratio**2
            / (events_ref * a.noise_reference_weight**2),
        )

    def noise_sigma_lsb_at(self, num_sends: int, active_inputs: float, weight_rms: float) -> float:
        """Noise sigma (ADC LSB, before ADC rounding) of one output under the given load."""
        return math.sqrt(self.noise_terms.variance(num_sends, active_inputs, weight_rms))

    @property
    def noise_sigma_lsb(self) -> float:
        """Noise sigma at the reference measurement (``analog.noise_reference_*``)."""
        a = self.analog
        return self.noise_sigma_lsb_at(
            a.noise_reference_num_sends,
            a.noise_reference_active_inputs,
            a.noise_reference_weight,
        )

    def window_slots(self, clock_mhz: float) -> float:
        """Synaptic time constant in units of event slots (``tau_syn / event interval``)."""
        return self.tau_syn_us * clock_mhz / self.wait_cycles


@dataclass(frozen=True)
class ChipSpec:
    """A validated chip description; see the module docstring and docs/chip-model.md."""

    name: str
    description: str
    halves: int
    rows_per_half: int
    columns_per_half: int
    rows_per_signed_weight: int
    input_bits: int
    weight_max: int
    adc_min: int
    adc_max: int
    linear_min: int
    linear_max: int
    num_sends_max: int
    clock_mhz: float
    overhead_us_per_run: float
    weight_write_us_per_load: float
    chip_power_w: float
    idle_power_w: float
    link_us_per_run: float
    system_power_w: float
    analog: AnalogModel
    profiles: dict[str, Profile] = field(hash=False)

    @property
    def signed_inputs_per_run(self) -> int:
        return self.rows_per_half // self.rows_per_signed_weight

    @property
    def outputs_per_run(self) -> int:
        return self.columns_per_half

    @property
    def input_max(self) -> int:
        return 2**self.input_bits - 1

    def profile(self, name: str) -> Profile:
        """The named profile; a :class:`ChipError` lists the available names if it is absent."""
        if name not in self.profiles:
            names = ", ".join(sorted(self.profiles))
            raise ChipError(f"chip '{self.name}' has no profile '{name}'; available: {names}")
        return self.profiles[name]

    def time_us_per_run(self, active_inputs: float, num_sends: int, wait_cycles: int) -> float:
        """Estimated duration of one analog run: fixed overhead plus the event train."""
        return self.overhead_us_per_run + active_inputs * num_sends * wait_cycles / self.clock_mhz

    def energy_uj_per_run(self, active_inputs: float, num_sends: int, wait_cycles: int) -> float:
        """Estimated chip energy of one analog run (chip power times run time; W * us = uJ)."""
        return self.chip_power_w * self.time_us_per_run(active_inputs, num_sends, wait_cycles)

    def energy_uj_per_load(self) -> float:
        """Estimated chip energy of rewriting the weights of the whole chip once."""
        return self.chip_power_w * self.weight_write_us_per_load

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict in the layout of the TOML file."""
        analog = {f.name: getattr(self.analog, f.name) for f in fields(AnalogModel)}
        for key, value in analog.items():
            if isinstance(value, tuple):
                analog[key] = list(value)
        return {
            "name": self.name,
            "description": self.description,
            "geometry": {k: getattr(self, k) for k in _GEOMETRY},
            "ranges": {k: getattr(self, k) for k in _RANGES},
            "timing": {k: getattr(self, k) for k in _TIMING},
            "energy": {k: getattr(self, k) for k in _ENERGY},
            "analog": analog,
            "profiles": {
                name: {k: getattr(p, k) for k in _PROFILE_KNOBS}
                for name, p in sorted(self.profiles.items())
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "chip description") -> ChipSpec:
        """Validate ``data`` (the TOML layout) into a :class:`ChipSpec`."""
        return _parse(data, source)


def load_chip(name_or_path: str | Path) -> ChipSpec:
    """Load a chip by bare name (shipped with anacc, e.g. ``"bss2"``) or by file path."""
    text, source = _read_chip_text(name_or_path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ChipError(f"{source}: not valid TOML ({exc}); fix the file syntax") from None
    return _parse(data, source)


def shipped_chip_names() -> list[str]:
    """Names of the chip descriptions that ship with anacc."""
    return sorted(
        p.name[: -len(".toml")]
        for p in resources.files(_CHIP_PACKAGE).iterdir()
        if p.name.endswith(".toml")
    )


def _read_chip_text(name_or_path: str | Path) -> tuple[str, str]:
    text_name = str(name_or_path)
    is_bare_name = (
        isinstance(name_or_path, str)
        and not text_name.endswith(".toml")
        and Path(text_name).name == text_name
    )
    if is_bare_name:
        resource = resources.files(_CHIP_PACKAGE).joinpath(f"{text_name}.toml")
        if not resource.is_file():
            names = ", ".join(shipped_chip_names())
            raise ChipError(
                f"unknown chip '{text_name}'; shipped chips: {names} (or pass a .toml path)"
            )
        return resource.read_text(encoding="utf-8"), f"chip '{text_name}'"
    path = Path(name_or_path)
    if not path.is_file():
        raise ChipError(f"chip file '{path}' does not exist; pass a chip name or a .toml path")
    return path.read_text(encoding="utf-8"), f"chip file '{path}'"


_GEOMETRY = ("halves", "rows_per_half", "columns_per_half", "rows_per_signed_weight")
_RANGES = (
    "input_bits",
    "weight_max",
    "adc_min",
    "adc_max",
    "linear_min",
    "linear_max",
    "num_sends_max",
)
_TIMING = ("clock_mhz", "overhead_us_per_run", "weight_write_us_per_load", "link_us_per_run")
_ENERGY = ("chip_power_w", "idle_power_w", "system_power_w")
_PROFILE_KNOBS = ("description", "ota_bias", "tau_syn_us", "wait_cycles")
_INT_MAX = 2**31 - 1


class _Table:
    """Typed, range-checked access to one TOML table; errors name the dotted key."""

    def __init__(self, data: Any, path: str, source: str) -> None:
        self.path = path
        self.source = source
        if not isinstance(data, dict):
            self.fail(path, "a table")
        self.data = data
        self.used: set[str] = set()

    def fail(self, key: str, expected: str, value: Any = None, missing: bool = False) -> None:
        if missing:
            raise ChipError(f"{self.source}: missing key '{key}' ({expected}); add it")
        raise ChipError(f"{self.source}: key '{key}' must be {expected}, got {value!r}")

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def raw(self, name: str, expected: str) -> Any:
        if name not in self.data:
            self.fail(self.key(name), expected, missing=True)
        self.used.add(name)
        return self.data[name]

    def get_int(self, name: str, lo: int = -_INT_MAX, hi: int = _INT_MAX) -> int:
        expected = f"an integer in {lo}..{hi}"
        value = self.raw(name, expected)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            self.fail(self.key(name), expected, value)
        return value

    def get_float(self, name: str, lo: float = -math.inf, hi: float = math.inf) -> float:
        expected = f"a number in {lo:g}..{hi:g}"
        value = self.raw(name, expected)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(self.key(name), expected, value)
        if not (math.isfinite(value) and lo <= value <= hi):
            self.fail(self.key(name), expected, value)
        return float(value)

    def get_str(self, name: str) -> str:
        value = self.raw(name, "a string")
        if not isinstance(value, str):
            self.fail(self.key(name), "a string", value)
        return value

    def int_range(self, name: str, lo: int, hi: int) -> tuple[int, int]:
        expected = f"a list [min, max] of integers in {lo}..{hi}, min <= max"
        value = self.raw(name, expected)
        ok = (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            and lo <= value[0] <= value[1] <= hi
        )
        if not ok:
            self.fail(self.key(name), expected, value)
        return (value[0], value[1])

    def float_range(self, name: str, lo: float, hi: float) -> tuple[float, float]:
        expected = f"a list [min, max] of numbers in {lo:g}..{hi:g}, min <= max"
        value = self.raw(name, expected)
        ok = (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
            and lo <= value[0] <= value[1] <= hi
        )
        if not ok:
            self.fail(self.key(name), expected, value)
        return (float(value[0]), float(value[1]))

    def table(self, name: str) -> _Table:
        return _Table(self.raw(name, "a table"), self.key(name), self.source)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ChipError(
                f"{self.source}: unknown key '{self.key(unknown[0])}'; "
                "remove it or check its spelling"
            )


def _parse(data: dict[str, Any], source: str) -> ChipSpec:
    root = _Table(data, "", source)
    name = root.get_str("name")
    description = root.get_str("description")

    geo = root.table("geometry")
    halves = geo.get_int("halves", 1, 64)
    rows_per_half = geo.get_int("rows_per_half", 1, 65536)
    columns_per_half = geo.get_int("columns_per_half", 1, 65536)
    rows_per_signed_weight = geo.get_int("rows_per_signed_weight", 1, 2)
    geo.finish()
    if rows_per_half % rows_per_signed_weight:
        raise ChipError(
            f"{source}: key 'geometry.rows_per_half' ({rows_per_half}) must be a multiple of "
            f"'geometry.rows_per_signed_weight' ({rows_per_signed_weight})"
        )

    rng = root.table("ranges")
    input_bits = rng.get_int("input_bits", 1, 16)
    weight_max = rng.get_int("weight_max", 1, 2**15)
    adc_min = rng.get_int("adc_min", -(2**15), -1)
    adc_max = rng.get_int("adc_max", 1, 2**15)
    linear_min = rng.get_int("linear_min", adc_min, -1)
    linear_max = rng.get_int("linear_max", 1, adc_max)
    num_sends_max = rng.get_int("num_sends_max", 1, 4096)
    rng.finish()

    tim = root.table("timing")
    clock_mhz = tim.get_float("clock_mhz", 1e-3, 1e5)
    overhead_us_per_run = tim.get_float("overhead_us_per_run", 0.0, 1e6)
    weight_write_us_per_load = tim.get_float("weight_write_us_per_load", 0.0, 1e9)
    link_us_per_run = tim.get_float("link_us_per_run", 0.0, 1e9)
    tim.finish()

    ene = root.table("energy")
    chip_power_w = ene.get_float("chip_power_w", 0.0, 1e4)
    idle_power_w = ene.get_float("idle_power_w", 0.0, chip_power_w)
    system_power_w = ene.get_float("system_power_w", 0.0, 1e6)
    ene.finish()

    analog = _parse_analog(
        root.table("analog"), weight_max, input_bits, rows_per_half // rows_per_signed_weight
    )
    profiles_table = root.table("profiles")
    if not profiles_table.data:
        profiles_table.fail("profiles", "a table with at least one profile", {})
    profiles = {
        pname: _parse_profile(profiles_table.table(pname), pname, analog)
        for pname in sorted(profiles_table.data)
    }
    profiles_table.finish()
    root.finish()

    return ChipSpec(
        name=name,
        description=description,
        halves=halves,
        rows_per_half=rows_per_half,
        columns_per_half=columns_per_half,
        rows_per_signed_weight=rows_per_signed_weight,
        input_bits=input_bits,
        weight_max=weight_max,
        adc_min=adc_min,
        adc_max=adc_max,
        linear_min=linear_min,
        linear_max=linear_max,
        num_sends_max=num_sends_max,
        clock_mhz=clock_mhz,
        overhead_us_per_run=overhead_us_per_run,
        weight_write_us_per_load=weight_write_us_per_load,
        chip_power_w=chip_power_w,
        idle_power_w=idle_power_w,
        link_us_per_run=link_us_per_run,
        system_power_w=system_power_w,
        analog=analog,
        profiles=profiles,
    )


def _parse_analog(
    t: _Table, weight_max: int, input_bits: int, signed_inputs_per_run: int
) -> AnalogModel:
    ota_range = t.int_range("ota_bias_range", 1, 1 << 20)
    tau_range = t.float_range("tau_syn_us_range", 1e-6, 1e6)
    wait_range = t.int_range("wait_cycles_range", 1, 1 << 20)
    values: dict[str, Any] = {
        "ota_bias_range": ota_range,
        "tau_syn_us_range": tau_range,
        "wait_cycles_range": wait_range,
        "reference_ota_bias": t.get_int("reference_ota_bias", *ota_range),
        "reference_tau_syn_us": t.get_float("reference_tau_syn_us", *tau_range),
        "reference_wait_cycles": t.get_int("reference_wait_cycles", *wait_range),
        "reference_gain_per_send": t.get_float("reference_gain_per_send", 1e-12, 1e6),
        "gain_ota_exponent": t.get_float("gain_ota_exponent", 0.0, 4.0),
        "gain_tau_exponent": t.get_float("gain_tau_exponent", 0.0, 4.0),
        "reference_noise_sigma_lsb": t.get_float("reference_noise_sigma_lsb", 0.0, 1e4),
        "noise_reference_active_inputs": t.get_int(
            "noise_reference_active_inputs", 1, signed_inputs_per_run
        ),
        "noise_reference_input": t.get_int("noise_reference_input", 1, 2**input_bits - 1),
        "noise_reference_weight": t.get_int("noise_reference_weight", 1, weight_max),
        "noise_reference_num_sends": t.get_int("noise_reference_num_sends", 1, 4096),
    }
    for part in ("readout", "ota", "drift", "event"):
        values[f"noise_fraction_{part}"] = t.get_float(f"noise_fraction_{part}", 0.0, 1.0)
    values.update(
        neuron_gain_sigma=t.get_float("neuron_gain_sigma", 0.0, 0.5),
        neuron_offset_sigma_lsb=t.get_float("neuron_offset_sigma_lsb", 0.0, 1e3),
        synapse_gain_sigma=t.get_float("synapse_gain_sigma", 0.0, 0.5),
        spatial_gain_gradient=t.get_float("spatial_gain_gradient", -1.0, 1.0),
        saturation_point_sigma=t.get_float("saturation_point_sigma", 0.0, 0.5),
        saturation_headroom_lsb=t.get_float("saturation_headroom_lsb", 1e-6, 1e6),
        synin_linear_load=t.get_float("synin_linear_load", 1e-6, 1e12),
        synin_headroom=t.get_float("synin_headroom", 1e-6, 1e6),
    )
    t.finish()
    total = sum(values[f"noise_fraction_{p}"] for p in ("readout", "ota", "drift", "event"))
    if abs(total - 1.0) > 1e-6:
        raise ChipError(f"{t.source}: keys 'analog.noise_fraction_*' must sum to 1, got {total:g}")
    return AnalogModel(**values)


def _parse_profile(t: _Table, name: str, analog: AnalogModel) -> Profile:
    profile = Profile(
        name=name,
        description=t.get_str("description"),
        ota_bias=t.get_int("ota_bias", *analog.ota_bias_range),
        tau_syn_us=t.get_float("tau_syn_us", *analog.tau_syn_us_range),
        wait_cycles=t.get_int("wait_cycles", *analog.wait_cycles_range),
        analog=analog,
    )
    t.finish()
    return profile

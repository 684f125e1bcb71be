"""The chip description: loading, validation, derived quantities, round trip."""

from __future__ import annotations

import dataclasses
import json
import sys
from importlib import resources

import pytest
from anacc.compiler.chip import ChipSpec, load_chip, shipped_chip_names

from anacc.errors import ChipError

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


@pytest.fixture(scope="module")
def chip() -> ChipSpec:
    return load_chip("bss2")


def shipped_dict() -> dict:
    text = resources.files("anacc.compiler.chips").joinpath("bss2.toml").read_text()
    return tomllib.loads(text)


def test_bss2_geometry_and_ranges_match_the_fact_sheet(chip):
    assert (chip.halves, chip.rows_per_half, chip.columns_per_half) == (2, 256, 256)
    assert chip.signed_inputs_per_run == 128
    assert chip.outputs_per_run == 256
    assert (chip.input_bits, chip.input_max, chip.weight_max) == (5, 31, 63)
    assert (chip.adc_min, chip.adc_max) == (-128, 127)
    assert (chip.linear_min, chip.linear_max) == (-80, 80)
    assert "bss2" in shipped_chip_names()


def test_default_profile_has_the_vendor_gain_and_noise(chip):
    default = chip.profile("default")
    assert (default.ota_bias, default.tau_syn_us, default.wait_cycles) == (450, 0.32, 5)
    assert default.gain_per_send == pytest.approx(0.002, rel=1e-12)
    assert default.noise_sigma_lsb == pytest.approx(2.0, rel=1e-12)
    assert default.window_slots(chip.clock_mhz) == pytest.approx(8.0)


def test_custom_profile_restores_the_gain_with_less_noise(chip):
    default, custom = chip.profile("default"), chip.profile("custom")
    assert custom.ota_bias < default.ota_bias
    assert custom.tau_syn_us > default.tau_syn_us
    assert custom.gain_per_send == pytest.approx(default.gain_per_send, rel=0.02)
    assert custom.noise_sigma_lsb < 0.9 * default.noise_sigma_lsb
    assert custom.window_slots(chip.clock_mhz) > default.window_slots(chip.clock_mhz)


def test_gain_and_noise_follow_the_knobs(chip):
    base = chip.profile("default")
    more_ota = dataclasses.replace(base, ota_bias=600)
    longer_tau = dataclasses.replace(base, tau_syn_us=0.64)
    longer_wait = dataclasses.replace(base, wait_cycles=10)
    assert more_ota.gain_per_send > base.gain_per_send
    assert longer_tau.gain_per_send == pytest.approx(2 * base.gain_per_send)
    assert longer_wait.gain_per_send == base.gain_per_send
    for louder in (more_ota, longer_tau, longer_wait):
        assert louder.noise_sigma_lsb > base.noise_sigma_lsb
    sigma = base.noise_sigma_lsb_at
    assert sigma(1, 100, 21) < sigma(2, 100, 21)
    assert sigma(1, 50, 21) < sigma(1, 100, 21)
    assert sigma(1, 100, 10) < sigma(1, 100, 40)
    # the variance is the documented sum of its terms
    t = base.noise_terms
    assert sigma(3, 70, 30) ** 2 == pytest.approx(
        t.readout + 3 * 70 * (t.per_event + t.per_event_weight2 * 30**2)
    )


def test_time_and_energy_per_run_follow_the_timing_model(chip):
    # 35 us overhead + 128 events x 2 sends x 5 cycles x 8 ns
    assert chip.time_us_per_run(128, 2, 5) == pytest.approx(35.0 + 128 * 2 * 5 / 125.0)
    assert chip.energy_uj_per_run(128, 2, 5) == pytest.approx(0.3 * chip.time_us_per_run(128, 2, 5))
    assert chip.energy_uj_per_load() == pytest.approx(0.3 * chip.weight_write_us_per_load)


def test_to_dict_from_dict_round_trips_exactly_through_json(chip):
    data = json.loads(json.dumps(chip.to_dict()))
    again = ChipSpec.from_dict(data)
    assert again == chip
    assert again.to_dict() == chip.to_dict()
    assert again.profile("custom") == chip.profile("custom")


def test_load_by_path_and_a_user_profile(tmp_path):
    text = resources.files("anacc.compiler.chips").joinpath("bss2.toml").read_text()
    text += '\n[profiles.slow]\ndescription = "x"\nota_bias = 100\ntau_syn_us = 2.0\n'
    text += "wait_cycles = 8\n"
    path = tmp_path / "mychip.toml"
    path.write_text(text)
    chip = load_chip(path)
    assert sorted(chip.profiles) == ["custom", "default", "slow"]
    assert chip.profile("slow").wait_cycles == 8
    assert load_chip(str(path)) == chip


def test_unknown_profile_lists_the_available_ones(chip):
    with pytest.raises(ChipError, match="no profile 'fast'; available: custom, default"):
        chip.profile("fast")


def test_unknown_chip_name_and_missing_file():
    with pytest.raises(ChipError, match="unknown chip 'bss9'.*bss2"):
        load_chip("bss9")
    with pytest.raises(ChipError, match="does not exist"):
        load_chip("no/such/chip.toml")


def test_invalid_toml_syntax_is_a_chip_error(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("name = \n")
    with pytest.raises(ChipError, match="not valid TOML"):
        load_chip(path)


def mutate(edit) -> ChipError:
    data = shipped_dict()
    edit(data)
    with pytest.raises(ChipError) as info:
        ChipSpec.from_dict(data)
    return info.value


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d["profiles"]["custom"].update(tau_syn_us=50.0),
            "key 'profiles.custom.tau_syn_us' must be a number in 0.3..20, got 50.0",
        ),
        (
            lambda d: d["profiles"]["default"].update(ota_bias="high"),
            "key 'profiles.default.ota_bias' must be an integer in 30..600, got 'high'",
        ),
        (
            lambda d: d["profiles"]["default"].update(ota_bias=450.0),
            "key 'profiles.default.ota_bias' must be an integer",
        ),
        (
            lambda d: d["geometry"].pop("halves"),
            "missing key 'geometry.halves' (an integer in 1..64)",
        ),
        (
            lambda d: d["ranges"].update(adc_max=True),
            "key 'ranges.adc_max' must be an integer",
        ),
        (
            lambda d: d["ranges"].update(linear_max=200),
            "key 'ranges.linear_max' must be an integer in 1..127",
        ),
        (
            lambda d: d["analog"].update(tau_syn_us_range=[5.0, 1.0]),
            "key 'analog.tau_syn_us_range' must be a list [min, max]",
        ),
        (
            lambda d: d["analog"].update(noise_fraction_ota=0.9),
            "'analog.noise_fraction_*' must sum to 1",
        ),
        (
            lambda d: d["timing"].update(clock_mhs=125.0),
            "unknown key 'timing.clock_mhs'",
        ),
        (lambda d: d.update(profiles={}), "key 'profiles' must be a table with at least one"),
        (lambda d: d.update(geometry=3), "key 'geometry' must be a table"),
        (
            lambda d: d["geometry"].update(rows_per_half=255),
            "'geometry.rows_per_half' (255) must be a multiple",
        ),
    ],
)
def test_validation_names_the_key_and_the_expected_value(edit, message):
    error = mutate(edit)
    assert message in str(error)
    assert "\n" not in str(error)

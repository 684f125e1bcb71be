"""``anacc chip characterize | measure``: the emulated chip itself, measured through the backend."""

from __future__ import annotations

from pathlib import Path

import click

from anacc.cli_errors import user_errors


@click.group("chip")
def chip_group() -> None:
    """The emulated chip: the published characterization and measured gain and noise."""


@chip_group.command("characterize")
@click.option(
    "--chip",
    "chip_name",
    default="bss2",
    show_default=True,
    help="Chip name (shipped description) or path to a chip TOML file.",
)
@click.option("--profile", default="default", show_default=True, help="Calibration profile.")
@click.option("--seed", type=int, default=0, show_default=True, help="Emulated chip instance.")
@click.option(
    "--runs",
    type=click.IntRange(min=2),
    default=30,
    show_default=True,
    help="Repetitions per input value.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("characterization.png"),
    show_default=True,
    help="PNG file to write.",
)
@user_errors
def characterize_cmd(chip_name: str, profile: str, seed: int, runs: int, output: Path) -> None:
    """Reproduce the published characterization: read vs weight for inputs 0, 3 and 7.

    One run of all signed inputs at one value into columns whose weights rise from the most
    negative to the most positive weight, repeated RUNS times, on the emulator backend.
    """
    from anacc.compiler.chip import load_chip
    from anacc.runtime.backends import get_backend
    from anacc.runtime.characterize import (
        characterization_table,
        characterize,
        plot_characterization,
    )

    chip = load_chip(chip_name)
    backend = get_backend("emulator", chip, chip.profile(profile), seed=seed)
    result = characterize(backend, runs=runs)
    click.echo(
        f"{chip.name} ({profile}, chip instance {seed}): {result.num_sends} send(s), "
        f"{runs} runs per input; read (LSB) mean +- std"
    )
    click.echo(characterization_table(result))
    plot_characterization(result, output)
    click.echo(f"wrote {output}")


@chip_group.command("measure")
@click.option(
    "--chip",
    "chip_name",
    default="bss2",
    show_default=True,
    help="Chip name (shipped description) or path to a chip TOML file.",
)
@click.option(
    "--profile",
    "profiles",
    multiple=True,
    help="Calibration profile to measure (repeatable) [default: all].",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Emulated chip instance.")
@user_errors
def measure_cmd(chip_name: str, profiles: tuple[str, ...], seed: int) -> None:
    """Measure gain per send and noise through the emulator backend, beside the nominal values.

    Noise is measured at the chip's reference measurement (analog.noise_reference_* in the
    chip file): the median over neurons of the trial-to-trial std, ADC rounding included.
    """
    from anacc.compiler.chip import load_chip
    from anacc.runtime.backends import get_backend
    from anacc.runtime.characterize import measure_gain, measure_noise

    chip = load_chip(chip_name)
    names = profiles or tuple(sorted(chip.profiles))
    selected = [chip.profile(name) for name in names]
    click.echo(
        f"{'profile':<12}{'ota_bias':>9}{'tau_syn_us':>11}{'wait':>5}"
        f"{'gain nominal':>14}{'measured':>10}{'noise nominal':>15}{'measured':>10}"
    )
    for profile in selected:
        backend = get_backend("emulator", chip, profile, seed=seed)
        gain = measure_gain(backend)
        noise = measure_noise(backend)
        click.echo(
            f"{profile.name:<12}{profile.ota_bias:>9}{profile.tau_syn_us:>11g}"
            f"{profile.wait_cycles:>5}{profile.gain_per_send:>14.6f}{gain:>10.6f}"
            f"{profile.noise_sigma_lsb:>15.3f}{noise:>10.3f}"
        )

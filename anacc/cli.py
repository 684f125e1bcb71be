"""The ``anacc`` command line: one subcommand per step of the user's path."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import click
import numpy as np

from anacc import __version__
from anacc.cli_errors import user_errors
from anacc.errors import OptionError
from anacc.passes.finetune_options import FinetuneOptions

DEFAULTS = FinetuneOptions()

BACKENDS = ("emulator", "quantized", "ideal")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="anacc")
def main() -> None:
    """Compile ONNX models onto analog matrix-multiply chips, run, report and fine-tune them.

    \b
    anacc inspect  model.onnx                      what the model is made of
    anacc compile  model.onnx --calib calib.npz    -> model.anacc
    anacc run      model.anacc --data test.npz     accuracy on a backend
    anacc report   model.anacc [--data test.npz]   mapping, cost and error budget
    anacc finetune model.anacc --data train.npz    hardware-in-the-loop retraining
    anacc export   tuned.anacc -o tuned.onnx       fine-tuned weights back to ONNX
    anacc tune     model.onnx --calib ... --val ...  search calibration and mapping (Ray)
    anacc chip     characterize | measure          the emulated chip itself
    """


def _echo_warnings(warnings: list[str]) -> None:
    for w in warnings:
        click.echo(f"warning: {w}", err=True)


@main.command("compile")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Program file to write [default: MODEL with the .anacc suffix].",
)
@click.option(
    "--chip",
    default="bss2",
    show_default=True,
    help="Chip name (shipped description) or path to a chip TOML file.",
)
@click.option(
    "--profile", default="default", show_default=True, help="Calibration profile of the chip."
)
@click.option(
    "--calib",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Calibration data (.npz named after the model inputs) for static scales.",
)
@click.option(
    "--scale",
    default="percentile:99.99",
    show_default=True,
    help="Input scale method: max, percentile:<p>, mse or ema.",
)
@click.option(
    "--weight-scale",
    type=click.Choice(["column", "layer"]),
    default="column",
    show_default=True,
    help="One weight scale per output column or per layer.",
)
@click.option(
    "--signed",
    type=click.Choice(["auto", "shift", "split"]),
    default="auto",
    show_default=True,
    help="How layers with negative inputs are fed.",
)
@click.option(
    "--row-order",
    type=click.Choice(["natural", "interleaved"]),
    default="natural",
    show_default=True,
    help="Order of row pairs; interleaved spreads strong rows.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed for calibration subsampling."
)
@click.option(
    "--gain-factor",
    type=float,
    default=1.0,
    show_default=True,
    help="Multiply every layer's chosen num_sends by this factor.",
)
@click.option(
    "--placement",
    type=click.Choice(["time", "energy", "naive"]),
    default="time",
    show_default=True,
    help="What tile placement optimizes per sample (naive: one tile per half, no copies).",
)
@click.option(
    "--chips",
    type=click.IntRange(min=1, max=1024),
    default=1,
    show_default=True,
    help="Chips to place the loads on (layers pipelined across them).",
)
@click.option(
    "--max-params",
    type=click.IntRange(min=0),
    default=None,
    help="Refuse models with more parameters than this.",
)
@click.option("--explain", is_flag=True, help="Print what every pass did.")
@user_errors
def compile_cmd(
    model,
    output,
    chip,
    profile,
    calib,
    scale,
    weight_scale,
    signed,
    row_order,
    seed,
    gain_factor,
    placement,
    chips,
    max_params,
    explain,
):
    """Compile MODEL (ONNX) into a program file for the chip."""
    from anacc.compiler.options import CompileOptions
    from anacc.compiler.pipeline import compile_model

    output = output or model.with_suffix(".anacc")
    if output.suffix == ".onnx":
        raise OptionError(f"{output}: the program file should not end in .onnx; use .anacc")
    opts = CompileOptions(
        scale=scale,
        weight_scale=weight_scale,
        signed=signed,
        row_order=row_order,
        seed=seed,
        gain_factor=gain_factor,
        placement=placement,
        chips=chips,
    )
    program = compile_model(
        model, chip=chip, profile=profile, calib=calib, options=opts, max_params=max_params
    )
    from anacc.compiler.frontend import external_data_files
    from anacc.compiler.program_io import save_program

    protect = (model, *([calib] if calib else []), *external_data_files(model))
    save_program(program, output, protect=protect)
    if explain:
        click.echo(program.explain)
    _echo_warnings(program.warnings)
    n_tiles = sum(len(layer.analog.tiles) for layer in program.layers.values())
    n_digital = len(program.digital_nodes)
    click.echo(
        f"compiled {model.name} for {program.chip.name}/{profile}: "
        f"{len(program.layers)} analog layers, {n_tiles} tiles on {program.loads} chip load(s)"
        + (f" of {chips} chips" if chips > 1 else "")
        + ", "
        f"{n_digital} digital op{'s' if n_digital != 1 else ''} -> {output}"
    )


@main.command("run")
@click.argument("program", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--data",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Input data (.npz named after the model inputs, optional 'labels').",
)
@click.option("--backend", type=click.Choice(BACKENDS), default="emulator", show_default=True)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Emulated chip instance (fixed pattern) and noise seed.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the outputs to this .npz, named after the graph outputs.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--profile",
    "profile_run",
    is_flag=True,
    help="Print the time per step and per kind of work, and the run's peak memory.",
)
@click.option(
    "--instances",
    type=click.IntRange(min=1),
    default=None,
    metavar="K",
    help="Accuracy over K emulated chip instances (seeds SEED..SEED+K-1): mean, standard "
    "deviation, worst and a histogram.",
)
@click.option(
    "--address",
    default=None,
    metavar="ADDR",
    help="With --instances: run the instances on this Ray cluster (auto, HOST:PORT or "
    "ray://HOST:PORT) instead of here.",
)
@user_errors
def run_cmd(
    program, data, backend, seed, batch_size, output, as_json, profile_run, instances, address
):
    """Run PROGRAM on DATA with a backend; prints top-1 accuracy when DATA has labels."""
    from anacc.compiler.datafile import load_dataset
    from anacc.compiler.files import atomic_write
    from anacc.compiler.program_io import load_program
    from anacc.runtime.session import run_program

    if output is not None:
        for p in (program, data):
            if output.resolve() == p.resolve():
                raise OptionError(f"{output}: refusing to overwrite an input file")
    if address is not None and instances is None:
        raise OptionError("--address runs chip instances on a cluster; give --instances K too")
    if profile_run and instances is not None:
        raise OptionError("--profile times one run; leave it out with --instances")
    prog = load_program(program)
    ds = load_dataset(data, prog.inputs)
    if instances is not None:
        _run_instances(prog, ds, backend, seed, batch_size, output, as_json, instances, address)
        return
    profiler = None
    if profile_run:
        from anacc.runtime.profiler import Profiler

        profiler = Profiler()
    result = run_program(
        prog,
        ds,
        backend=backend,
        seed=seed,
        batch_size=batch_size,
        progress=sys.stderr.isatty() and not as_json and profiler is None,
        profiler=profiler,
    )
    _echo_warnings(result.warnings)
    if output is not None:
        buf = io.BytesIO()
        np.savez(buf, **result.outputs)
        atomic_write(output, buf.getvalue(), protect=(program, data))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "backend": result.backend,
                    "samples": result.samples,
                    "accuracy": result.accuracy,
                    "seconds": round(result.seconds, 4),
                    "outputs": {k: list(v.shape) for k, v in result.outputs.items()},
                    **({"profile": profiler.to_dict()} if profiler is not None else {}),
                }
            )
        )
        return
    acc = "n/a (no labels)" if result.accuracy is None else f"{100 * result.accuracy:.2f} %"
    click.echo(
        f"{result.backend}: {result.samples} samples, top-1 accuracy {acc}, "
        f"{result.seconds:.2f} s" + (f" -> {output}" if output else "")
    )
    if profiler is not None:
        click.echo(f"\nprofile (program load excluded):\n{profiler.table()}")


def _run_instances(prog, ds, backend, seed, batch_size, output, as_json, instances, address):
    from anacc.runtime.instances import evaluate_instances, instance_seeds

    if backend != "emulator":
        raise OptionError(f"--instances needs the emulator backend ({backend} has no instances)")
    if output is not None:
        raise OptionError("-o writes one run's outputs; leave it out with --instances")
    if ds.labels is None:
        raise OptionError(f"{ds.path}: --instances measures accuracy; the data needs 'labels'")
    seeds = instance_seeds(instances, seed)
    show = sys.stderr.isatty() and not as_json and address is None

    def progress(s: int, acc: float) -> None:
        click.echo(f"instance {s}: {100 * acc:.2f} %", err=True)

    stats = evaluate_instances(
        prog, ds, seeds, batch_size=batch_size, address=address, progress=progress if show else None
    )
    if as_json:
        click.echo(json.dumps({"backend": backend, **stats.to_json()}))
        return
    click.echo(stats.render_text())
    click.echo(f"{stats.seconds:.2f} s" + ("" if address is None else f" on Ray at {address}"))


@main.command("finetune")
@click.argument("program", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--data",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Training data (.npz with the model inputs and 'labels').",
)
@click.option(
    "--val",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Validation data; the best epoch by validation accuracy is kept.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=DEFAULTS.epochs, show_default=True)
@click.option(
    "--lr", type=float, default=DEFAULTS.lr, show_default=True, help="Adam learning rate."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Emulated chip instance (the first of --instances), noise and shuffling seed.",
)
@click.option(
    "--instances",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="K",
    help="Fine-tune against K chip instances (seeds SEED..SEED+K-1) for weights that hold "
    "across chips; 1 learns the one chip's own fixed pattern.",
)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="emulator",
    show_default=True,
    help="Backend in the loop.",
)
@click.option(
    "--scale-update",
    type=click.Choice(["static", "ema", "learned"]),
    default=DEFAULTS.scale_update,
    show_default=True,
    help="Input scales: kept during training and re-derived on the training data at the "
    "end, followed by a moving average, or learned.",
)
@click.option(
    "--sends",
    type=click.Choice(["search", "keep"]),
    default=DEFAULTS.sends,
    show_default=True,
    help="Revisit num_sends per layer with the chip in the loop (beyond 32 forward passes, "
    "one factor for every layer), or keep the compiled ones.",
)
@click.option(
    "--column-gain/--no-column-gain",
    default=DEFAULTS.column_gain,
    show_default=True,
    help="Learn a digital gain per output column after the ADC.",
)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this many epochs without a better validation accuracy.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Fine-tuned program to write.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object: the epochs and the result."
)
@user_errors
def finetune_cmd(
    program,
    data,
    val,
    epochs,
    lr,
    batch_size,
    seed,
    instances,
    backend,
    scale_update,
    sends,
    column_gain,
    patience,
    output,
    as_json,
):
    """Fine-tune PROGRAM with the (emulated) chip in the loop; writes a new program."""
    from anacc.compiler.datafile import load_dataset
    from anacc.compiler.program_io import load_program, save_program
    from anacc.passes.finetune import FinetuneOptions, finetune

    protect = tuple(p for p in (program, data, val) if p is not None)
    for p in protect:
        if output.resolve() == p.resolve():
            raise OptionError(f"{output}: refusing to overwrite an input file; choose another -o")
    opts = FinetuneOptions(
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        backend=backend,
        instances=instances,
        scale_update=scale_update,
        sends=sends,
        column_gain=column_gain,
        patience=patience,
    )
    prog = load_program(program)
    train = load_dataset(data, prog.inputs)
    val_ds = load_dataset(val, prog.inputs) if val is not None else None
    say = (lambda line: click.echo(line, err=True)) if as_json else click.echo
    result = finetune(
        prog, train, val_ds, opts, progress=sys.stderr.isatty() and not as_json, log=say
    )
    save_program(result.program, output, protect=protect)
    if as_json:
        click.echo(json.dumps({"backend": backend, **result.to_json(), "output": str(output)}))
        return
    if result.initial_val_accuracy is not None and result.final_val_accuracy is not None:
        click.echo(
            f"validation accuracy on {backend}: {100 * result.initial_val_accuracy:.2f} % "
            f"before, {100 * result.final_val_accuracy:.2f} % after (best epoch "
            f"{result.best_epoch}"
            + (f", {instances} chip instances" if instances > 1 else "")
            + ")"
        )
    click.echo(f"wrote {output}")


@main.command("export")
@click.argument("program", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="ONNX file to write.",
)
@user_errors
def export_cmd(program, output):
    """Write PROGRAM's float weights (e.g. after fine-tuning) back into an ONNX model."""
    from anacc.compiler.export import export_onnx
    from anacc.compiler.program_io import load_program

    if output.resolve() == program.resolve():
        raise OptionError(f"{output}: refusing to overwrite the program; choose another -o")
    export_onnx(load_program(program), output, protect=(program,))
    click.echo(f"wrote {output}")


def _register_optional() -> None:
    from anacc.cli_chip import chip_group
    from anacc.cli_inspect import inspect_cmd
    from anacc.cli_report import report_cmd
    from anacc.cli_tune import tune_cmd

    main.add_command(inspect_cmd)
    main.add_command(report_cmd)
    main.add_command(chip_group)
    main.add_command(tune_cmd)


_register_optional()

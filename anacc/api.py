"""The Python face of anacc: ``anacc.compile(...)``, ``Program.load(...)``, ``program.run(...)``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from anacc.compiler import program as _program
from anacc.compiler.options import CompileOptions
from anacc.compiler.pipeline import compile_model


class Program(_program.Program):
    """A compiled model (see :class:`anacc.compiler.program.Program`) that can run itself."""

    @classmethod
    def wrap(cls, base: _program.Program) -> Program:
        return cls(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})

    def run(
        self,
        inputs: dict[str, np.ndarray],
        *,
        backend: str = "emulator",
        seed: int = 0,
        batch_size: int = 256,
    ) -> dict[str, np.ndarray]:
        """Outputs (named after the graph outputs) for a batch of inputs."""
        from anacc.runtime.executor import run_program

        return run_program(self, inputs, backend=backend, seed=seed, batch_size=batch_size).outputs

    def evaluate(self, inputs: dict[str, np.ndarray], **kwargs: Any):
        """Like :meth:`run` but returns the full result (accuracy with ``labels``, seconds)."""
        from anacc.runtime.executor import run_program

        return run_program(self, inputs, **kwargs)

    def report(self, data: dict[str, np.ndarray] | None = None, **kwargs: Any):
        """The mapping report (with ``data``: error budget and accuracy per backend)."""
        from anacc.runtime.report import build_report

        return build_report(self, data, **kwargs)

    def finetune(
        self,
        train: dict[str, np.ndarray],
        val: dict[str, np.ndarray] | None = None,
        **options: Any,
    ) -> Program:
        """Hardware-in-the-loop fine-tuning (see :class:`FinetuneOptions` for the options);
        returns the fine-tuned program. ``train`` and ``val`` hold the inputs and ``labels``."""
        from anacc.compiler.datafile import match_inputs
        from anacc.passes.finetune import FinetuneOptions, finetune

        tr = match_inputs(train, self.inputs, "training data")
        va = match_inputs(val, self.inputs, "validation data") if val is not None else None
        return Program.wrap(finetune(self, tr, va, FinetuneOptions(**options)).program)


def compile(  # noqa: A001 - the public name mirrors the command
    model: str | Path,
    *,
    chip: str | Path = "bss2",
    profile: str = "default",
    calib: str | Path | dict[str, np.ndarray] | None = None,
    max_params: int | None = None,
    **options: Any,
) -> Program:
    """Compile an ONNX model; keyword options are those of :class:`CompileOptions`."""
    opts = CompileOptions(**options)
    return Program.wrap(
        compile_model(
            model, chip=chip, profile=profile, calib=calib, options=opts, max_params=max_params
        )
    )

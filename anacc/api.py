"""The Python face of anacc: ``anacc.compile(...)``, ``anacc.Program.load(...)``,
``anacc.Session(program, ...)``, the one-call shortcut ``program.run(...)`` and the accuracy
over chip instances ``program.evaluate_instances(...)``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anacc.compiler import program as _program
from anacc.compiler import program_io
from anacc.compiler.options import CompileOptions
from anacc.compiler.pipeline import compile_model
from anacc.runtime.instances import InstanceStats, evaluate_instances, instance_seeds
from anacc.runtime.session import RunResult
from anacc.runtime.session import Session as _Session


class Program(_program.Program):
    """A compiled model (see :class:`anacc.compiler.program.Program`) that can save, load
    and run itself."""

    @classmethod
    def wrap(cls, base: _program.Program) -> Program:
        return cls(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)})

    @classmethod
    def load(cls, path: str | Path) -> Program:
        """Read a program file (checked; never unpickled)."""
        return program_io.load_program(path, cls)

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "<program>") -> Program:
        return program_io.program_from_bytes(data, where, cls)

    def save(self, path: str | Path, *, protect: tuple[str | Path, ...] = ()) -> Path:
        """Write the program file atomically."""
        return program_io.save_program(self, path, protect=protect)

    def to_bytes(self) -> bytes:
        return program_io.program_to_bytes(self)

    def run(
        self,
        inputs: dict[str, np.ndarray],
        *,
        backend: str = "emulator",
        seed: int = 0,
        batch_size: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Outputs (named after the graph outputs) for a batch of inputs. The same seed gives
        the same outputs on every call: each call runs as a new :class:`Session` would (one
        kept per backend and seed, its noise sequence started again; keep a session yourself
        to draw fresh noise call after call)."""
        return self._session(backend, seed).run(inputs, batch_size=batch_size)

    def evaluate(self, inputs: dict[str, np.ndarray], **kwargs: Any) -> RunResult:
        """Like :meth:`run` but returns the full result (accuracy with ``labels``, seconds)."""
        backend = kwargs.pop("backend", "emulator")
        seed = kwargs.pop("seed", 0)
        return self._session(backend, seed).evaluate(inputs, **kwargs)

    def _session(self, backend: str, seed: int) -> Session:
        """The kept session for ``(backend, seed)`` and the current torch thread count, its
        noise sequence started again. It is built on first use (chip instance, onnxruntime
        sessions of the digital regions) and lives as long as this program object."""
        sessions = self.__dict__.setdefault("_sessions", {})
        key = (backend, seed, torch.get_num_threads())
        session = sessions.get(key)
        if session is None or session.program is not self:  # a shallow copy shares the dict
            session = sessions[key] = Session(self, backend=backend, seed=seed)
        session.reset_noise()
        return session

    def __getstate__(self) -> dict[str, Any]:
        """Pickles without the kept sessions (they hold onnxruntime sessions)."""
        state = self.__dict__.copy()
        state.pop("_sessions", None)
        return state

    def evaluate_instances(
        self,
        inputs: dict[str, np.ndarray],
        instances: int = 20,
        *,
        seed: int = 0,
        address: str | None = None,
        batch_size: int = 256,
    ) -> InstanceStats:
        """Top-1 accuracy on ``instances`` emulated chip instances (seeds ``seed`` on), with
        mean, standard deviation, worst and a histogram; ``inputs`` hold ``labels``. With
        ``address`` the instances run as Ray tasks on that cluster."""
        seeds = instance_seeds(instances, seed)
        return evaluate_instances(self, inputs, seeds, batch_size=batch_size, address=address)

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

    def export(self, path: str | Path) -> Path:
        """Write the program's float weights back into an ONNX model."""
        from anacc.compiler.export import export_onnx

        return export_onnx(self, path)


class Session(_Session):
    """A program ready to run on one backend, like onnxruntime's ``InferenceSession``.

    ``Session(program, backend="emulator", seed=0)`` builds the emulated chip instance
    ``seed`` (its fixed pattern) and the digital side once; ``session.run(feeds)`` returns the
    outputs, drawing fresh trial-to-trial noise on every call from one stream the seed makes
    reproducible. ``program`` may be a :class:`Program` or the path of a program file.
    """

    def __init__(
        self,
        program: _program.Program | str | Path,
        backend: str = "emulator",
        seed: int = 0,
        *,
        threads: int | None = None,
    ) -> None:
        if not isinstance(program, _program.Program):
            program = Program.load(program)
        super().__init__(program, backend, seed, threads=threads)


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

"""The settings of an ``anacc tune`` search and the file that keeps them, ``tune.json``.

Contract. :class:`TuneSettings` is everything that defines a search (model, data, chip, search
space, trial count, objective, chip instances, sampler seed); it checks its own values and
round-trips through plain JSON. :func:`write_settings` stores it in a search folder with the
model's hash and :data:`SETTINGS_VERSION`; :func:`load_settings` reads it back and refuses a
missing, damaged or incompatible file with one :class:`~anacc.errors.OptionError`.
:func:`settings_difference` names the first setting in which two searches differ (the trial
count aside: a resumed search may raise it).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anacc.compiler.chip import ChipSpec
from anacc.compiler.files import atomic_write
from anacc.errors import OptionError
from anacc.tune.space import SearchSpace

OBJECTIVES = ("accuracy", "accuracy-energy")
SETTINGS_FILE = "tune.json"
SETTINGS_VERSION = 1


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


def write_settings(out_dir: Path, settings: TuneSettings, model_sha256: str) -> None:
    """Store ``settings`` and the model's hash as ``tune.json`` in ``out_dir`` (atomically)."""
    blob = {
        "version": SETTINGS_VERSION,
        "model_sha256": model_sha256,
        "settings": settings.to_dict(),
    }
    atomic_write(Path(out_dir) / SETTINGS_FILE, json.dumps(blob, indent=1).encode())


def stored_model_sha256(out_dir: Path) -> str | None:
    """The hash of the model the search in ``out_dir`` was started with."""
    path = Path(out_dir) / SETTINGS_FILE
    return json.loads(path.read_text(encoding="utf-8")).get("model_sha256")


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

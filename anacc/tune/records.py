"""The trial store of a search: one :class:`TrialRecord` per finished trial in ``trials.jsonl``.

Contract. The driver appends each finished trial (ok or failed) as one JSON line with its
newline, flushed and synced (:func:`append_record`), so that an interrupted search keeps every
trial that ended. :func:`read_records` reads the whole lines back; a last line without its
newline was torn by a crash mid-write: it is not a record, and :func:`drop_torn_tail` cuts it
before new records follow. Any other line that is not a record is a damaged folder, one
:class:`~anacc.errors.OptionError`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anacc.errors import OptionError

TRIALS_FILE = "trials.jsonl"


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


def drop_torn_tail(out_dir: Path) -> None:
    """Cut a torn last line (a crash mid-write) so that new records follow whole lines."""
    path = Path(out_dir) / TRIALS_FILE
    if not path.is_file():
        return
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep != len(data):
        with path.open("r+b") as f:
            f.truncate(keep)


def append_record(out_dir: Path, record: TrialRecord) -> None:
    """Append ``record`` as one whole line, on disk before the next trial ends."""
    path = Path(out_dir) / TRIALS_FILE
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record.to_dict()) + "\n")
        f.flush()
        os.fsync(f.fileno())

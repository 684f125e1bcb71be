"""The driver's record of a running search: a Ray Tune callback that keeps each finished trial.

Contract. :func:`recorder` makes a Tune callback that, as each trial ends (ok or failed),
numbers it after the trials before it, tags it with the baseline it reproduces (if any),
appends it to the trial store (:func:`~anacc.tune.records.append_record`) and logs one
progress line (:func:`trial_line`). A failed trial keeps the last line of its error and the
path of its traceback in the Tune experiment folder. Ray is imported on use only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from anacc.tune.config import same_params, scale_option
from anacc.tune.records import TrialRecord, append_record
from anacc.tune.settings import TuneSettings


def recorder(
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
            append_record(out_dir, record)
            self.number += 1
            log(trial_line(record, settings))

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any):
            self._write(trial, "ok", trial.last_result, None)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any):
            self._write(trial, "error", {}, _error_line(trial))

    return Recorder()


# what a trial's result adds to its record (Tune adds its own keys to every result)
_RESULT_KEYS = frozenset(
    {
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
)


def _error_line(trial: Any) -> str:
    """The last line of the trial's error (the exception itself) and where the rest is."""
    staged = Path(trial.error_file) if trial.error_file else None
    text = staged.read_text("utf-8", errors="replace") if staged and staged.is_file() else ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "the trial failed; see the Tune experiment folder"
    # Tune stages the file in Ray's temp folder and then copies it into the experiment.
    return f"{lines[-1]} (traceback: {Path(trial.path) / staged.name})"


def trial_line(r: TrialRecord, settings: TuneSettings) -> str:
    """The progress line of one finished trial: its score and knobs, or why it failed."""
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

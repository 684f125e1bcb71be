"""What the report of an ``anacc tune`` search holds, and the knob importances in it.

Contract. :class:`TuneReport` is everything the three renderings show (text and JSON in
:mod:`anacc.tune.report_text`, HTML in :mod:`anacc.tune.report_html`): the search space, the
baselines (the chip's named profiles at the default compile options, evaluated as the first
trials), the recommended trial, the best trials, the Pareto front of accuracy against
estimated energy per inference, and knob importances. Importances come from
``optuna.importance`` with the PED-ANOVA evaluator (no fANOVA, no scikit-learn) on an Optuna
study rebuilt from the finished trials: the importance of each searched dimension for
reaching the best :data:`IMPORTANCE_QUANTILE` of trials, for accuracy (higher is better) and
for energy (lower is better), normalized to sum 1. With fewer than
:data:`MIN_IMPORTANCE_TRIALS` finished trials no importances are given.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from anacc.tune.records import TrialRecord
from anacc.tune.settings import TuneSettings
from anacc.tune.space import SearchSpace
from anacc.tune.study import study_from_records

IMPORTANCE_QUANTILE = 0.2
MIN_IMPORTANCE_TRIALS = 10
IMPORTANCE_METHOD = (
    f"PED-ANOVA (optuna.importance.PedAnovaImportanceEvaluator) for reaching the best "
    f"{100 * IMPORTANCE_QUANTILE:g} % of the finished trials"
)
TOP_TRIALS = 10


@dataclass(frozen=True)
class TuneReport:
    """Everything the three renderings show; numbers are fractions, uJ and us."""

    settings: TuneSettings
    records: tuple[TrialRecord, ...]
    best: TrialRecord
    baselines: dict[str, TrialRecord]
    pareto: tuple[TrialRecord, ...]
    importances: dict[str, dict[str, float]]
    importance_note: str
    command: str

    @property
    def finished(self) -> tuple[TrialRecord, ...]:
        return tuple(r for r in self.records if r.ok)

    @property
    def failed(self) -> int:
        return sum(not r.ok for r in self.records)


def param_importances(
    space: SearchSpace, records: Sequence[TrialRecord]
) -> tuple[dict[str, dict[str, float]], str]:
    """Importance per searched dimension, for accuracy and for energy, and a note on how."""
    ok = [r for r in records if r.ok]
    if len(ok) < MIN_IMPORTANCE_TRIALS:
        return {}, (
            f"too few finished trials for importances ({len(ok)} < {MIN_IMPORTANCE_TRIALS})"
        )
    import optuna

    study = study_from_records(space, ok, "accuracy-energy")
    evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=IMPORTANCE_QUANTILE)
    targets = {
        "accuracy": lambda t: -t.values[0],
        "energy": lambda t: t.values[1],
    }
    out = {}
    with warnings.catch_warnings():
        # PED-ANOVA warns that it treats lower targets as better (as meant here) and that
        # it is experimental.
        warnings.simplefilter("ignore")
        for name, target in targets.items():
            values = optuna.importance.get_param_importances(
                study, evaluator=evaluator, target=target
            )
            out[name] = {k: float(v) for k, v in values.items()}
    return out, IMPORTANCE_METHOD


def build_report(
    settings: TuneSettings,
    records: tuple[TrialRecord, ...],
    best: TrialRecord,
    pareto: tuple[TrialRecord, ...],
    command: str,
) -> TuneReport:
    """The report of a finished search: its baselines (the first finished trial of each
    named profile) and importances, beside what the caller chose."""
    baselines: dict[str, TrialRecord] = {}
    for r in records:
        if r.ok and r.baseline and r.baseline not in baselines:
            baselines[r.baseline] = r
    importances, note = param_importances(settings.space, records)
    return TuneReport(settings, records, best, baselines, pareto, importances, note, command)


def top_trials(r: TuneReport) -> list[TrialRecord]:
    """The :data:`TOP_TRIALS` most accurate finished trials (ties: lower energy, earlier)."""
    return sorted(r.finished, key=lambda t: (-t.accuracy, t.energy_uj, t.number))[:TOP_TRIALS]

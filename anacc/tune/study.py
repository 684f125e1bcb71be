"""The Optuna side of a search: distributions of the searched dimensions, and a study rebuilt
from the trial store.

Contract. :func:`optuna_distributions` maps each searched dimension of a
:class:`~anacc.tune.space.SearchSpace` to its Optuna distribution (the fixed ones are not
searched). :func:`study_from_records` rebuilds a study holding finished trials, so that a
resumed search hands them to its sampler as history and the report computes importances from
them; failed trials enter as failed. Optuna is imported on use (it lives in the ``tune``
extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from anacc.tune.records import TrialRecord
from anacc.tune.space import SearchSpace

STUDY_NAME = "anacc-tune"


def optuna_distributions(space: SearchSpace) -> dict[str, Any]:
    """Optuna distributions of the searched dimensions."""
    import optuna

    out: dict[str, Any] = {}
    for d in space.searched:
        if d.kind == "choice":
            out[d.name] = optuna.distributions.CategoricalDistribution(list(d.choices))
        elif d.kind == "int":
            out[d.name] = optuna.distributions.IntDistribution(int(d.low), int(d.high), log=d.log)
        else:
            out[d.name] = optuna.distributions.FloatDistribution(
                d.low, d.high, log=d.log, step=d.step
            )
    return out


def objective_values(record: TrialRecord, objective: str) -> list[float]:
    """The values ``objective`` optimizes for a finished trial: accuracy (and energy)."""
    assert record.ok and record.accuracy is not None and record.energy_uj is not None
    if objective == "accuracy":
        return [record.accuracy]
    return [record.accuracy, record.energy_uj]


def study_from_records(
    space: SearchSpace,
    records: Sequence[TrialRecord],
    objective: str,
    storage: Any = None,
) -> Any:
    """An Optuna study holding the finished ``records`` (failed ones as failed trials)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = ["maximize"] if objective == "accuracy" else ["maximize", "minimize"]
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, directions=directions)
    dists = optuna_distributions(space)
    for r in records:
        params = {k: r.params[k] for k in dists}
        if r.ok:
            trial = optuna.trial.create_trial(
                params=params, distributions=dists, values=objective_values(r, objective)
            )
        else:
            trial = optuna.trial.create_trial(
                params=params, distributions=dists, state=optuna.trial.TrialState.FAIL
            )
        study.add_trial(trial)
    return study


# -- one trial ----------------------------------------------------------------------------------

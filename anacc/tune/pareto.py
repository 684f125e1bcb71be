"""Which trials a search recommends: the Pareto front of accuracy and energy, and the best.

Contract. Only finished (``ok``) trials count. :func:`pareto_front` keeps the trials that no
other trial beats in both higher accuracy and lower energy per inference;
:func:`best_record` picks the recommendation for an objective (see its docstring).
"""

from __future__ import annotations

from collections.abc import Sequence

from anacc.tune.records import TrialRecord


def pareto_front(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """Finished trials not dominated in (higher accuracy, lower energy), by rising energy."""
    ok = [r for r in records if r.ok]
    front = []
    for r in ok:
        dominated = any(
            o.accuracy >= r.accuracy
            and o.energy_uj <= r.energy_uj
            and (o.accuracy > r.accuracy or o.energy_uj < r.energy_uj)
            for o in ok
        )
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: (r.energy_uj, -r.accuracy, r.number))


def best_record(records: Sequence[TrialRecord], objective: str) -> TrialRecord | None:
    """The trial whose configuration the search recommends.

    ``accuracy``: the highest mean accuracy (ties: lower energy, then the earlier trial).
    ``accuracy-energy``: on the Pareto front, the lowest-energy trial whose mean accuracy is
    within one standard deviation (over chip instances) of the most accurate trial's.
    """
    ok = [r for r in records if r.ok]
    if not ok:
        return None
    top = min(ok, key=lambda r: (-r.accuracy, r.energy_uj, r.number))
    if objective == "accuracy":
        return top
    near = [r for r in pareto_front(ok) if r.accuracy >= top.accuracy - (top.accuracy_std or 0)]
    return min(near, key=lambda r: (r.energy_uj, -r.accuracy, r.number))

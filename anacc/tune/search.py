"""Run a search: prepare its folder, run the remaining trials on Ray Tune, write the outputs.

Contract. :func:`run_search` runs (or continues) the search of a
:class:`~anacc.tune.settings.TuneSettings` in an output folder. The folder keeps
``tune.json`` (the settings), ``trials.jsonl`` (the finished trials) and the Tune experiment of
each session under ``ray/search-N``; running the same search on the same folder again
continues it: the finished trials are read back, handed to the Optuna sampler (TPE, through
Tune's ``OptunaSearch``) as history, and only the remaining ones run. The first trials of a
new search are the chip's named profiles at the default options (the baselines). After the
trials, :func:`~anacc.tune.outputs.finish` writes the outputs.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from anacc.errors import OptionError
from anacc.tune.config import baseline_points, same_params
from anacc.tune.engine import check_address, ray_session, require_engine
from anacc.tune.outputs import SearchOutcome, finish
from anacc.tune.recorder import recorder
from anacc.tune.records import TrialRecord, drop_torn_tail, read_records
from anacc.tune.settings import (
    SETTINGS_FILE,
    TuneSettings,
    load_settings,
    settings_difference,
    stored_model_sha256,
    write_settings,
)
from anacc.tune.study import STUDY_NAME, optuna_distributions, study_from_records
from anacc.tune.trial import TrialContext, trainable, trial_context

RAY_FOLDER = "ray"


def prepare_folder(settings: TuneSettings, out_dir: Path) -> list[TrialRecord]:
    """Make ``out_dir`` hold the search of ``settings`` and return its finished trials: a new
    folder is started, one with the same search (and model) is continued, anything else is
    refused."""
    from anacc.compiler.frontend import model_sha256

    sha = model_sha256(settings.model)
    path = out_dir / SETTINGS_FILE
    if path.is_file():
        stored = load_settings(out_dir)
        diff = settings_difference(stored, settings)
        if diff is not None:
            raise OptionError(
                f"{out_dir}: holds a search with another '{diff}'; resume it unchanged or "
                "choose another output folder"
            )
        if stored_model_sha256(out_dir) != sha:
            raise OptionError(
                f"{settings.model}: the model changed since the search in {out_dir} started; "
                "start a new search"
            )
    elif out_dir.exists() and not out_dir.is_dir():
        raise OptionError(f"{out_dir}: is a file; give a folder for the search")
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise OptionError(f"{out_dir}: exists and is not empty; choose a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    drop_torn_tail(out_dir)
    write_settings(out_dir, settings, sha)
    return read_records(out_dir)


def run_search(
    settings: TuneSettings,
    out_dir: str | Path,
    *,
    address: str | None = None,
    cpus: int = 2,
    max_new_trials: int | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> SearchOutcome:
    """Run (or continue) the search of ``settings`` in ``out_dir`` and write its outputs.

    A folder that already holds this search (same settings but possibly a larger ``trials``)
    is continued: its finished trials are kept and only the remaining ones run, at most
    ``max_new_trials`` of them in this call. ``cpus`` sizes a local Ray instance.
    """
    require_engine()
    if cpus < 1:
        raise OptionError(f"cpus {cpus}: use 1 or more")
    if max_new_trials is not None and max_new_trials < 1:
        raise OptionError(f"max new trials {max_new_trials}: use 1 or more")
    if address is not None:
        check_address(address)
    out_dir = Path(out_dir)
    ctx = trial_context(settings)
    records = prepare_folder(settings, out_dir)
    remaining = settings.trials - len(records)
    if max_new_trials is not None:
        remaining = min(remaining, max_new_trials)
    if remaining > 0:
        log(
            f"searching {remaining} trial(s) of {settings.trials} "
            f"({len(records)} finished before) in {out_dir}"
        )
        _run_trials(settings, ctx, out_dir, records, remaining, address, cpus, log)
    before = len(records)
    records = read_records(out_dir)
    return finish(settings, out_dir, records, len(records) - before)


def _run_trials(
    settings: TuneSettings,
    ctx: TrialContext,
    out_dir: Path,
    records: list[TrialRecord],
    count: int,
    address: str | None,
    cpus: int,
    log: Callable[[str], None],
) -> None:
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    # Tune's newer console output prints its banner whatever the verbosity; the classic one
    # stays quiet at verbosity 0, and anacc prints one line per trial itself.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    space = settings.space
    baselines = baseline_points(settings.chip, space)
    storage = optuna.storages.InMemoryStorage()
    # A resumed session gets its own sampler seed so that it does not replay the first one.
    sampler = optuna.samplers.TPESampler(seed=settings.seed + len(records))
    study = study_from_records(space, records, settings.objective, storage)
    for params in baselines.values():
        if not any(same_params(params, r.params) for r in records):
            study.enqueue_trial(params)
    metric: str | list[str] = "accuracy"
    mode: str | list[str] = "max"
    if settings.objective == "accuracy-energy":
        metric, mode = ["accuracy", "energy_uj"], ["max", "min"]
    session = _next_session(out_dir, records)
    with ray_session(address, cpus) as ray:
        concurrency = cpus if address is None else max(1, int(ray.cluster_resources()["CPU"]))
        searcher = OptunaSearch(
            space=optuna_distributions(space),
            metric=metric,
            mode=mode,
            sampler=sampler,
            storage=storage,
            study_name=STUDY_NAME,
        )
        function = tune.with_resources(tune.with_parameters(trainable, ctx=ctx), {"cpu": 1})
        tuner = tune.Tuner(
            function,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                num_samples=count,
                max_concurrent_trials=concurrency,
                reuse_actors=True,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=tune.RunConfig(
                name=f"search-{session}",
                storage_path=str((out_dir / RAY_FOLDER).resolve()),
                verbose=0,
                callbacks=[recorder(out_dir, settings, session, len(records), baselines, log)],
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        # anacc prints one line per trial, failures included (with the path of their
        # traceback); Tune's own log would repeat each failure as a traceback.
        tune_logger = logging.getLogger("ray.tune")
        level = tune_logger.level
        tune_logger.setLevel(logging.CRITICAL)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
                tuner.fit()
        finally:
            tune_logger.setLevel(level)


def _next_session(out_dir: Path, records: Sequence[TrialRecord]) -> int:
    """The number of this call's Tune experiment: after every earlier session, including one
    that was interrupted before a trial finished."""
    folders = [p.name.removeprefix("search-") for p in (out_dir / RAY_FOLDER).glob("search-*")]
    earlier = [r.session for r in records] + [int(n) for n in folders if n.isdigit()]
    return 1 + max(earlier, default=0)


def _trial_dirname(trial: Any) -> str:
    return f"trial-{trial.trial_id}"

"""``anacc tune``: search a calibration profile and compile options for one model.

A search evaluates trials of a search space (the chip's physical knobs, the global gain
factor, the input scale method and percentile, the weight scale, the row order and the
signed-input strategy) on the emulated chip, with Ray Tune running Optuna's TPE sampler, and
recommends one configuration: a chip file with the profile ``tuned``, compile options, a
compiled program and a report. One module per job, each with its contract:

- :mod:`~anacc.tune.space`: the search space, from the chip and a ``--space`` file
- :mod:`~anacc.tune.config`: a configuration as a chip profile and compile options
- :mod:`~anacc.tune.settings`: the settings of a search and ``tune.json``
- :mod:`~anacc.tune.records`: the trial store, ``trials.jsonl``
- :mod:`~anacc.tune.pareto`: the Pareto front and the recommended trial
- :mod:`~anacc.tune.study`: Optuna distributions, and a study rebuilt from the trials
- :mod:`~anacc.tune.trial`: one trial: compile, fine-tune, measure
- :mod:`~anacc.tune.engine`: the Ray session, local or on a cluster
- :mod:`~anacc.tune.recorder`: the Tune callback that records each finished trial
- :mod:`~anacc.tune.search`: :func:`~anacc.tune.search.run_search`, the driver
- :mod:`~anacc.tune.outputs`: the best chip, options, program and reports
- :mod:`~anacc.tune.report`, :mod:`~anacc.tune.report_text`, :mod:`~anacc.tune.report_html`:
  the report and its text, JSON and HTML renderings

Ray and Optuna live in the ``tune`` extra and are imported on use only; this package imports
none of its modules, so that importing one module loads only what that module needs.
"""

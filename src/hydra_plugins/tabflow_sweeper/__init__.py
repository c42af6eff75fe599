"""Hydra sweeper plugin ``hydra/sweeper=tabflow_optuna``: hydra-optuna-sweeper for long sweeps.

* ``tabflow_sweeper``: the plugin class and its config schema (Hydra imports it at start-up,
  so it stays cheap; the modules below load only when a sweep runs).
* ``_sweep``: the loop: search space, ask, launch, tell; an interrupted launch.
* ``_study``: open, resume, warm-start the Optuna study; ask under its shared lock.
* ``_outcomes``: what a trial's job returned (its return value or its output dir).
* ``_progress``: the progress line and ``optimization_results.yaml``.

Modules named with a leading underscore are skipped by Hydra's plugin scan.
"""

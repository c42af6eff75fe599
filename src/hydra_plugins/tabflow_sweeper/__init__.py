"""Hydra sweeper plugin: hydra-optuna-sweeper that passes the Optuna trial number to jobs."""

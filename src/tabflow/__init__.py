"""tabflow: Hydra-configured tabular ML experiments, swept by Optuna and tracked in MLflow."""

__version__ = "0.1.0"

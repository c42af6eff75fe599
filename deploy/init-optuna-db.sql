-- A second database for the shared Optuna study (hydra/sweeper/storage=postgres).
CREATE DATABASE optuna OWNER mlflow;

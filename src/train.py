"""Train one configuration, or sweep many with Optuna.

    python src/train.py                          # one run on the defaults
    python src/train.py -m model=rf sweep=wide   # an Optuna sweep, tracked in MLflow

Tracking and registration happen in a Hydra callback (``tabflow.callback``); this
entry only runs the job and returns the objective to the sweeper.
"""

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from tabflow.config import register_configs
from tabflow.contract import (
    CODE_ROOT,
    exit_cleanly,
    interrupt_code,
    raise_on_sigterm,
    skip_exit_gc,
)

# Anchor stores and data paths at the project root, whatever the cwd (conf/train.yaml reads it).
os.environ.setdefault("TABFLOW_ROOT", str(CODE_ROOT))
register_configs()


# Config-named targets Hydra may instantiate: exactly our callbacks (estimator classes are
# admitted by tabflow.estimators, the sweeper's hooks by its own list; docs/security.md).
# A callback of your own is code: add its class path here, not in a config file.
CALLBACKS = ("tabflow.checks.ConfigCheck", "tabflow.callback.MlflowCallback")


@hydra.main(config_path="../conf", config_name="train", execution_whitelist=CALLBACKS)
def main(cfg: DictConfig) -> float | list[float]:
    """Run one job and return the objective the Optuna sweeper optimises."""
    # scikit-learn loads only when a job runs, so --help and config errors stay fast.
    from tabflow.job import objective_value, run_job, threads_per_job
    from tabflow.pruning import reporter

    hydra_cfg = HydraConfig.get()
    parallel = hydra_cfg.launcher.get("n_jobs") or hydra_cfg.sweeper.get("n_jobs")
    threads = threads_per_job(cfg.threads, parallel)
    out = hydra_cfg.runtime.output_dir
    metrics = run_job(cfg, out, threads=threads, save_model=hydra_cfg.mode == RunMode.RUN,
                      report=reporter(cfg, hydra_cfg, Path(out)))
    return objective_value(metrics, cfg.objective.metric)


def check_callbacks(argv: list[str]) -> None:
    """Refuse, in one line, a command-line callback outside ``CALLBACKS`` (exit 2).

    Hydra's whitelist refuses it too, but with a traceback; a callback in a config file
    still meets that refusal (docs/security.md).
    """
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+~").startswith("hydra.callbacks") and \
                key.endswith("_target_") and value not in CALLBACKS:
            exit_cleanly(f"Config error: {key.lstrip('+~')}={value} is not a callback tabflow "
                         f"ships ({', '.join(CALLBACKS)}); a callback of your own is code: add "
                         f"its class to CALLBACKS in src/train.py (docs/security.md)", code=2)


if __name__ == "__main__":
    # Ctrl-C and SIGTERM anywhere end with one line; the sweeper and the sweep's end say
    # more when they are the ones interrupted (see contract.Interrupted).
    raise_on_sigterm()
    # A log line that can't be written (a full disk under the job's log file) is dropped,
    # not printed to stderr as a traceback of its own; the error it reports still stops
    # the command with one line.
    logging.raiseExceptions = False
    try:
        check_callbacks(sys.argv[1:])
        main()
    except KeyboardInterrupt as e:
        what = "Sweep" if {"-m", "--multirun"} & set(sys.argv) else "Run"
        exit_cleanly(f"{what} interrupted ({e or 'Ctrl-C'}); nothing recorded is lost. Re-run "
                     f"the same command to " + ("resume its study" if what == "Sweep" else
                                               "run it again"),
                     e, code=interrupt_code(e), interrupted=True)
    finally:
        skip_exit_gc()  # the command is done: exit without scanning the heap (~1 s)

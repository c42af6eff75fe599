"""hydra-optuna-sweeper, extended for long sweeps (resume, budgets, failures).

The upstream sweeper asks Optuna for trials and launches them as Hydra jobs. It never
tells a job its trial number (hydra issue 2293), re-runs ``n_trials`` more trials on a
re-run (issue 3328), has no timeout, and stops at the first failed trial. This plugin
extends it (``_sweep`` and the modules it uses) without forking it, and registers
``hydra/sweeper=tabflow_optuna``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from omegaconf import DictConfig

from hydra_plugins.tabflow_sweeper.contract import disk_full, exit_cleanly, interrupt_code


class TabflowOptunaSweeper(Sweeper):
    """Optuna sweeper with resume, timeout, warm start, conditional spaces and failure handling.

    See ``_sweep`` for the sweep loop; this class only builds it, so that importing the
    plugin (Hydra imports every plugin at start-up, even for ``--help``) stays cheap.
    """

    def __init__(self, sampler: Any, direction: Any, storage: Any | None,
                 study_name: str | None, n_trials: int, n_jobs: int | None,
                 max_failure_rate: float, custom_search_space: str | None,
                 params: DictConfig | None, timeout: float | None = None,
                 enqueue_defaults: bool = False, enqueue: Any = (),
                 conditional_on: str = "model", conditional_params: Any = None,
                 pruner: Any = None, heartbeat: Any = None,
                 study_namer: str | None = None, hooks: Any = ()) -> None:
        """Build the sampler and pruner (Optuna's only) and the implementation.

        ``study_namer`` is read from the composed config when the study is named
        (``identity``), like every setting of the job's config. Nothing named by the
        config is imported before ``_hooks.check_settings`` admits it (exit 2 otherwise).
        """
        from hydra_plugins.tabflow_sweeper._hooks import HookError, check_settings, resolve_hook
        from hydra_plugins.tabflow_sweeper._pruning import build_pruner
        from hydra_plugins.tabflow_sweeper._sweep import TabflowOptunaSweeperImpl

        settings = {"sampler": sampler, "pruner": pruner, "study_namer": study_namer,
                    "custom_search_space": custom_search_space, "hooks": list(hooks or ())}
        try:
            check_settings(settings)  # type: ignore[arg-type]
        except HookError as e:
            exit_cleanly(f"Config error: {e}", e, code=2)
        extend = resolve_hook(settings, "custom_search_space")
        sampler = instantiate(
            sampler,
            _execution_whitelist_=("hydra_plugins.hydra_optuna_sweeper.*", "optuna.samplers.*"),
        )
        self.sweeper = TabflowOptunaSweeperImpl(
            sampler, direction, storage, study_name, n_trials, n_jobs, max_failure_rate,
            None, params, timeout, enqueue_defaults,
            [dict(e) for e in enqueue or ()], conditional_on,
            {str(k): dict(v) for k, v in (conditional_params or {}).items()},
            build_pruner(pruner), heartbeat,
        )
        # Upstream instantiates the dotted path itself; the admitted function is set instead.
        self.sweeper.custom_search_space_extender = extend

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        """Prepare the launcher (see ``Sweeper.setup``)."""
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function,
                           config=config)

    def sweep(self, arguments: list[str]) -> None:
        """Run or resume the study (see ``TabflowOptunaSweeperImpl.sweep``).

        Raises:
            SystemExit: With one clean message when too many trials failed (that comes
                from the config or the data, not from a bug), or when a signal or a lost
                worker cut the sweep short (``contract.Interrupted``, resumable): no
                traceback unless ``HYDRA_FULL_ERROR=1`` asks for it, as for Hydra's errors.
        """
        from hydra_plugins.tabflow_sweeper._sweep import SweepAbortedError, SweepInterruptedError
        from hydra_plugins.tabflow_sweeper.locks import LockBusyError

        try:
            self.sweeper.sweep(arguments)
        except SweepAbortedError as e:
            exit_cleanly(f"Sweep aborted: {e}", e)
        except SweepInterruptedError as e:
            exit_cleanly(str(e), e, code=e.code, interrupted=True)
        except LockBusyError as e:  # another sweep process of the study, or a stale lock
            exit_cleanly(f"Sweep stopped: {e}", e)
        except Exception as e:
            full = disk_full(e)
            if full is None:
                raise
            study = self.sweeper.current_study
            exit_cleanly(
                f"Sweep stopped: the disk is full ({full[:160]}). "
                "Nothing recorded is lost; free some space and re-run the same command to "
                + (f"resume study {study}" if study else "start again"),
                e, code=1, interrupted=True)
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM between trials
            study = self.sweeper.current_study
            exit_cleanly(
                f"Sweep interrupted ({e or 'Ctrl-C'}) between trials; trials it had started "
                f"are retried. Re-run the same command to "
                + (f"resume study {study}" if study else "start again"),
                e, code=interrupt_code(e), interrupted=True)


@dataclass
class HeartbeatConf:
    """How sweep processes sharing a stored study notice a dead one (``_heartbeat``)."""

    interval: int | None = 20  # seconds between beats; null turns heartbeats off
    grace_period: int = 60  # seconds without a beat after which a trial is dead
    max_retry: int | None = 1  # runs of a dead worker's trial again; null: no limit


@dataclass
class TabflowOptunaSweeperConf(OptunaSweeperConf):
    """Upstream sweeper settings, plus resume, budget, warm start and conditional spaces."""

    _target_: str = "hydra_plugins.tabflow_sweeper.tabflow_sweeper.TabflowOptunaSweeper"
    # Trials per batch; null: the launcher's parallelism (1 for the basic launcher).
    n_jobs: Any = None
    # Upstream stops a sweep at the first failed trial; here a sweep goes on while at most
    # this fraction of its trials fail (checked once 5 trials have finished).
    max_failure_rate: float = 0.5
    # Wall-clock budget in seconds: no new trial starts after it (running ones finish).
    timeout: float | None = None
    # Warm start: the first trial uses the config's own values of the searched keys.
    enqueue_defaults: bool = False
    # Warm start: parameter sets to try first, e.g. [{model.n_estimators: 100}].
    enqueue: list[dict[str, Any]] = field(default_factory=list)
    # Conditional search space: one space per value of this parameter (e.g. per family).
    conditional_on: str = "model"
    conditional_params: dict[str, dict[str, str]] = field(default_factory=dict)
    # Stop hopeless trials early: an optuna.pruners.* config (hydra/sweeper/pruner=...).
    pruner: Any = None
    # With a storage: every running trial beats; a trial silent for grace_period (its
    # process frozen, killed, its host lost) fails and is retried up to max_retry times.
    heartbeat: HeartbeatConf = field(default_factory=lambda: HeartbeatConf())
    # Without study_name: the dotted path of a function of the composed config that names
    # the study (an app's own identity); null: <job name>-<hash of config and space>.
    study_namer: str | None = None
    # The functions study_namer and custom_search_space may name (dotted paths); any other
    # path is refused before the sweep starts (docs/security.md).
    hooks: list[str] = field(default_factory=list)


ConfigStore.instance().store(
    group="hydra/sweeper", name="tabflow_optuna", node=TabflowOptunaSweeperConf,
    provider="tabflow",
)

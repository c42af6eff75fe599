"""``tabflow monitor --retrain``: sweep the monitored version's configuration on new data.

The new sweep is the version's own: the command-line overrides of the sweep that
registered it (experiment, model, preprocessing, search space, trial count), with the
dataset replaced by a table written to ``data/raw/`` and the version's best parameters
queued as the first trial (a warm start). What it trains on:

* after data drift alone, the version's data and the new batch together: the old labels
  still hold, and the model must learn the region the data moved into without forgetting
  the rest (a small batch alone would also make a poor train / validation / test split);
* after a performance drop, the new batch alone when it has ``min_new_rows`` rows: the
  relation between features and outcome has changed, so the old labels may now mislead;
  with fewer rows, both together (and it says so).

The new version is registered at ``staging`` as every sweep's is; promotion stays a
separate, gated step (``tabflow promote``).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from tabflow.config import REDACTED
from tabflow.contract import (
    CODE_ROOT,
    TAG_OVERRIDES,
    TAG_STORAGE,
    TAG_STUDY,
    project_root,
)
from tabflow.interrupts import deferred_interrupts
from tabflow.monitoring.batch import MonitorError
from tabflow.monitoring.monitor import DEGRADED, OK, Check
from tabflow.monitoring.profile import Profile
from tabflow.monitoring.settings import RetrainData
from tabflow.tracking.records import log_run_data
from tabflow.tracking.registry import TAG_SWEEP_PARENT, aliases, model_version
from tabflow.tracking.store import Store, best_config

# Overrides of the original sweep that the retraining sweep sets itself.
REPLACED = ("dataset", "registry.", "hydra.sweeper.enqueue", "hydra.sweeper.study_name")


def choose_data(check: Check, setting: str, min_new_rows: int) -> tuple[RetrainData, str]:
    """What to train on, and why (see the module's docstring)."""
    choice = RetrainData(setting)
    if choice is not RetrainData.auto:
        return choice, f"retrain data={choice.value}, as asked"
    degraded = check.verdict in (DEGRADED, f"drift+{DEGRADED}")
    if not degraded:
        return RetrainData.combined, ("data drift without a performance drop: the old labels "
                                      "still hold, so the old and new data together")
    if check.batch.rows >= min_new_rows:
        return RetrainData.new, (f"performance dropped: the old labels may no longer hold, so "
                                 f"the new batch alone ({check.batch.rows} rows >= "
                                 f"min_new_rows={min_new_rows})")
    return RetrainData.combined, (f"performance dropped, but the batch has {check.batch.rows} "
                                  f"rows < min_new_rows={min_new_rows}, too few alone: the "
                                  f"old and new data together")


def _quote(text: str) -> str:
    """A Hydra override value quoted (column names may hold spaces, commas, brackets)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _key(name: str) -> str:
    """A dict key in a Hydra override: conditional parameters hold colons (``rf:model.x``)."""
    return re.sub(r"([\\:=,\s\[\]{}()])", r"\\\1", name)


def _value(value: Any) -> str:
    if isinstance(value, str):
        return _quote(value)
    return "null" if value is None else str(value).lower() if isinstance(value, bool) \
        else repr(value)


def warm_start(tags: dict[str, str]) -> dict[str, Any]:
    """The best trial's parameters, read from the sweep's Optuna study (empty if gone)."""
    import optuna

    from hydra_plugins.tabflow_sweeper.stores import optuna_storage

    study, storage, trial = tags.get(TAG_STUDY), tags.get(TAG_STORAGE), tags.get("best.trial")
    if not (study and storage and trial):
        return {}
    try:
        loaded = optuna.load_study(study_name=study, storage=optuna_storage(storage))
        return dict(loaded.trials[int(trial)].params)
    except Exception as e:  # the study's storage was moved or deleted
        print(f"  no warm start: the sweep's study {study} can't be read "
              f"({type(e).__name__}: {str(e).splitlines()[0][:120]})")
        return {}


def _table(check: Check, profile: Profile, cfg: DictConfig, choice: RetrainData
           ) -> pd.DataFrame:
    assert check.batch.y is not None
    target = profile.target["name"]
    new = check.batch.X.assign(**{target: check.batch.y.to_numpy()})
    if choice is RetrainData.new:
        return new
    from tabflow.splits import load_and_split

    ds, _ = load_and_split(cfg)
    old = ds.X.assign(**{target: ds.y.to_numpy()})
    return pd.concat([old, new[old.columns]], ignore_index=True)


def stored_overrides(tags: dict[str, str], parent: str) -> list[str]:
    """The registering sweep's overrides that the retraining sweep replays, once checked.

    They come from the tracking store, so they are data (``tabflow.replay``): one that
    changes what code runs is refused unless the config files say the same.

    Raises:
        MonitorError: Naming the run, the tag and the override.
    """
    from tabflow.replay import ReplayError, check_replayed

    try:
        original = shlex.split(tags.get(TAG_OVERRIDES, ""))
    except ValueError as e:
        raise MonitorError(f"run {parent}, tag {TAG_OVERRIDES}: can't be read ({e})") from e
    kept = [o for o in original if not o.lstrip("+~").startswith(REPLACED)]
    try:
        return check_replayed(kept, f"run {parent}, tag {TAG_OVERRIDES}")
    except ReplayError as e:
        raise MonitorError(str(e)) from e


def registering_sweep(store: Store, name: str, version: str) -> tuple[str, dict[str, str]]:
    """The parent run that registered a version, and its tags.

    Raises:
        MonitorError: If no tabflow sweep registered it.
    """
    parent = model_version(store, name, version).tags.get(TAG_SWEEP_PARENT)
    if not parent:
        raise MonitorError(f"{name} version {version} was not registered by a "
                           f"tabflow sweep: its configuration is unknown, so it can't be "
                           f"retrained from here")
    return parent, dict(store.client.get_run(parent).data.tags)


def command(check: Check, profile: Profile, tags: dict[str, str], path: str,
            best_cfg: DictConfig, keep: list[str], extra: list[str], parent: str = ""
            ) -> list[str]:
    """The overrides of the retraining sweep.

    ``keep`` names features whose values are all unique in the new table, which the
    dataset checks would otherwise leave out as row identifiers: they were features.
    """
    original = shlex.split(tags.get(TAG_OVERRIDES, ""))
    secret = [o for o in original if REDACTED in o]
    if secret:
        raise MonitorError(f"the sweep that registered {check.name} version {check.version} "
                           f"had secret overrides ({secret}), which were not recorded; run "
                           f"the retraining sweep yourself with dataset.path={path}")
    kept = stored_overrides(tags, parent)
    params = warm_start(tags)
    overrides = [
        *kept, "dataset=csv", f"dataset.path={_quote(path)}",
        f"dataset.target={_quote(profile.target['name'])}",
        f"dataset.task={profile.target['task']}", f"dataset.name={_quote(best_cfg.dataset.name)}",
        *([f"dataset.keep=[{','.join(_quote(c) for c in keep)}]"] if keep else []),
        f"registry.model_name={_quote(check.name)}",
        "registry.alias=staging", "registry.auto_promote=false",
    ]
    if params:
        queued = ",".join(f"{_key(k)}:{_value(v)}" for k, v in params.items())
        overrides.append(f"hydra.sweeper.enqueue=[{{{queued}}}]")
    return [*overrides, *extra]


def retrain(store: Store, check: Check, profile: Profile, cfg: DictConfig,
            data: str | None, extra: list[str]) -> int:
    """Run the retraining sweep after drift or degradation; return its exit status."""
    if check.verdict == OK:
        print("No drift and no degradation: nothing to retrain")
        return 0
    parent, tags = registering_sweep(store, check.name, check.version)
    stored_overrides(tags, parent)  # refused before the new table is written
    best_cfg = best_config(store, parent)
    choice, why = choose_data(check, data or str(cfg.data), int(cfg.min_new_rows))
    table = _table(check, profile, best_cfg, choice)
    path = project_root() / "data" / "raw" / \
        f"{check.name}-retrain-{time.strftime('%Y%m%d-%H%M%S')}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path, index=False)
    from tabflow.data import id_like_columns

    keep = id_like_columns(table[list(profile.features)], [])
    overrides = command(check, profile, tags, str(path), best_cfg, keep, extra, parent)
    before = aliases(store, check.name) or {}
    print(f"Retraining {check.name} on {choice.value} data ({len(table)} rows, {path}): "
          f"{why}.\n  python src/train.py -m {' '.join(overrides)}", flush=True)
    # Its own session: Ctrl-C at the terminal reaches this process only, which passes one
    # signal on and waits while the sweep closes its runs and trials (as a sweep does).
    sweep = subprocess.Popen([sys.executable, str(CODE_ROOT / "src" / "train.py"), "-m",
                              *overrides], cwd=project_root(), start_new_session=True,
                             env={**os.environ, "MLFLOW_TRACKING_URI": store.uri})
    interrupted: KeyboardInterrupt | None = None
    try:
        status = sweep.wait()
    except KeyboardInterrupt as e:
        interrupted = e
        sweep.send_signal(getattr(e, "signum", signal.SIGINT))
        try:
            with deferred_interrupts():
                status = sweep.wait()
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: the sweep already has the first and is closing
    after = (aliases(store, check.name) or {}).get("staging")
    retrained = after if after and after != before.get("staging") else ""
    log_run_data(store, check.run_id, tags={"monitoring.retrain.data": choice.value,
                                            "monitoring.retrain.path": str(path),
                                            "monitoring.retrain.version": retrained,
                                            "monitoring.retrain.status": str(status)})
    if interrupted is not None:
        raise interrupted
    if status == 0 and retrained:
        print(f"Retrained {check.name}: version {retrained} is at @staging; compare it with "
              f"production and promote it with: tabflow promote {check.name}")
    elif status == 0:
        print(f"The retraining sweep registered no new version of {check.name}")
    return status

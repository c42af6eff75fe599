"""Imports stay acyclic and MLflow stays inside tabflow.tracking (.ci/check_imports.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

CHECK = REPO / ".ci" / "check_imports.py"


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECK), *args], capture_output=True, text=True,
                          timeout=60)


def test_the_project_has_no_import_cycles_and_mlflow_only_in_tracking():
    proc = run_check()
    assert proc.returncode == 0, proc.stdout
    assert "no cycles" in proc.stdout


def write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_cycle_through_a_function_import_and_a_stray_mlflow_import_are_named(tmp_path):
    write(tmp_path, "tabflow/__init__.py", "")
    write(tmp_path, "tabflow/a.py", "from tabflow.b import g\n")
    write(tmp_path, "tabflow/b.py", "def g():\n    from tabflow import a\n")  # hidden in a def
    write(tmp_path, "tabflow/c.py", "import mlflow.sklearn\n")
    write(tmp_path, "tabflow/tracking/__init__.py", "")
    write(tmp_path, "tabflow/tracking/store.py", "import mlflow\nfrom . import records\n")
    write(tmp_path, "tabflow/tracking/records.py", "from tabflow.tracking import store\n")
    proc = run_check(str(tmp_path))
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert "import cycle: tabflow.a <-> tabflow.b" in lines
    assert "import cycle: tabflow.tracking.records <-> tabflow.tracking.store" in lines
    assert any(line.startswith("tabflow.c imports mlflow") for line in lines)
    assert not any("tabflow.tracking.store imports" in line for line in lines)  # allowed there


def test_a_plugins_private_module_is_imported_only_inside_the_plugin(tmp_path):
    plugin = "hydra_plugins/tabflow_sweeper"
    write(tmp_path, "tabflow/__init__.py", "")
    write(tmp_path, "tabflow/a.py", "from hydra_plugins.tabflow_sweeper._sweep import loop\n")
    write(tmp_path, "tabflow/b.py",
          "def f():\n    from hydra_plugins.tabflow_sweeper import _study\n")
    write(tmp_path, "tabflow/c.py", "from hydra_plugins.tabflow_sweeper.locks import hold\n"
                                    "from hydra_plugins.tabflow_sweeper import search_space\n")
    write(tmp_path, f"{plugin}/__init__.py",
          "from hydra_plugins.tabflow_sweeper._sweep import x\n")
    write(tmp_path, f"{plugin}/_sweep.py", "from hydra_plugins.tabflow_sweeper import _study\n")
    write(tmp_path, f"{plugin}/_study.py", "")
    write(tmp_path, f"{plugin}/locks.py", "")
    proc = run_check(str(tmp_path))
    assert proc.returncode == 1
    flagged = sorted(line.split()[0] for line in proc.stdout.splitlines())
    assert flagged == ["tabflow.a", "tabflow.b"], proc.stdout  # public modules, and the plugin
    assert "hydra_plugins.tabflow_sweeper._sweep, a private module" in proc.stdout


def test_tracking_imports_nothing_above_it(tmp_path):
    write(tmp_path, "tabflow/__init__.py", "")
    write(tmp_path, "tabflow/contract.py", "")
    write(tmp_path, "tabflow/sweep_end.py", "from tabflow.tracking import store\n")
    write(tmp_path, "tabflow/tracking/__init__.py", "")
    write(tmp_path, "tabflow/tracking/store.py", "from tabflow.contract import HOST\n")
    write(tmp_path, "tabflow/tracking/parent.py",
          "def f():\n    from tabflow.sweep_end import finish\n")  # hidden in a def
    proc = run_check(str(tmp_path))
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "tabflow.tracking.parent imports tabflow.sweep_end"], lines  # contract is below it


# Imports every module of tabflow and its plugins in a fresh process, then prints what
# importing changed in the process: resolvers, logging filters, connection listeners.
IMPORT_ALL = """
import importlib, json, logging, pkgutil
import sqlalchemy
from omegaconf.basecontainer import BaseContainer

def listeners():
    return len(sqlalchemy.create_engine("sqlite://").pool.dispatch.connect)

def filters():
    return {name: len(logger.filters) for name, logger in logging.root.manager.loggerDict.items()
            if isinstance(logger, logging.Logger) and logger.filters}

before = (set(BaseContainer._resolvers), filters(), listeners())
import tabflow, hydra_plugins.tabflow_sweeper, hydra_plugins.tabflow_launcher
modules = []
for package in (tabflow, hydra_plugins.tabflow_sweeper, hydra_plugins.tabflow_launcher):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
            modules.append(info.name)
print(json.dumps({"modules": len(modules),
                  "resolvers": sorted(set(BaseContainer._resolvers) - before[0]),
                  "filters": {k: v for k, v in filters().items() if before[1].get(k) != v},
                  "listeners": listeners() - before[2]}))
"""


def test_importing_any_module_changes_nothing_in_the_process():
    # Resolvers, logging filters and SQLAlchemy listeners are set up when tabflow opens a
    # store or composes a config, so a user's own code that imports tabflow keeps its own.
    proc = subprocess.run([sys.executable, "-c", IMPORT_ALL], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    changed = json.loads(proc.stdout.splitlines()[-1])
    assert changed["modules"] > 40
    assert changed == {"modules": changed["modules"], "resolvers": [], "filters": {},
                       "listeners": 0}

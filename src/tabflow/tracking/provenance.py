"""Where a run's code and environment came from: git commit and package versions."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from importlib import metadata
from pathlib import Path

# Tags of the parent run that every trial run shares (copied by `tabflow upload`).
PROVENANCE_PREFIXES = ("mlflow.source.", "git.", "env.")


def git_info(root: Path) -> dict[str, str]:
    """Return the commit of the code and whether the work tree has uncommitted changes."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"mlflow.source.git.commit": commit, "git.dirty": str(bool(dirty)).lower()}


def environment_tags() -> dict[str, str]:
    """Return the Python version and the versions of the packages that shape results."""
    tags = {"env.python": sys.version.split()[0]}
    for pkg in ("scikit-learn", "numpy", "pandas", "hydra-core", "hydra-optuna-sweeper",
                "optuna", "mlflow"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            tags[f"env.{pkg}"] = metadata.version(pkg)
    return tags


def provenance_tags(code_root: Path) -> dict[str, str]:
    """Return the tags recorded with every run: the code's commit and the environment."""
    return {**git_info(code_root), **environment_tags()}

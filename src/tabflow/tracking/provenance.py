"""Where a run's code and environment came from: git commit and package versions."""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import sys
from importlib import metadata
from pathlib import Path

# Tags of the parent run that every trial run shares (copied by `tabflow upload`).
PROVENANCE_PREFIXES = ("mlflow.source.", "git.", "env.")


def git_info(root: Path) -> dict[str, str]:
    """Return the code's commit, whether tracked files differ from it, and the diff's hash.

    Only tracked files count (``git diff HEAD``): what the project writes (stores, run dirs,
    data, reports) is ignored, and an untracked scratch file changes no code that ran.
    Two dirty runs with different edits get different ``git.diff_sha256`` tags.
    """
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              timeout=10, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        diff = git("diff", "HEAD", "--binary")
    except (OSError, subprocess.SubprocessError):
        return {}
    tags = {"mlflow.source.git.commit": commit, "git.dirty": str(bool(diff)).lower()}
    if diff:
        tags["git.diff_sha256"] = hashlib.sha256(diff.encode()).hexdigest()
    return tags


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

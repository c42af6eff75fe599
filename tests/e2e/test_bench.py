"""A smoke run of the overhead harness: every contender runs and the table holds targets."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.mark.slow
def test_overhead_harness_runs_every_contender(tmp_path):
    out = tmp_path / "overhead.json"
    # Another checkout to compare with (--baseline): a copy of this one's code and conf/.
    baseline = tmp_path / "baseline"
    for part in ("src", "conf"):
        shutil.copytree(REPO / part, baseline / part,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "overhead.py"), "--trials", "2", "--repeats", "1",
         "--workloads", "logreg", "--startup-repeats", "1", "--growth", "0",
         "--store-runs", "60", "--baseline", str(baseline), "--out", str(out)],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["workloads"]) == {"logreg"}
    for contenders in result["workloads"].values():
        assert set(contenders) == {"raw", "raw-mlflow", "search", "hydra-optuna", "tabflow",
                                   "tabflow-parallel", "tabflow-baseline"}
        for name, r in contenders.items():
            assert r["trials"] == 2, name
            if name != "hydra-optuna":  # stock Hydra keeps no scores we read
                assert 0.5 < r["best_val"] <= 1.0 and 0.5 < r["test"] <= 1.0, (name, r)
            assert r["wall_s"] > r["fit_s"] > 0 and r["peak_rss_mb"] > 50, (name, r)
            # Each contender but the search also ran 1 trial: the overhead is a slope.
            assert (r["overhead_per_trial_s"] is None) == (name == "search"), name
        assert contenders["tabflow"]["registration_s"] > 0
    targets = [c[0] for c in result["checks"]]
    assert any("raw-mlflow wall" in t for t in targets)
    assert any("the baseline's" in t for t in targets)
    assert any("--help" in t for t in targets) and any("first trial" in t for t in targets)
    assert result["store"]["runs"] == 60 and result["store"]["lookup_s"] > 0
    table = out.with_suffix(".txt").read_text()
    assert "tabflow-parallel" in table and "verdict" in table
    assert all(line.rstrip().endswith(("met", "MISSED", "-"))
               for line in table.split("verdict", 1)[1].strip().splitlines())

"""The sweep's end and the registry under real kills, signals and concurrent commands.

Each case produces the fault for real: SIGKILL at each step of registration (the sweep
kills itself at a named step, ``TABFLOW_KILL_AT``), SIGTERM at random moments of a
sweep, and lifecycle commands started side by side. After each, what a user would check:
one version of the sweep at ``staging``, a FINISHED parent, no RUNNING runs, stages and
lifecycle tags that agree with the aliases.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tabflow.sweep_end import KILL_POINTS
from tests.helpers import (
    TRAIN,
    assert_ok,
    client_for,
    project_env,
    run_tabflow,
    run_train,
    runs_of,
)

pytestmark = pytest.mark.slow
MODEL = "breast_cancer"
SWEEP = ("-m", "model=logreg", "sweep=narrow", "hydra.sweeper.n_trials=3",
         "evaluation.figures=false")


def sweep_state(root: Path) -> tuple[object, list[object], object]:
    """The sweep's parent, its registered versions and the client."""
    client, runs = runs_of(root)
    parents = [r for r in runs if r.data.tags.get("tabflow.role") == "sweep"]
    assert len(parents) == 1
    versions = [client.get_model_version(MODEL, v.version)  # a search leaves out aliases
                for v in client.search_model_versions(f"name = '{MODEL}'")
                if v.tags.get("sweep.parent_run_id") == parents[0].info.run_id]
    return parents[0], versions, client


def assert_finished_once(root: Path) -> None:
    parent, versions, client = sweep_state(root)
    assert parent.info.status == "FINISHED"
    staged = [v for v in versions if "staging" in v.aliases]
    assert len(staged) == 1, [(v.version, v.aliases) for v in versions]
    assert staged[0].tags["best.run_id"] == parent.data.tags["best.run_id"]
    assert parent.data.tags["registry.version"] == str(staged[0].version)
    others = [v for v in versions if v is not staged[0]]
    assert all(not v.aliases and v.current_stage == "Archived" for v in others)
    _, runs = runs_of(root)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    models = client.search_logged_models([parent.info.experiment_id])
    assert not [m for m in models if str(m.status) == "PENDING"]
    registered = {v.source for v in versions}
    # The best trial's run holds a copy of the registered model (the guide's runs:/ URI).
    orphans = [m for m in models if str(m.status) == "READY" and m.model_uri not in registered
               and f"models:/{m.tags.get('tabflow.copy_of')}" not in registered]
    assert not orphans, "a logged model that no version uses was left behind"
    assert not client.search_registered_models("name LIKE '%~lock'")  # no lock left


@pytest.mark.parametrize("step", KILL_POINTS)
def test_a_sweep_killed_during_its_end_is_finished_by_a_rerun(tmp_path, step):
    killed = run_train(tmp_path, *SWEEP, env={"TABFLOW_KILL_AT": step})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    again = run_train(tmp_path, *SWEEP)
    assert_ok(again)
    output = again.stdout + again.stderr
    assert "is registering the best model" not in output  # the dead holder's lock was broken
    if step == "version_created":
        assert "Adopting breast_cancer version 1" in output
    if step in ("model_logged", "version_created"):
        assert "Adopting logged model" in output
    assert_finished_once(tmp_path)


def test_a_model_left_pending_by_a_killed_registration_is_marked_failed(tmp_path):
    killed = run_train(tmp_path, *SWEEP, env={"TABFLOW_KILL_AT": "refit"})
    assert killed.returncode == -signal.SIGKILL
    parent, _, client = sweep_state(tmp_path)
    # What a kill inside model logging leaves: a logged model that never became READY.
    pending = client.create_logged_model(parent.info.experiment_id, name="model",
                                         source_run_id=parent.info.run_id)
    assert str(client.get_logged_model(pending.model_id).status) == "PENDING"
    again = run_train(tmp_path, *SWEEP)
    assert_ok(again)
    assert f"as FAILED: {pending.model_id}" in again.stdout
    assert str(client.get_logged_model(pending.model_id).status) == "FAILED"
    assert_finished_once(tmp_path)


# ------------------------------------------------------------------ lifecycle commands
def registry_invariants(root: Path) -> dict[str, str]:
    """Check the stage mirror and lifecycle tags against the aliases; return the aliases."""
    client = client_for(root)
    versions = [client.get_model_version(MODEL, v.version)
                for v in client.search_model_versions(f"name = '{MODEL}'")]
    aliases = {a: str(v.version) for v in versions for a in v.aliases}
    production = {str(v.version) for v in versions if v.current_stage == "Production"}
    staging = {str(v.version) for v in versions if v.current_stage == "Staging"}
    tagged = {str(v.version) for v in versions if v.tags.get("lifecycle") == "production"}
    expected = {aliases["production"]} if "production" in aliases else set()
    assert production == expected, (aliases, production)
    assert staging <= {aliases.get("staging")}, (aliases, staging)
    assert tagged == expected, (aliases, tagged)
    return aliases


def start_tabflow(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tabflow", *args], cwd=root,
                            env=project_env(root), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def claimed_production(command: list[str], output: str) -> str | None:
    """The version a command's output says is in production now (None: it says nothing)."""
    if command[0] == "rollback":
        if "rolled back from version" in output:
            return output.rsplit("to version ", 1)[1].split()[0]
        return None
    if "PROMOTED to production" in output:
        return output.split("staging     version ", 1)[1].split(":")[0]
    if "production  version " in output:
        return output.split("production  version ", 1)[1].split(":")[0]
    return None


def test_lifecycle_commands_never_interleave(tmp_path):
    for seed in ("42", "7", "11"):  # three studies: versions 1, 2, 3 at @staging in turn
        assert_ok(run_train(tmp_path, *SWEEP, f"seed={seed}"))
        assert_ok(run_tabflow(tmp_path, "promote", MODEL, "--force"))
    assert_ok(run_train(tmp_path, *SWEEP, "seed=5"))  # version 4 at staging
    registry_invariants(tmp_path)
    commands = [["promote", MODEL], ["rollback", MODEL], ["promote", MODEL, "--force"]]
    rng = random.Random(0)
    waited = 0
    for _ in range(7):  # each round costs ~8 s of CI; 7 rounds meet 2+ times
        pair = [rng.choice(commands), rng.choice(commands)]
        procs = [start_tabflow(tmp_path, *command) for command in pair]
        outputs = [proc.communicate(timeout=300)[0] for proc in procs]
        for proc, out in zip(procs, outputs, strict=True):
            # 2: nothing to roll back to, said so; 3/4/5: a promotion's gate said no.
            assert proc.returncode in (0, 2, 3, 4, 5), out
            assert "Traceback" not in out, out
        aliases = registry_invariants(tmp_path)
        for command, out in zip(pair, outputs, strict=True):
            if "Waiting for another command" not in out:
                continue
            # It ran second, after the other's change: what it says is what the store holds.
            waited += 1
            said = claimed_production(command, out)
            if said is not None:
                assert aliases.get("production") == said, (pair, outputs)
    assert waited >= 2  # the commands did meet


# ---------------------------------------------------------------------------- signals
def test_sigterm_at_any_moment_ends_with_one_clean_line(tmp_path):
    base = ("-m", "model=logreg", "sweep=narrow", "hydra.sweeper.n_trials=6")
    (tmp_path / "timing").mkdir()
    start = time.monotonic()
    assert_ok(run_train(tmp_path / "timing", *base))
    duration = time.monotonic() - start
    rng = random.Random(16)
    interrupted = 0
    for case in range(3):
        root = tmp_path / f"case{case}"
        root.mkdir()
        proc = subprocess.Popen([sys.executable, str(TRAIN), *base], cwd=root,
                                env=project_env(root), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.3, duration))
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        if proc.returncode == 0:
            continue  # it had finished
        assert proc.returncode == 143, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        lines = [line for line in err.splitlines() if "interrupted (" in line]
        assert len(lines) == 1, err[-3000:]
        assert "Re-run the same command" in lines[0]
        interrupted += 1
        assert_ok(run_train(root, *base))  # and the re-run finishes the sweep
    assert interrupted >= 2  # the signals landed while the sweeps ran


def test_a_sweep_killed_while_writing_its_report_gets_it_from_the_rerun(tmp_path):
    """The version was registered, the report not: the re-run writes only what is missing."""
    reporting = (*SWEEP[:-1], "evaluation.figures=true")
    killed = run_train(tmp_path, *reporting, env={"TABFLOW_KILL_AT": "report"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    parent, _, client = sweep_state(tmp_path)
    assert "report.html" not in {a.path for a in client.list_artifacts(parent.info.run_id)}
    again = run_train(tmp_path, *reporting)
    assert_ok(again)
    assert "version 1 stays registered" in again.stdout
    assert "Writing the sweep report it is missing" in again.stdout
    parent, _, client = sweep_state(tmp_path)
    assert "report.html" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert_finished_once(tmp_path)

"""Bad input, odd values, secrets and several sweep processes: what users do on shared machines.

Each test produces the situation for real (a URL as data path, a 10,000-character value,
a token in an override, three sweep processes started at once) and checks what a user
would look at: the message, the exit status, the tracking store, the Optuna study.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tabflow.config import REDACTED
from tests.helpers import TRAIN, assert_ok, run_train, runs_of

pytestmark = pytest.mark.slow


def test_url_data_path_is_refused_before_any_work(project_root):
    args = ["dataset=csv", "dataset.path=https://example.com/data.csv", "dataset.target=y"]
    out = run_train(project_root, *args, fresh_store=True)
    assert out.returncode == 2
    assert "is a URL" in out.stderr and "data/raw/" in out.stderr
    assert "Traceback" not in out.stderr  # one clean message
    assert not (project_root / "mlflow.db").exists()  # refused before tracking started
    full = run_train(project_root, *args, env={"HYDRA_FULL_ERROR": "1"})
    assert full.returncode == 2 and "Traceback" in full.stderr and "is a URL" in full.stderr


def test_tracking_error_shows_a_traceback_only_on_request(project_root):
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}  # nothing listens on port 9
    out = run_train(project_root, env=env)
    assert out.returncode == 1 and "http://127.0.0.1:9" in out.stderr
    assert "Traceback" not in out.stderr
    full = run_train(project_root, env={**env, "HYDRA_FULL_ERROR": "1"})
    assert full.returncode == 1 and "Traceback" in full.stderr


def test_secrets_are_redacted_and_long_odd_values_tracked(project_root):
    long_value = "x" * 10_000
    out = run_train(project_root, "model=logreg", "+api_token=abc123supersecret",
                    "+db={password: hunter2, host: db.internal}", f"+notes={long_value}",
                    '+extra={a@b/c+d: 1, label: "ünïcødé ✓"}')
    assert_ok(out)
    client, (run,) = runs_of(project_root)
    params, tags = run.data.params, run.data.tags
    assert params["api_token"] == REDACTED and params["db.password"] == REDACTED
    assert params["db.host"] == "db.internal"
    assert "abc123supersecret" not in tags["hydra.overrides"]
    assert "api_token=" + REDACTED in tags["hydra.overrides"]
    assert params["extra.label"] == "ünïcødé ✓"
    assert params["extra.a_at_b/c_d"] == "1"  # MLflow's key alphabet: @ and + replaced
    assert len(params["notes"]) == 6000  # MLflow's limit on a param value...
    local = client.download_artifacts(run.info.run_id, "config.yaml", str(project_root))
    config = Path(local).read_text(encoding="utf-8")
    assert long_value in config  # ...the whole value is in the logged config
    assert "abc123supersecret" not in config and "hunter2" not in config
    overrides = client.download_artifacts(run.info.run_id, "overrides.yaml", str(project_root))
    assert "abc123supersecret" not in Path(overrides).read_text()


def test_concurrent_sweep_processes_share_the_study_on_one_machine(project_root):
    """Three processes started at once on fresh SQLite stores: no race, nothing twice."""
    cmd = [sys.executable, str(TRAIN), "-m", "model=logreg", "sweep=narrow",
           "hydra.sweeper.n_trials=15"]
    env = {**os.environ, "TABFLOW_ROOT": str(project_root), "PYTHONWARNINGS": "ignore"}
    procs = [subprocess.Popen(cmd, cwd=project_root, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, text in zip(procs, outputs, strict=True):
        assert p.returncode == 0, text[-3000:]
        assert "database is locked" not in text
    (name,) = optuna.get_all_study_names(f"sqlite:///{project_root}/optuna.db")
    trials = optuna.load_study(study_name=name,
                               storage=f"sqlite:///{project_root}/optuna.db").trials
    assert len(trials) == 15 and {t.state.name for t in trials} == {"COMPLETE"}
    with sqlite3.connect(project_root / "mlflow.db") as con:
        roles = con.execute("SELECT t.value, r.status, COUNT(*) FROM runs r JOIN tags t ON "
                            "t.run_uuid = r.run_uuid AND t.key = 'tabflow.role' "
                            "GROUP BY 1, 2").fetchall()
        trial_tags = [v for (v,) in con.execute(
            "SELECT value FROM tags WHERE key = 'optuna.trial'")]
        versions = con.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0]
    assert sorted(roles) == [("sweep", "FINISHED", 1), ("trial", "FINISHED", 15)]
    assert sorted(map(int, trial_tags)) == list(range(15))  # each trial tracked once
    assert versions == 1
    # Output dirs are named by trial number: no process overwrote another's.
    dirs = {p.parent.name for p in project_root.glob("multirun/*/*/*/metrics.json")}
    assert dirs == {str(i) for i in range(15)}


def test_four_joblib_workers_run_200_trials_on_fresh_sqlite_stores(project_root):
    """The issue's load case: 4 workers share one fresh SQLite tracking store and Optuna
    storage for 200 trials: no lock error, no migration race, every run tracked once."""
    out = run_train(project_root, "-m", "model=logreg", "sweep=narrow",
                    "hydra.sweeper.n_trials=200", "hydra/launcher=joblib",
                    "hydra.launcher.n_jobs=4", "evaluation.figures=false", timeout=1200,
                    fresh_store=True)
    assert_ok(out)
    assert "database is locked" not in out.stdout + out.stderr
    assert not list(project_root.glob("multirun/**/tracking_error.txt"))
    (name,) = optuna.get_all_study_names(f"sqlite:///{project_root}/optuna.db")
    trials = optuna.load_study(study_name=name,
                               storage=f"sqlite:///{project_root}/optuna.db").trials
    assert sorted(t.number for t in trials) == list(range(200))
    assert {t.state.name for t in trials} == {"COMPLETE"}
    with sqlite3.connect(project_root / "mlflow.db") as con:
        roles = con.execute("SELECT t.value, r.status, COUNT(*) FROM runs r JOIN tags t ON "
                            "t.run_uuid = r.run_uuid AND t.key = 'tabflow.role' "
                            "GROUP BY 1, 2").fetchall()
        run_of_trial = dict(con.execute(
            "SELECT value, run_uuid FROM tags WHERE key = 'optuna.trial'").fetchall())
        parents = {v for (v,) in con.execute(
            "SELECT DISTINCT value FROM tags WHERE key = 'mlflow.parentRunId'")}
        versions = con.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0]
    assert sorted(roles) == [("sweep", "FINISHED", 1), ("trial", "FINISHED", 200)]
    assert sorted(map(int, run_of_trial)) == list(range(200))  # none lost, none twice
    assert len(parents) == 1 and versions == 1
    # Lineage both ways: each Optuna trial names the MLflow run that tracked it.
    assert {str(t.number): t.user_attrs["mlflow_run_id"] for t in trials} == run_of_trial


def test_tracking_server_dying_mid_sweep_loses_nothing(tmp_path):
    """Stop the server after two trials: the sweep fits on, says how to upload, and
    `tabflow upload` plus a re-run leave every trial tracked and the best model registered."""
    from tests.helpers.services import free_port, start_server, stop_server, wait_http

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server_args = ["server", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
                   "--artifacts-destination", str(tmp_path / "artifacts"), "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    server = start_server(server_args, tmp_path, env, tmp_path / "server.log")
    wait_http(f"{url}/health", server)
    root = tmp_path / "project"
    root.mkdir()
    sweep = [sys.executable, str(TRAIN), "-m", "model=rf", "sweep=narrow",
             "hydra.sweeper.n_trials=8", "tracking=server", "evaluation.figures=false"]
    job_env = {**env, "TABFLOW_ROOT": str(root), "MLFLOW_TRACKING_URI": url,
               "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(sweep, cwd=root, env=job_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if "| 2/8 |" in line:
            stop_server(server)  # the server goes away mid-sweep
            break
    lines += proc.stdout.readlines()
    proc.wait(timeout=600)
    output = "".join(lines)
    assert proc.returncode == 1, output[-3000:]
    assert "Nothing computed is lost" in output and "tabflow --tracking-uri" in output
    assert output.count("| 8/8 |") == 1  # every trial ran
    sweep_dir = next(root.glob("multirun/*/*"))
    assert len(list(sweep_dir.glob("*/metrics.json"))) == 8

    server = start_server(server_args, tmp_path, env, tmp_path / "server2.log")
    try:
        wait_http(f"{url}/health", server)
        upload = subprocess.run([sys.executable, "-m", "tabflow", "--tracking-uri", url,
                                 "upload", str(sweep_dir)], cwd=root, env=job_env,
                                capture_output=True, text=True, timeout=300)
        assert upload.returncode == 0, upload.stderr
        assert "Uploaded 6 job(s)" in upload.stdout or "Uploaded 5 job(s)" in upload.stdout
        again = subprocess.run(sweep, cwd=root, env=job_env, capture_output=True, text=True,
                               timeout=600)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert "Registered breast_cancer version 1" in again.stdout
        from mlflow import MlflowClient

        client = MlflowClient(url)
        experiment = client.get_experiment_by_name("breast_cancer")
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        finished = [r for r in runs if r.data.tags.get("tabflow.role") == "trial"
                    and r.info.status == "FINISHED"]
        assert sorted(int(r.data.tags["optuna.trial"]) for r in finished) == list(range(8))
        assert len([r for r in runs if r.data.tags.get("tabflow.role") == "sweep"]) == 1
    finally:
        stop_server(server)


@pytest.mark.parametrize("store", ["mlflow.db", "optuna.db"])
@pytest.mark.parametrize("damage", ["corrupt", "foreign", "damaged"])
def test_corrupt_or_foreign_store_is_named_and_left_untouched(project_root, store, damage):
    path = project_root / store
    if damage == "corrupt":
        path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 64)
    elif damage == "damaged":  # a real store, garbage over pages in its middle
        marker = "experiments" if store == "mlflow.db" else "studies"
        with sqlite3.connect(path) as con:
            con.execute(f"CREATE TABLE {marker} (id INTEGER PRIMARY KEY, name TEXT)")
            con.execute(f"CREATE INDEX by_name ON {marker} (name)")
            con.executemany(f"INSERT INTO {marker} (name) VALUES (?)",
                            [(f"{i:05d}" + "x" * 80,) for i in range(3000)])
        data = bytearray(path.read_bytes())
        data[4096 * 20:4096 * 22] = b"\x07" * 8192
        path.write_bytes(bytes(data))
    else:
        with sqlite3.connect(path) as con:
            con.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
            con.execute("INSERT INTO customers VALUES (1, 'Ada')")
    before = path.read_bytes()
    out = run_train(project_root, "-m", "model=logreg", "sweep=narrow",
                    "hydra.sweeper.n_trials=2")
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"Store error: {path}" in out.stderr and "left untouched" in out.stderr
    if damage == "damaged":
        assert "is damaged" in out.stderr and ".recover" in out.stderr
    assert "Traceback" not in out.stderr
    assert path.read_bytes() == before  # not overwritten, not migrated
    assert not list(project_root.glob("multirun/*/*/0"))  # no trial ran


def test_basic_auth_server_refuses_anonymous_requests(tmp_path):
    """`tabflow server --basic-auth`: no credentials, no access; clients log in from env."""
    import urllib.error
    import urllib.request

    from tests.helpers.services import free_port, start_server, stop_server, wait_http

    (tmp_path / "basic_auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path}/auth.db\n"
        "admin_username = admin\nadmin_password = s3cret-admin-pw\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    assert subprocess.run([sys.executable, "-m", "tabflow", "server", "--basic-auth"],
                          env=env, capture_output=True, text=True,
                          timeout=60).returncode == 2  # refuses to start without a secret key
    env.update({"MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "basic_auth.ini"),
                "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only-key"})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(["server", "--basic-auth", "--backend-store-uri",
                           f"sqlite:///{tmp_path}/mlflow.db", "--port", str(port)],
                          tmp_path, env, tmp_path / "server.log")
    try:
        wait_http(f"{url}/health", server)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?max_results=1",
                                   timeout=10)
        assert refused.value.code == 401
        client_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        anonymous = subprocess.run([sys.executable, "-m", "tabflow", "--tracking-uri", url,
                                    "experiments"], env=client_env, capture_output=True,
                                   text=True, timeout=120)
        assert anonymous.returncode == 1 and "Traceback" not in anonymous.stderr
        assert url in anonymous.stderr
        client_env.update({"MLFLOW_TRACKING_USERNAME": "admin",
                           "MLFLOW_TRACKING_PASSWORD": "s3cret-admin-pw"})
        admin = subprocess.run([sys.executable, "-m", "tabflow", "--tracking-uri", url,
                                "experiments"], env=client_env, capture_output=True,
                               text=True, timeout=120)
        assert admin.returncode == 0, admin.stderr
    finally:
        stop_server(server)


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return kids


def _mid_trial(root: Path) -> bool:
    """Whether a job of a running trial has started (its process noted) and not finished."""
    try:
        with sqlite3.connect(root / "optuna.db") as con:
            running = [n for (n,) in con.execute(
                "SELECT number FROM trials WHERE state = 'RUNNING'")]
    except sqlite3.OperationalError:  # the storage is being created
        return False
    return any(any(root.glob(f"multirun/*/*/{n}/process.json"))
               and not any(root.glob(f"multirun/*/*/{n}/metrics.json")) for n in running)


@pytest.mark.parametrize("launcher", [("hydra/launcher=joblib",), ()],
                         ids=["joblib", "tabflow-warm-workers"])
def test_killed_joblib_worker_is_reported_and_reconciled(project_root, launcher):
    """SIGKILL a worker mid-trial (as the OOM killer would): the sweep names the trials
    it lost, and a re-run closes their runs and completes the study."""
    import signal
    import time

    # Trials of several seconds (20,000 rows), so that the kill lands mid-trial.
    cmd = [sys.executable, str(TRAIN), "-m", "dataset=synthetic",
           "dataset.synthetic.n_rows=20000", "model=rf", "sweep=narrow",
           "hydra.sweeper.n_trials=8", *launcher, "hydra.launcher.n_jobs=2"]
    env = {**os.environ, "TABFLOW_ROOT": str(project_root), "PYTHONWARNINGS": "ignore"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(cmd, cwd=project_root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "| 2/8 |" in line:
            break
    # Kill while a job of the next batch runs (a fixed wait raced the ~2 s jobs: loky
    # silently replaces workers killed between batches).
    deadline = time.monotonic() + 120
    while not _mid_trial(project_root):
        assert time.monotonic() < deadline and proc.poll() is None, "no trial ran"
        time.sleep(0.05)
    cmdlines = {p: Path(f"/proc/{p}/cmdline").read_bytes() for p in _children(proc.pid)}
    workers = [p for p, c in cmdlines.items() if b"loky" in c and b"resource_tracker" not in c]
    assert workers, "no joblib worker found"
    for worker in workers:  # both: whichever runs a trial dies with it
        os.kill(worker, signal.SIGKILL)
    lines += proc.stdout.readlines()
    proc.wait(timeout=600)
    output = "".join(lines)
    assert proc.returncode != 0, output[-3000:]
    assert "Sweep interrupted" in output and "will be retried" in output

    again = subprocess.run(cmd, cwd=project_root, env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    (name,) = optuna.get_all_study_names(f"sqlite:///{project_root}/optuna.db")
    trials = optuna.load_study(study_name=name,
                               storage=f"sqlite:///{project_root}/optuna.db").trials
    assert sum(t.state.name == "COMPLETE" for t in trials) == 8
    assert not [t for t in trials if t.state.name == "RUNNING"]
    with sqlite3.connect(project_root / "mlflow.db") as con:
        statuses = dict(con.execute(
            "SELECT r.status, COUNT(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "AND t.key = 'tabflow.role' AND t.value = 'trial' GROUP BY 1").fetchall())
        versions = con.execute("SELECT COUNT(*) FROM model_versions").fetchone()[0]
    assert statuses.get("FINISHED") == 8 and "RUNNING" not in statuses
    assert versions == 1


LEAKY_APP = '''
import mlflow
import hydra
from hydra.core.hydra_config import HydraConfig

from tabflow.config import register_configs
from tabflow.job import objective_value, run_job

register_configs()


@hydra.main(config_path={conf!r}, config_name="train")
def main(cfg):
    """train.py's job, plus user code that opens an MLflow run and never ends it."""
    metrics = run_job(cfg, HydraConfig.get().runtime.output_dir)
    trial = cfg.optuna_trial
    if trial < 2:  # the first job of each of the two workers
        mlflow.start_run(run_name=f"leaked-{{trial}}")
        mlflow.log_metric("leaked_metric", 1.0)
        if trial == 1:
            raise RuntimeError("crashed with its MLflow run open")
    return objective_value(metrics, cfg.objective.metric)


main()
'''


def test_run_left_open_in_a_reused_worker_never_receives_another_jobs_data(project_root):
    """Job code leaves an MLflow run active in a joblib worker (one job then crashes); the
    workers run the later trials, each into its own run, and the leaked runs end FAILED."""
    import mlflow

    from tests.helpers import CONF

    app = project_root / "leaky_app.py"
    app.write_text(LEAKY_APP.format(conf=str(CONF)))
    env = {**os.environ, "TABFLOW_ROOT": str(project_root), "PYTHONWARNINGS": "ignore"}
    env.pop("MLFLOW_TRACKING_URI", None)
    out = subprocess.run([sys.executable, str(app), "-m", "model=logreg", "sweep=narrow",
                          "hydra.sweeper.n_trials=6", "hydra/launcher=joblib",
                          "hydra.launcher.n_jobs=2"], cwd=project_root, env=env,
                         capture_output=True, text=True, timeout=600)
    assert_ok(out)
    client, runs = runs_of(project_root)
    trials = {r.data.tags["optuna.trial"]: r for r in runs
              if r.data.tags.get("tabflow.role") == "trial"}
    assert sorted(trials) == [str(n) for n in range(6)]
    assert trials["1"].info.status == "FAILED"
    for number, run in trials.items():
        assert "leaked_metric" not in run.data.metrics
        if number != "1":
            assert run.info.status == "FINISHED"
            metrics = json.loads((Path(run.data.tags["hydra.output_dir"]) /
                                  "metrics.json").read_text())
            assert run.data.metrics["val_accuracy"] == pytest.approx(metrics["val_accuracy"])
    leaked = mlflow.MlflowClient(f"sqlite:///{project_root}/mlflow.db").search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="attributes.run_name LIKE 'leaked-%'")
    assert len(leaked) == 2
    for run in leaked:
        assert run.info.status == "FAILED"
        assert "left active by job" in run.data.tags["error"]
        assert set(run.data.metrics) == {"leaked_metric"}  # no other job's data
        assert "mlflow.parentRunId" not in run.data.tags


@pytest.fixture
def small_disk(tmp_path):
    """A 60 MB tmpfs as the project root (skipped where mounting isn't allowed)."""
    root = tmp_path / "disk"
    root.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=60m", "tmpfs", str(root)],
                      capture_output=True).returncode != 0:
        pytest.skip("no permission to mount a tmpfs here (the full-disk test needs one)")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def test_a_disk_that_fills_mid_sweep_stops_it_in_one_line_and_a_rerun_finishes(small_disk):
    import shutil
    import time

    from tests.helpers import project_env, seed_store, without_report

    seed_store(small_disk)
    args = [sys.executable, str(TRAIN), *without_report(
        ("-m", "model=logreg", "sweep=narrow", "hydra.sweeper.n_trials=8"))]
    # Before anything: a sweep the disk can't hold is refused, naming the MB it needs.
    filler = small_disk / "filler"
    with filler.open("wb") as f:
        f.truncate(0)
        f.write(b"\0" * int(shutil.disk_usage(small_disk).free - 20 * 2**20))
    refused = run_train(small_disk, "-m", "model=logreg", "sweep=narrow",
                        "hydra.sweeper.n_trials=8")
    assert refused.returncode == 2 and "Disk error: the sweep needs about 51 MB free on" \
        in refused.stderr, refused.stderr[-2000:]
    assert not list(small_disk.glob("multirun/*/*/0"))
    filler.unlink()

    sweep = subprocess.Popen(args, cwd=small_disk, env=project_env(small_disk),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(small_disk.glob("multirun/*/*/2/metrics.json")):
            assert sweep.poll() is None and time.monotonic() < deadline, "no trial finished"
            time.sleep(0.05)
        with filler.open("wb") as f:  # the disk fills while trials run
            while True:
                try:
                    f.write(b"\0" * 2**20)
                    f.flush()
                except OSError:
                    break
        out, err = sweep.communicate(timeout=120)
    finally:
        sweep.kill()
    assert sweep.returncode == 1, out[-2000:] + err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("Sweep stopped: the disk is full (")
    assert "re-run the same command to resume study" in err

    filler.unlink()  # space freed: the same command finishes the study
    again = run_train(small_disk, "-m", "model=logreg", "sweep=narrow",
                      "hydra.sweeper.n_trials=8")
    assert_ok(again)
    assert "Registered breast_cancer version 1 as @staging" in again.stdout
    study = optuna.load_study(study_name=optuna.get_all_study_names(
        f"sqlite:///{small_disk}/optuna.db")[0], storage=f"sqlite:///{small_disk}/optuna.db")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) >= 8 and not [t for t in study.trials
                                    if t.state == optuna.trial.TrialState.RUNNING]
    _, runs = runs_of(small_disk)  # nothing recorded was lost: each finished trial has its run
    tracked = {int(r.data.tags["optuna.trial"]) for r in runs
               if r.data.tags.get("tabflow.role") == "trial" and r.info.status == "FINISHED"}
    assert tracked == {t.number for t in done}

"""End to end on real tables: penguins, a user's CSV, a regression set, and bad data."""

from __future__ import annotations

import re

import mlflow
import optuna
import pandas as pd
import pytest

from tests.helpers import CUSTOMERS, assert_ok, run_train, runs_of

pytestmark = pytest.mark.slow


def split_runs(runs):
    parent = next(r for r in runs if r.data.tags.get("tabflow.role") == "sweep")
    children = [r for r in runs if r.data.tags.get("tabflow.role") == "trial"]
    return parent, children


def test_penguins_sweep_records_dataset_lineage(tmp_path):
    proc = run_train(tmp_path, "-m", "dataset=penguins", "preprocessing=robust", "model=rf",
                     "sweep=narrow", "hydra.sweeper.n_trials=3")
    assert_ok(proc)
    client, runs = runs_of(tmp_path, "penguins")
    parent, children = split_runs(runs)
    assert len(children) == 3
    import palmerpenguins

    raw = palmerpenguins.load_penguins()
    n_rows, n_features = raw["species"].notna().sum(), raw.shape[1] - 1
    digests = set()
    for child in children:
        assert child.data.params["preprocessing.scaler"] == "robust"
        (used,) = child.inputs.dataset_inputs
        assert used.dataset.name == "penguins"
        assert '"uri": "palmerpenguins.load_penguins"' in used.dataset.source
        assert f'"num_rows": {n_rows}' in used.dataset.profile
        assert "island" in used.dataset.schema and "bill_length_mm" in used.dataset.schema
        assert {t.key: t.value for t in used.tags}["mlflow.data.context"] == "training"
        digests.add(child.data.tags["dataset.digest"])
        assert child.data.tags["dataset.shape"] == f"{n_rows}x{n_features}"
    assert len(digests) == 1 and digests == {parent.data.tags["dataset.digest"]}
    assert client.get_model_version_by_alias("penguins", "staging")
    # The split was computed once and reused by every trial.
    assert len(list((tmp_path / "data" / "splits").glob("penguins-*.npz"))) == 1
    assert len(list((tmp_path / "data" / "processed").glob("penguins-*.parquet"))) == 1


def test_csv_sweep_searches_preprocessing_and_serves_raw_rows(tmp_path):
    """A file as people export it: a comment line, a name with a space, a stray "?" cell."""
    (tmp_path / "data" / "raw").mkdir(parents=True)
    header, *rows = CUSTOMERS.read_text().splitlines()
    customer, _, rest = rows[20].split(",", 2)
    rows[20] = ",".join([customer, "?", rest])  # one unknown age among 300 numbers
    path = tmp_path / "data" / "raw" / "customers.csv"
    path.write_text("\n".join(["# exported by the CRM", header.replace(",age,", ", age,"),
                               *rows]) + "\n")
    proc = run_train(tmp_path, "-m", "dataset=csv", "dataset.path=customers.csv",
                     "dataset.target=churned", "dataset.id_columns=[Customer ID]",
                     "model=rf", "sweep=narrow", "hydra.sweeper.n_trials=4",
                     "preprocessing.scaler=choice(standard,minmax,robust)")
    assert_ok(proc)
    assert "dropped 6 of 300 rows whose target 'churned' is missing" in proc.stdout + proc.stderr
    _, runs = runs_of(tmp_path, "customers")  # a file dataset is named after its file
    parent, children = split_runs(runs)
    assert len(children) == 4
    # The scaler is a dimension of the Optuna study, and each trial got what Optuna chose.
    study = optuna.load_study(study_name=parent.data.tags["optuna.study"],
                              storage=f"sqlite:///{tmp_path}/optuna.db")
    for trial in study.trials:
        assert trial.distributions["preprocessing.scaler"].choices == (
            "standard", "minmax", "robust")
    chosen = {t.number: t.params["preprocessing.scaler"] for t in study.trials}
    assert chosen == {int(c.data.tags["optuna.trial"]): c.data.params["preprocessing.scaler"]
                      for c in children}
    # A command-line dimension counts as tuned like the config's: on each trial's tag, in
    # the parent's search space, and in the best trial's line.
    assert all(f"preprocessing.scaler={chosen[int(c.data.tags['optuna.trial'])]}"
               in c.data.tags["tabflow.tuned"] for c in children)
    assert parent.data.params["search_space.preprocessing.scaler"] == \
        "choice(standard,minmax,robust)"
    assert re.search(r"  with model\.n_estimators=\d+ model\.max_depth=\d+ "
                     r"preprocessing\.scaler=(standard|minmax|robust)", proc.stdout)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    model = mlflow.pyfunc.load_model("models:/customers@staging")
    # Rows read from the same file with pandas, names as written: the signature takes them.
    rows = pd.read_csv(path, comment="#", na_values=["?"]).drop(
        columns=["Customer ID", "churned"]).head(25)
    assert " age" in rows.columns and pd.isna(rows.loc[20, " age"])
    rows.loc[0, "region"] = "a region never seen"
    assert set(model.predict(rows)) <= {"yes", "no"}
    output = proc.stdout + proc.stderr
    assert "skipped 1 comment line(s) starting with '#' (line 1)" in output
    assert "column ' age': read as numbers; its 1 non-numeric cell(s) ['?']" in output


def test_a_csv_read_as_a_person_means_it(tmp_path):
    """A path typed from the project root, an ID column nobody declared, a name from the file."""
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "customers.csv").write_bytes(CUSTOMERS.read_bytes())
    proc = run_train(tmp_path, "dataset=csv", "dataset.path=data/raw/customers.csv",
                     "dataset.target=churned", "model=logreg")
    assert_ok(proc)
    output = proc.stdout + proc.stderr
    warnings = [line for line in output.splitlines() if "every value is unique" in line]
    assert len(warnings) == 1 and "['Customer ID']" in warnings[0]
    assert """'dataset.keep=["Customer ID"]'""" in warnings[0]
    _, runs = runs_of(tmp_path, "customers")
    (run,) = runs
    assert run.data.tags["dataset.ids_left_out"] == "Customer ID"
    assert run.data.tags["dataset.shape"].endswith("x5")  # age, charges, tenure, contract, region


def test_regression_dataset_minimizes_rmse(tmp_path):
    proc = run_train(tmp_path, "-m", "dataset=diabetes", "model=hgb", "sweep=narrow",
                     "hydra.sweeper.n_trials=3", "evaluation.trial_figures=true")
    assert_ok(proc)
    client, runs = runs_of(tmp_path, "diabetes")
    parent, children = split_runs(runs)
    regression_figures = {"predicted_vs_actual.png", "residuals.png",
                          "permutation_importance.png"}
    on_parent = {p.path.split("/")[-1] for p in client.list_artifacts(parent.info.run_id,
                                                                      "figures")}
    assert regression_figures <= on_parent
    for child in children:  # evaluation.trial_figures=true: every trial has its own
        on_child = {p.path.split("/")[-1]
                    for p in client.list_artifacts(child.info.run_id, "figures")}
        assert regression_figures <= on_child
    assert parent.data.params["objective.metric"] == "val_rmse"
    best = min(c.data.metrics["val_rmse"] for c in children)
    assert parent.data.metrics["best_val_rmse"] == pytest.approx(best)
    assert {"test_rmse", "test_mae", "test_r2"} <= set(parent.data.metrics)
    assert client.get_model_version_by_alias("diabetes", "staging")


def test_bad_data_stops_the_sweep_before_any_trial(tmp_path):
    proc = run_train(tmp_path, "-m", "dataset=csv", "dataset.path=churn.csv",
                     "dataset.target=churned", "sweep=narrow", fresh_store=True)
    assert proc.returncode == 2
    assert "Data error: dataset.path='churn.csv': no such file" in proc.stderr
    assert "put the file in data/raw/" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()
    assert not list(tmp_path.glob("multirun/**/metrics.json"))

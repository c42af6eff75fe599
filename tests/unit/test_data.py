"""Datasets: every source loads, bad input gets a clear error, work is cached and reused."""

from __future__ import annotations

import logging
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from tabflow.config import DatasetConfig, SplitConfig, Task
from tabflow.data import DataError, load_dataset
from tabflow.splits import split_dataset
from tests.helpers import CUSTOMERS, group_options, load_dataset_frame


def dataset_cfg(**kw):
    return OmegaConf.merge(OmegaConf.structured(DatasetConfig), {"name": "t", **kw})


def csv_cfg(path, **kw):
    return dataset_cfg(source="file", path=str(path), **{"task": "classification", **kw})


def split_cfg(**kw):
    return OmegaConf.merge(OmegaConf.structured(SplitConfig), kw)


@pytest.mark.parametrize("name", group_options("dataset"))
def test_every_dataset_option_loads_with_its_task(compose_cfg, name, project_root):
    overrides = [f"dataset={name}"]
    if name == "csv":
        shutil.copy(CUSTOMERS, project_root / "customers.csv")
        overrides += [f"dataset.path={project_root / 'customers.csv'}", "dataset.target=churned",
                      "dataset.id_columns=[Customer ID]"]
    cfg = compose_cfg(*overrides)
    ds = load_dataset(cfg.dataset, cfg.paths.data)
    assert len(ds.X) > 100 and ds.X.shape[1] >= 4
    assert ds.task is Task(cfg.dataset.task)
    assert set(ds.numeric) | set(ds.categorical) == set(ds.X.columns)
    if ds.task is Task.classification:
        assert 2 <= ds.y.nunique() <= 10
    else:
        assert ds.y.nunique() > 100
    split_dataset(ds, cfg.split, cfg.seed, cfg.paths.data)


def test_sklearn_sets_declare_their_tasks(compose_cfg):
    tasks = {n: compose_cfg(f"dataset={n}").dataset.task
             for n in ("iris", "wine", "breast_cancer", "digits", "diabetes")}
    assert tasks.pop("diabetes") is Task.regression
    assert set(tasks.values()) == {Task.classification}


def test_penguins_are_real_data_with_gaps_and_categories(compose_cfg):
    ds = load_dataset(compose_cfg("dataset=penguins").dataset)
    assert ds.y.name == "species" and set(ds.y) == {"Adelie", "Chinstrap", "Gentoo"}
    assert {"island", "sex", "year"} <= set(ds.categorical)  # year forced categorical
    assert {"bill_length_mm", "body_mass_g"} <= set(ds.numeric)
    assert ds.X["sex"].isna().sum() > 0 and ds.X["bill_length_mm"].isna().sum() > 0


def test_csv_types_are_inferred_and_overridable(tmp_path):
    ds = load_dataset(csv_cfg(CUSTOMERS, target="churned", id_columns=["Customer ID"]))
    assert "Customer ID" not in ds.X.columns  # identifiers are never features
    assert set(ds.numeric) == {"age", "monthly charges ($)", "tenure months"}
    assert set(ds.categorical) == {"contract", "region"}
    forced = load_dataset(csv_cfg(CUSTOMERS, target="churned", drop=["Customer ID", "region"],
                                  categorical=["tenure months"]))
    assert "region" not in forced.X.columns
    assert "tenure months" in forced.categorical


def test_numbers_stored_as_text_can_be_forced_numeric(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"code": ["1", "2", "3", "4"] * 5, "y": [0, 1] * 10}).to_parquet(path)
    assert "code" in load_dataset(csv_cfg(path, target="y")).categorical
    ds = load_dataset(csv_cfg(path, target="y", numeric=["code"]))
    assert "code" in ds.numeric and ds.X["code"].sum() == 50


def test_parquet_file_loads(tmp_path):
    frame = pd.read_csv(CUSTOMERS)
    frame.to_parquet(tmp_path / "customers.parquet")
    ds = load_dataset(csv_cfg(tmp_path / "customers.parquet", target="churned",
                              id_columns=["Customer ID"]))
    assert len(ds.X) == frame["churned"].notna().sum()


def test_relative_paths_are_under_data_raw(tmp_path):
    (tmp_path / "raw").mkdir()
    shutil.copy(CUSTOMERS, tmp_path / "raw" / "c.csv")
    ds = load_dataset(csv_cfg("c.csv", target="churned"), data_dir=tmp_path)
    assert len(ds.X) > 0


def test_a_path_typed_from_the_current_directory_works(tmp_path, monkeypatch):
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    shutil.copy(CUSTOMERS, raw / "churn.csv")
    monkeypatch.chdir(tmp_path)
    ds = load_dataset(csv_cfg("data/raw/churn.csv", target="churned"),
                      data_dir=tmp_path / "data")
    assert len(ds.X) > 0  # not data/raw/data/raw/churn.csv


def test_a_missing_file_error_names_both_places_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as info:
        load_dataset(csv_cfg("churn.csv", target="y"), data_dir=tmp_path / "data")
    message = str(info.value)
    assert str(tmp_path / "churn.csv") in message
    assert str(tmp_path / "data" / "raw" / "churn.csv") in message


def test_a_column_of_row_identifiers_is_left_out_with_one_warning(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="tabflow.data")
    frame = pd.read_csv(CUSTOMERS)
    frame["row"] = range(len(frame))  # integers, all unique: another identifier
    frame["noise"] = np.random.default_rng(0).random(len(frame))  # floats: a feature
    path = write_csv(tmp_path, frame)
    ds = load_dataset(csv_cfg(path, target="churned"), data_dir=tmp_path / "data")
    assert ds.left_out == ("Customer ID", "row")
    assert "Customer ID" not in ds.X.columns and "noise" in ds.X.columns
    assert ds.describe()["ids_left_out"] == ["Customer ID", "row"]
    warnings = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(warnings) == 1
    assert """'dataset.keep=["Customer ID","row"]'""" in warnings[0]
    cached = load_dataset(csv_cfg(path, target="churned"), data_dir=tmp_path / "data")
    assert cached.left_out == ("Customer ID", "row")  # the cache remembers; no new warning
    assert len([r for r in caplog.records if "left out" in r.getMessage()]) == 1
    kept = load_dataset(csv_cfg(path, target="churned", keep=["Customer ID"]))
    assert "Customer ID" in kept.categorical and kept.left_out == ("row",)


def test_rows_without_target_are_dropped_and_counted(caplog):
    caplog.set_level(logging.WARNING, logger="tabflow.data")
    ds = load_dataset(csv_cfg(CUSTOMERS, target="churned"))
    missing = int(pd.read_csv(CUSTOMERS)["churned"].isna().sum())
    assert missing > 0 and len(ds.y) == 300 - missing
    assert f"dropped {missing} of 300 rows whose target 'churned' is missing" in caplog.text


@pytest.mark.parametrize(("n_categorical", "missing_rate", "task"), [
    (0, 0.0, "classification"), (3, 0.1, "classification"), (2, 0.05, "regression")])
def test_synthetic_knobs(n_categorical, missing_rate, task):
    cfg = dataset_cfg(source="synthetic", task=task, synthetic={
        "n_rows": 2000, "n_features": 8, "n_informative": 4, "n_categorical": n_categorical,
        "missing_rate": missing_rate, "seed": 1})
    ds = load_dataset(cfg)
    assert ds.X.shape == (2000, 8)
    assert len(ds.categorical) == n_categorical
    assert ds.X.isna().to_numpy().mean() == pytest.approx(missing_rate, abs=0.01)
    assert ds.digest == load_dataset(cfg).digest  # same seed, same data


# --------------------------------------------------------------------------- bad input
def write_csv(tmp_path, frame, name="t.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(("make", "kw", "needle"), [
    (lambda p: p / "nope.csv", {"target": "y"}, "no such file"),
    (lambda p: (p / "x.txt").write_text("a,y\n") and p / "x.txt", {"target": "y"},
     "unsupported file type '.txt'"),
    (lambda p: (p / "bad.parquet").write_bytes(b"not parquet at all") and p / "bad.parquet",
     {"target": "y"}, "cannot read"),
    (lambda p: (p / "bin.csv").write_bytes(b"a,y\n\xff\xfe,1\n") and p / "bin.csv",
     {"target": "y"}, "is not utf-8-sig text"),
    (lambda p: write_csv(p, pd.DataFrame({"a": range(20), "b": 1})), {"target": "y"},
     "dataset.target='y' is not a column; columns are ['a', 'b']"),
    (lambda p: write_csv(p, pd.DataFrame({"a": range(20), "y": np.nan})), {"target": "y"},
     "missing in every row"),
    (lambda p: write_csv(p, pd.DataFrame({"a": range(20), "y": "same"})), {"target": "y"},
     "single class"),
    (lambda p: write_csv(p, pd.DataFrame({"a": range(400), "y": np.linspace(0, 1, 400)})),
     {"target": "y"}, "set dataset.task=regression"),
    (lambda p: write_csv(p, pd.DataFrame({"a": range(20), "y": ["x", "z"] * 10})),
     {"target": "y", "task": "regression"}, "set dataset.task=classification"),
    (lambda p: write_csv(p, pd.DataFrame({"a": range(20), "e": np.nan, "y": [0, 1] * 10})),
     {"target": "y"}, "entirely empty; leave them out with dataset.drop=[e]"),
    (lambda p: (p / "dup.csv").write_text("a,a,y\n1,2,0\n3,4,1\n") and p / "dup.csv",
     {"target": "y"}, "duplicate column names ['a']"),
    (lambda p: CUSTOMERS, {"target": None}, "dataset.target is not set"),
    (lambda p: CUSTOMERS, {"target": "churned", "drop": ["nope"]},
     "dataset.drop names columns that do not exist: ['nope']"),
    (lambda p: CUSTOMERS, {"target": "churned", "numeric": ["region"]},
     "holds non-numeric values such as 'west'"),
])
def test_bad_input_names_the_problem_and_the_fix(tmp_path, make, kw, needle):
    kw = {"task": "classification", **kw}
    cfg = dataset_cfg(source="file", path=str(make(tmp_path)), **kw)
    with pytest.raises(DataError) as info:
        load_dataset(cfg)
    assert needle in str(info.value)


def test_missing_path_says_how_to_give_one():
    with pytest.raises(DataError, match=r"dataset\.path=<file\.csv"):
        load_dataset(dataset_cfg(source="file", target="y", task="classification"))


def test_impossible_stratified_split_is_explained(tmp_path):
    frame = pd.DataFrame({"a": range(40), "y": ["big"] * 38 + ["rare"] * 2})
    ds = load_dataset(csv_cfg(write_csv(tmp_path, frame), target="y"))
    with pytest.raises(DataError, match=r"\{'rare': 2\}.*split.stratify=false"):
        split_dataset(ds, split_cfg(), seed=0)
    split_dataset(ds, split_cfg(stratify=False), seed=0)  # the suggested fix works


# ------------------------------------------------------------------------------ caching
def test_cleaned_table_and_split_are_written_once_and_reused(tmp_path, monkeypatch):
    (tmp_path / "raw").mkdir()
    shutil.copy(CUSTOMERS, tmp_path / "raw" / "c.csv")
    cfg = csv_cfg("c.csv", target="churned")
    ds = load_dataset(cfg, tmp_path)
    first = split_dataset(ds, split_cfg(), 42, tmp_path)
    processed = list((tmp_path / "processed").glob("t-*.parquet"))
    splits = list((tmp_path / "splits").glob("t-*.npz"))
    assert len(processed) == 1 and len(splits) == 1
    stamps = [p.stat().st_mtime_ns for p in (*processed, *splits)]

    # A later run reads the caches: the raw CSV parser is not even called.
    monkeypatch.setattr(pd, "read_csv", lambda *a, **k: pytest.fail("raw CSV re-read"))
    again = load_dataset(cfg, tmp_path)
    second = split_dataset(again, split_cfg(), 42, tmp_path)
    assert again.digest == ds.digest
    assert list(second.X_val.index) == list(first.X_val.index)
    assert [p.stat().st_mtime_ns for p in (*processed, *splits)] == stamps
    monkeypatch.undo()

    # Other data or another split config: new entries, the old ones stay.
    split_dataset(again, split_cfg(test_size=0.3), 42, tmp_path)
    assert len(list((tmp_path / "splits").glob("t-*.npz"))) == 2
    frame = pd.read_csv(CUSTOMERS)
    frame.loc[0, "age"] = 99
    frame.to_csv(tmp_path / "raw" / "c.csv", index=False)
    changed = load_dataset(cfg, tmp_path)
    assert changed.digest != ds.digest
    assert len(list((tmp_path / "processed").glob("t-*.parquet"))) == 2


def test_cached_and_fresh_loads_agree(tmp_path):
    cfg = dataset_cfg(source="penguins", target="species", task="classification",
                      categorical=["year"])
    cached = load_dataset(cfg, tmp_path)
    assert load_dataset(cfg, tmp_path).digest == cached.digest
    assert cached.describe()["schema"] == load_dataset(cfg, tmp_path).describe()["schema"]


def test_a_european_csv_is_read_with_its_separator_and_decimal_mark(tmp_path):
    path = tmp_path / "eu.csv"
    rows = "\n".join(f"{i},5;{i % 3};{'ja' if i % 2 else 'nein'}" for i in range(40))
    path.write_text(f"x1;x2;y\n{rows}\n")
    with pytest.raises(DataError, match=r"semicolon-separated; read it with dataset.sep=';'"):
        load_dataset(csv_cfg(path, target="y"))
    ds = load_dataset(csv_cfg(path, target="y", sep=";", decimal=","))
    assert ds.X["x1"].dtype.kind == "f" and ds.X["x1"].iloc[3] == 3.5
    assert "x1" in ds.numeric


@pytest.mark.parametrize(("cell", "task", "written", "fix", "value"), [
    (lambda i: f"{i},{i % 10}", "classification", "a decimal comma", {"decimal": ","}, 1.1),
    (lambda i: f"{1000 + i * 37:,}.5", "regression", "thousands separators",
     {"thousands": ","}, 1037.5),  # the target: not "set dataset.task=classification"
])
def test_numbers_written_in_another_locale_name_the_option_that_reads_them(
        tmp_path, cell, task, written, fix, value):
    path = tmp_path / "locale.csv"
    rows = "\n".join(f'"{cell(i)}",{i % 2}' for i in range(40))
    path.write_text(f"charges,y\n{rows}\n")
    target = "charges" if task == "regression" else "y"
    option = next(iter(fix))
    with pytest.raises(DataError, match=rf"'charges' holds numbers written with {written} "
                                        rf".*dataset.{option}=','"):
        load_dataset(csv_cfg(path, target=target, task=task))
    ds = load_dataset(csv_cfg(path, target=target, task=task, **fix))
    read = ds.y if task == "regression" else ds.X["charges"]
    assert read.iloc[1] == pytest.approx(value) and pd.api.types.is_float_dtype(read)


def test_a_latin1_file_names_its_encoding_option(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("région,y\n".encode("latin-1") + b"".join(
        f"{'é' if i % 2 else 'o'},{i % 2}\n".encode("latin-1") for i in range(30)))
    with pytest.raises(DataError, match=r"not utf-8-sig text .*dataset.encoding=latin-1"):
        load_dataset(csv_cfg(path, target="y"))
    assert "région" in load_dataset(csv_cfg(path, target="y", encoding="latin-1")).X.columns


def test_a_date_column_is_refused_before_any_trial_naming_it(tmp_path):
    frame = pd.DataFrame({"signed": pd.date_range("2024-01-01", periods=40, freq="D"),
                          "x": np.arange(40) % 7, "y": np.arange(40) % 2})
    path = tmp_path / "dates.parquet"
    frame.to_parquet(path)
    with pytest.raises(DataError, match=r"""columns \['signed'\] hold dates.*"""
                                        r"""'dataset.drop=\["signed"\]'"""):
        load_dataset(csv_cfg(path, target="y"))
    assert list(load_dataset(csv_cfg(path, target="y", drop=["signed"])).X.columns) == ["x"]


def test_trials_share_one_load_and_an_edited_file_is_read_again(compose_cfg, tmp_path):
    """A sweep loads, checks and splits its data once per process, not once per trial."""
    import pandas as pd

    from tabflow.splits import load_and_split

    frame = load_dataset_frame().assign(label=[i % 2 for i in range(569)])
    path = tmp_path / "table.csv"
    frame.to_csv(path, index=False)
    overrides = ("dataset=csv", f"dataset.path={path}", "dataset.target=label",
                 f"paths.data={tmp_path / 'data'}")
    ds, splits = load_and_split(compose_cfg(*overrides, "model.n_estimators=5"))
    again, same_splits = load_and_split(compose_cfg(*overrides, "model.n_estimators=9"))
    assert again is ds and same_splits is splits  # another trial: nothing reloaded
    pd.concat([frame, frame.head(50)]).to_csv(path, index=False)  # the file changes
    edited, _ = load_and_split(compose_cfg(*overrides))
    assert edited is not ds and len(edited.y) == 619 and edited.digest != ds.digest


# --------------------------------------------------------------- cells as a person means them
def numbers_csv(tmp_path, cells, header="x,y", lines_before=""):
    rows = "\n".join(f"{c},{i % 2}" for i, c in enumerate(cells))
    path = tmp_path / "n.csv"
    path.write_text(f"{lines_before}{header}\n{rows}\n")
    return path


def test_a_stray_token_in_a_numeric_column_is_a_missing_value_with_one_warning(tmp_path,
                                                                               caplog):
    cells = [str(i / 7) for i in range(300)]
    cells[17] = "?"
    with caplog.at_level(logging.WARNING, logger="tabflow"):
        ds = load_dataset(csv_cfg(numbers_csv(tmp_path, cells), target="y"))
    assert ds.numeric == ("x",) and ds.X["x"].isna().sum() == 1
    assert ds.X["x"].iloc[18] == pytest.approx(18 / 7)
    (warning,) = [r.getMessage() for r in caplog.records if "non-numeric" in r.getMessage()]
    assert "'x'" in warning and "['?']" in warning and """'dataset.categorical=["x"]'""" in warning
    # The way it names keeps the column as text.
    kept = load_dataset(csv_cfg(numbers_csv(tmp_path, cells), target="y", categorical=["x"]))
    assert kept.categorical == ("x",) and "?" in set(kept.X["x"])


def test_many_stray_tokens_are_refused_naming_both_ways_to_read_them(tmp_path):
    cells = [str(i) if i % 10 else ("?" if i % 20 else "n.a.") for i in range(200)]
    path = numbers_csv(tmp_path, cells)
    expected = ("""column 'x' holds numbers but also 20 of 200 cells that are not """
                """(['n.a.', '?']); read them as missing with 'dataset.na_values=["n.a.","?"]', """
                """or keep the column as text with 'dataset.categorical=["x"]'""")
    with pytest.raises(DataError, match=re.escape(expected)):
        load_dataset(csv_cfg(path, target="y"))
    ds = load_dataset(csv_cfg(path, target="y", na_values=["?", "n.a."]))  # the first fix works
    assert ds.numeric == ("x",) and ds.X["x"].isna().sum() == 20


def test_comment_lines_are_not_data_and_the_header_is_below_them(tmp_path, caplog):
    cells = [str(i % 9) for i in range(60)]
    path = numbers_csv(tmp_path, cells, lines_before="# exported 2026-12-06\n")
    lines = path.read_text().splitlines()
    lines.insert(30, "# the second half came from another system")
    path.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="tabflow"):
        ds = load_dataset(csv_cfg(path, target="y"))
    assert list(ds.X.columns) == ["x"] and len(ds.X) == 60 and ds.numeric == ("x",)
    assert any("skipped 2 comment line(s) starting with '#' (line 1, 31)" in r.getMessage()
               for r in caplog.records)


def test_dates_written_in_a_csv_are_refused_like_a_parquet_datetime(tmp_path):
    frame = pd.DataFrame({"signed": ["2024-01-01", "2024-01-02"] * 20,  # repeated: not IDs
                          "x": np.arange(40) % 7, "y": np.arange(40) % 2})
    path = write_csv(tmp_path, frame)
    with pytest.raises(DataError, match=r"columns \['signed'\] hold dates"):
        load_dataset(csv_cfg(path, target="y"))
    assert load_dataset(csv_cfg(path, target="y", categorical=["signed"])).categorical == (
        "signed",)  # said to be categories, they are


def test_column_names_keep_their_spaces_and_a_near_miss_says_how_it_is_written(tmp_path):
    path = tmp_path / "spaces.csv"
    path.write_text(" leading,trailing ,y\n" + "".join(f"{i / 3},{i % 3},{i % 2}\n"
                                                     for i in range(40)))
    ds = load_dataset(csv_cfg(path, target="y"))
    assert list(ds.X.columns) == list(pd.read_csv(path).drop(columns="y").columns)
    with pytest.raises(DataError, match=r"""dataset.drop names columns that do not exist: """
                                        r"""\['leading'\].*the file spells 'leading' as """
                                        r"""' leading'"""):
        load_dataset(csv_cfg(path, target="y", drop=["leading"]))

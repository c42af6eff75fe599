"""Every README command is one the project accepts, and does what its comment says.

In process and cheap: each ``python src/train.py`` line of the Quickstart is composed as
Hydra would compose it and checked as a run would check it (a sweep's expressions must
name keys of the config); the claims its comment makes (trial counts, a new study, the
objective, the shipped CSV and its columns) are checked against the composed config. Each
``tabflow`` line is parsed by the command's own parser. What the commands print when they
run is checked end to end elsewhere: the main sweep and the monitoring demo on a fresh
clone (e2e/test_fresh_clone.py), a finished study's re-run (e2e/test_sweeps.py).
"""

from __future__ import annotations

import re

import pandas as pd
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from tabflow.checks import check_config
from tabflow.cli import parser
from tabflow.contract import primary_objective
from tabflow.sweep_identity import study_name
from tests.helpers import REPO
from tests.helpers.readme import Line, commands, quickstart_train_lines

TRAIN = quickstart_train_lines()
TABFLOW = [line for section in ("After training", "Monitoring")
           for line in commands(section) if line.args[0] == "tabflow"]


def split_args(line: Line) -> tuple[bool, list[str], list[str]]:
    """Whether it sweeps, its plain overrides and its sweep expressions (Hydra's flags off)."""
    args = line.args[2:]
    if args[:1] == ["--cfg"]:
        args = args[2:]
    args = [a for a in args if a != "--help"]
    multirun = "-m" in args
    overrides = OverridesParser.create().parse_overrides([a for a in args if a != "-m"])
    plain = [o.input_line for o in overrides if not o.is_sweep_override()]
    sweeps = [o.input_line for o in overrides if o.is_sweep_override()]
    return multirun, [x for x in plain if x is not None], [x for x in sweeps if x is not None]


def test_the_readme_lists_the_commands_it_shows():
    assert len(TRAIN) >= 12 and len(TABFLOW) >= 10  # the parser found the blocks


@pytest.mark.parametrize("line", TRAIN, ids=[" ".join(t.args[2:])[:60] for t in TRAIN])
def test_each_quickstart_command_composes_and_passes_its_checks(compose_cfg, line):
    multirun, plain, sweeps = split_args(line)
    cfg = compose_cfg(*plain)
    check_config(cfg, sweeping=multirun)
    for expression in sweeps:  # each names a key of the config
        key = expression.split("=", 1)[0]
        assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", expression
    match = re.search(r"(\d+) trials", line.comment)
    if multirun and match and "at a time" not in line.comment:
        assert cfg.hydra.sweeper.n_trials == int(match[1]), line.comment
    if "regression" in line.comment:
        assert cfg.dataset.task == "regression"
        metric, direction = primary_objective(cfg.objective.metric, cfg.objective.direction)
        assert (metric, direction) == ("val_rmse", "minimize") and "val_rmse" in line.comment
    if "dataset.path" in " ".join(plain):
        frame = pd.read_csv(REPO / cfg.dataset.path)  # shipped: the examples run as written
        assert cfg.dataset.target in frame.columns
        assert set(cfg.dataset.drop or []) <= set(frame.columns)
        if "experiment churn" in line.comment:
            assert cfg.tracking.experiment == "churn"


DATA_LINES = {}  # one Quickstart line per distinct dataset setting
for _line in TRAIN:
    _plain = [a for a in split_args(_line)[1] if a.startswith("dataset")]
    DATA_LINES.setdefault(" ".join(_plain) or "dataset=breast_cancer", _line)


@pytest.mark.parametrize("line", DATA_LINES.values(), ids=list(DATA_LINES))
def test_each_quickstart_dataset_reads_from_the_checkout(compose_cfg, monkeypatch, line):
    """The data each line names is there and reads (the shipped CSV from data/raw/)."""
    from tabflow.data import load_dataset

    _, plain, _ = split_args(line)
    cfg = compose_cfg(*plain)
    monkeypatch.chdir(REPO)  # where the README's commands run; nothing is cached there
    ds = load_dataset(cfg.dataset, None)
    assert len(ds.X) > 100 and len(ds.y) == len(ds.X)
    assert not set(cfg.dataset.drop or []) & set(ds.X.columns)  # dropped as asked


def test_the_parallel_example_starts_a_new_study_as_its_comment_says(compose_cfg):
    (parallel,) = [t for t in TRAIN if "hydra.launcher.n_jobs=2" in t.args]
    assert "new study" in parallel.comment and "complete" in parallel.comment
    main = compose_cfg("model=rf", "sweep=wide")
    _, plain, _ = split_args(parallel)
    other = compose_cfg(*plain)
    assert other.hydra.launcher.n_jobs == 2
    assert study_name(other) != study_name(main)  # the main sweep's study is not resumed


@pytest.mark.parametrize("line", TABFLOW, ids=[" ".join(t.args[1:3]) for t in TABFLOW])
def test_each_tabflow_command_in_the_readme_parses(line):
    parsed = parser().parse_args(line.args[1:])  # argparse exits (fails) on a bad line
    assert parsed.command == line.args[1]

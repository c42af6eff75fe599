"""The suite's scheduling: a module that shares a fixture runs on one worker, others spread."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.helpers import REPO
from tests.helpers.scheduling import modules_sharing_a_fixture

SHARED = '''
import os
import pytest

@pytest.fixture(scope="module")
def swept():
    with open(os.environ["BUILT_LOG"], "a") as log:
        log.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")

@pytest.mark.parametrize("i", range(6))
def test_reads(swept, i):
    pass
'''
ALONE = '''
import os
import time
import pytest

@pytest.mark.parametrize("i", range(8))
def test_alone(i):
    time.sleep(0.2)
    with open(os.environ["RAN_LOG"], "a") as log:
        log.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
'''


def test_the_suites_shared_sweeps_are_found():
    assert {"tests/e2e/test_lifecycle.py", "tests/e2e/test_registry.py",
            "tests/e2e/test_monitoring.py", "tests/e2e/test_ecosystem.py"} \
        <= modules_sharing_a_fixture(REPO)


def test_a_module_fixture_is_built_once_and_other_tests_use_both_workers(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_shared.py").write_text(textwrap.dedent(SHARED))
    (tmp_path / "tests" / "test_alone.py").write_text(textwrap.dedent(ALONE))
    built, ran = tmp_path / "built.log", tmp_path / "ran.log"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "load", "-p",
         "tests.helpers.scheduling", "-p", "no:cacheprovider", "tests"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(REPO), "BUILT_LOG": str(built), "RAN_LOG": str(ran),
             "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "14 passed" in proc.stdout
    assert len(built.read_text().split()) == 1  # one worker, one build
    assert set(ran.read_text().split()) == {"gw0", "gw1"}

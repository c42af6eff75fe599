"""How the suite's tests are spread over pytest-xdist workers (a hook tests/conftest.py uses).

A test module that defines a module-scoped fixture (a sweep, swept once, that its tests
only read) runs on one worker, so its fixture is built once; every other test is
scheduled on its own. Nothing to declare: defining the fixture is enough.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

_MODULE_FIXTURE = re.compile(r"""@pytest\.fixture\(\s*scope=["']module["']""")


def modules_sharing_a_fixture(root: Path) -> frozenset[str]:
    """Test modules (as node ids spell them) that define a module-scoped fixture.

    Their tests share what it builds (a sweep, swept once), so they run on one worker.
    """
    return frozenset(path.relative_to(root).as_posix()
                     for path in sorted((root / "tests").rglob("test_*.py"))
                     if _MODULE_FIXTURE.search(path.read_text()))


@pytest.hookimpl(optionalhook=True)  # -p no:xdist runs without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With ``--dist load``, keep each module that shares a fixture on one worker.

    xdist's own ``loadgroup`` can't do this under pytest 9: it renames ``item._nodeid``,
    which pytest 9 no longer reads, so its groups were silently split across workers and
    each worker built the module's fixture again. Every other test is scheduled alone.
    """
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    shared = modules_sharing_a_fixture(Path(str(config.rootpath)))

    class SharedFixtureScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in shared else nodeid

    return SharedFixtureScheduling(config, log)

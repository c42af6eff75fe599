"""The README's commands, as a newcomer copies them: each code block's lines and comments."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from tests.helpers import REPO


@dataclass
class Line:
    """One command of a README code block, and the comment beside or above it."""

    args: list[str]
    comment: str


def commands(section: str, text: str | None = None) -> list[Line]:
    """The bash commands of a README section, each with its comment."""
    readme = (REPO / "README.md").read_text() if text is None else text
    body = readme.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    found = []
    for block in re.findall(r"```bash\n(.*?)```", body, re.S):
        above: list[str] = []
        for raw in block.splitlines():
            if raw.startswith("#"):
                above.append(raw.lstrip("# "))
                continue
            if not raw.strip():
                above = []
                continue
            code, _, beside = raw.partition("  #")
            found.append(Line(shlex.split(code), " ".join([*above, beside.strip()])))
            above = []
    return found


def quickstart_train_lines() -> list[Line]:
    """The Quickstart's ``python src/train.py ...`` lines, in order."""
    return [line for line in commands("Quickstart") if line.args[:2] == ["python", "src/train.py"]]

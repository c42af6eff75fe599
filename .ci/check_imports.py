"""Check the import graph of src/: no cycles, mlflow only in tabflow.tracking, standalone plugins.

tabflow.tracking is a library the rest of tabflow calls down into: of tabflow, it imports
only the modules below it (names, config, data, the study's name), never the callback,
the sweep's end or the commands that use it.

A plugin's private modules (a leading underscore) are its own: code outside the plugin
imports only its public API (the package and its public modules).

    python .ci/check_imports.py            # the project's own src/
    python .ci/check_imports.py SRC_DIR    # another tree (the tests use a small one)

Every import counts, those inside functions included: a cycle hidden in a function is a
cycle all the same. Exits 1 and names each cycle (and each forbidden mlflow import).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

# Only these packages' modules may import mlflow.
MLFLOW_ALLOWED = ("tabflow.tracking",)
# What tabflow.tracking may import of tabflow outside itself: the layers below it.
TRACKING = "tabflow.tracking"
BELOW_TRACKING = ("tabflow.contract", "tabflow.config", "tabflow.data", "tabflow.interrupts",
                  "tabflow.sweep_identity")
# The packages whose modules are checked (the rest of src/ is third-party namespaces).
CHECKED = ("tabflow", "hydra_plugins.tabflow_sweeper", "hydra_plugins.tabflow_launcher")
# Plugins that work in any Hydra app: they may not import tabflow.
STANDALONE = ("hydra_plugins.tabflow_launcher", "hydra_plugins.tabflow_sweeper")


def module_name(src: Path, path: Path) -> str:
    """``src/tabflow/tracking/store.py`` -> ``tabflow.tracking.store``."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, name: str, is_package: bool) -> set[str]:
    """Every module a file imports (absolute names; relative imports resolved)."""
    found: set[str] = set()
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def graph(src: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Return the checked modules' import edges among themselves, and all their imports."""
    files = {}
    for path in sorted(src.rglob("*.py")):
        name = module_name(src, path)
        if name.startswith(CHECKED):
            files[name] = path
    edges: dict[str, set[str]] = {}
    raw: dict[str, set[str]] = {}
    for name, path in files.items():
        raw[name] = imports_of(path, name, path.name == "__init__.py")
        # `from pkg import mod` names a module; `from mod import func` names the module.
        edges[name] = {i for i in raw[name] if i in files and i != name}
    return edges, raw


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def private_module_of(imported: str) -> str | None:
    """The plugin whose private module ``imported`` names (``hydra_plugins.p._x``), or None."""
    for plugin in STANDALONE:
        rest = imported.removeprefix(f"{plugin}.")
        if rest != imported and rest.startswith("_"):
            return plugin
    return None


def _is_ancestor(a: str, b: str) -> bool:
    return b.startswith(f"{a}.")


def check(src: Path) -> list[str]:
    """Return the problems found in a source tree (empty: the graph is clean)."""
    edges, raw = graph(src)
    # A package's __init__ importing its own modules (or a module importing its package)
    # is how packages work, not a design cycle.
    edges = {v: {w for w in ws if not (_is_ancestor(v, w) or _is_ancestor(w, v))}
             for v, ws in edges.items()}
    problems = [f"import cycle: {' <-> '.join(c)}" for c in cycles(edges)]
    for name, imported in sorted(raw.items()):
        own = sorted(i for i in imported if i == "tabflow" or i.startswith("tabflow."))
        if name.startswith(STANDALONE) and own:
            problems.append(f"{name} imports {own[0]}: a standalone plugin uses Hydra only")
        if name == TRACKING or name.startswith(f"{TRACKING}."):
            upward = sorted(i for i in own if not i.startswith((f"{TRACKING}.", *BELOW_TRACKING))
                            and i not in ("tabflow", TRACKING))
            if upward:
                problems.append(f"{name} imports {upward[0]}: tabflow.tracking is a library "
                                f"that the rest calls down into (it may import "
                                f"{', '.join(BELOW_TRACKING)})")
        private = sorted(i for i in imported if (p := private_module_of(i)) is not None
                         and not (name == p or name.startswith(f"{p}.")))
        if private:
            problems.append(f"{name} imports {private[0]}, a private module of its plugin: use "
                            f"the plugin's public API (its package, or a module without a "
                            f"leading underscore)")
        if name.startswith(MLFLOW_ALLOWED):
            continue
        banned = sorted(i for i in imported if i == "mlflow" or i.startswith("mlflow."))
        if banned:
            problems.append(f"{name} imports {banned[0]}: only {', '.join(MLFLOW_ALLOWED)} "
                            f"may talk to MLflow")
    return problems


def main() -> int:
    """Check src/ (or the folder given) and print what is wrong."""
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "src"
    problems = check(src)
    for problem in problems:
        print(problem)
    if not problems:
        print(f"imports: no cycles; mlflow only in {', '.join(MLFLOW_ALLOWED)}; plugins "
              f"used through their public API")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

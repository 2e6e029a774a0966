"""The layout's rules, read from the source: arrows run campaigns <- worker <- scheduler, no file
imports itself back through others, and nothing but the CLI reaches the development tools."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("campaigns", "worker", "scheduler")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Herald modules ``path`` imports anywhere in it (inside functions too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            # "from worker import tasks" names the module worker.tasks; "from x import f", module x.
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name.split(".")[0] in PACKAGES:
                out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        targets = _imports(path, modules) - {name}
        # ``from worker.send import dispatch`` also lists the package; a package is no arrow back.
        graph[name] = {t for t in targets if not name.startswith(t + ".")}
    return graph


def test_the_domain_imports_nothing_of_the_worker_or_the_scheduler():
    wrong = {(m, t) for m, ts in _graph().items() if m.startswith("campaigns")
             for t in ts if not t.startswith("campaigns")}
    assert not wrong


def test_the_worker_imports_the_scheduler_only_for_the_beat_schedule():
    wrong = {(m, t) for m, ts in _graph().items() if m.startswith("worker")
             for t in ts if t.startswith("scheduler")}
    assert wrong == {("worker.app", "scheduler.schedule")}


def test_no_module_imports_itself_back_through_others():
    graph = _graph()
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles


def test_only_the_cli_reaches_the_development_tools():
    tools = ("worker.emulator", "worker.bench")
    wrong = {(m, t) for m, ts in _graph().items() if not m.startswith(tools + ("worker.cli",))
             for t in ts if t.startswith(tools)}
    assert not wrong


def test_the_readmes_map_names_every_module():
    """README "Where things live": each module of campaigns/ and scheduler/, and each of worker/'s
    own modules and packages, is named there (as a path or, in a row of one folder, by file name)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Where things live"):]
    section = section[:section.index("\n## ")]
    missing = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).iterdir()):
            if path.name.startswith(("_", ".")) or path.name == "migrations":
                continue
            if path.suffix == ".py" or (path.is_dir() and (path / "__init__.py").exists()):
                name = path.name + ("/" if path.is_dir() else "")
                if f"`{package}/{name}`" not in section and f"`{name}`" not in section:
                    missing.append(f"{package}/{name}")
    assert not missing, f"not in the README's map: {missing}"

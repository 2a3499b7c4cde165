"""The shape of the code: graft's modules import each other without circles, and no function in src/
is longer than a reader can hold (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted((SOURCE / "graft").rglob("*.py")):
        parts = path.relative_to(SOURCE).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """Module -> the graft modules it imports: at the top, inside functions and under TYPE_CHECKING
    alike (a circle through a lazy or type-only import is still a circle for the reader). Importing
    `a.b` also runs `a`'s __init__, so it counts as importing `a` too."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join([*base, *([node.module] if node.module else [])])
                targets = [target, *(f"{target}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                while target:  # the module and the packages above it, whose __init__ runs first
                    if target in modules and target != name and not name.startswith(target + "."):
                        imported.add(target)
                    target = target.rpartition(".")[0]
        graph[name] = imported
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for neighbour in sorted(graph.get(node, ())):
            if neighbour not in index:
                visit(neighbour)
                low[node] = min(low[node], low[neighbour])
            elif neighbour in on_stack:
                low[node] = min(low[node], index[neighbour])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_the_circle_finder_finds_a_circle_through_a_package():
    graph = {"graft.a": {"graft.b"}, "graft.b": {"graft.c"}, "graft.c": {"graft.a"}, "graft.d": {"graft.a"}}
    assert import_circles(graph) == [["graft.a", "graft.b", "graft.c"]]
    assert import_circles({"graft.a": {"graft.b"}, "graft.b": set()}) == []


def test_graft_has_no_import_circles():
    circles = import_circles(import_graph())
    assert not circles, "import circles (a module that, through others, imports itself):\n" + "\n".join(
        " <-> ".join(circle) for circle in circles)


def test_the_graph_sees_lazy_and_type_only_imports():
    graph = import_graph()
    assert "graft.training.pipeline" in graph["graft.cli.main"] or any(
        "graft.training" in target for target in graph["graft.cli.main"])  # imported inside a command
    assert "graft.config" in graph["graft.strategies.base"]


@pytest.mark.parametrize("path", sorted((SOURCE / "graft").rglob("*.py")), ids=lambda p: str(p.relative_to(SOURCE)))
def test_no_function_is_longer_than_a_reader_can_hold(path):
    long = [f"{node.name} (line {node.lineno}): {node.end_lineno - node.lineno + 1} lines"
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"over {MAX_FUNCTION_LINES} lines: split into named steps: {long}"


def test_the_run_loop_reads_top_to_bottom_and_names_no_strategy():
    """graft.train is the numbered steps and nothing else; which strategy does what is the strategies' business."""
    import graft.strategies
    from graft.training import pipeline, run, setup

    source = (SOURCE / "graft" / "training" / "pipeline.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    train = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "train")
    assert train.end_lineno - train.lineno + 1 <= 60
    for module in (pipeline, run, setup):
        named = _strings_in_code(Path(module.__file__)) & set(graft.strategies.STRATEGIES)
        assert not named, f"{module.__name__} names strategies {named}: ask the strategy instead"


def _strings_in_code(path: Path) -> set[str]:
    """The string constants of a module's code, its docstrings left out (they may show examples)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings}

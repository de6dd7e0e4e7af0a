"""The package's layout stays readable (docs/architecture.md): no import cycle among its modules, imports at the top
(a few inside functions, each with its reason in a comment), and no function with more than eight parameters."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rlhf_helpers"
MAX_PARAMETERS = 8
MAX_INNER_IMPORTS = 10


def _modules() -> dict[str, ast.Module]:
    return {path.stem: ast.parse(path.read_text()) for path in sorted(PACKAGE.glob("*.py"))}


def _own_imports(nodes) -> set[str]:
    """The package's modules that these import statements name (`from .x import`, `from . import x`)."""
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module.split(".")[0]} if node.module else {alias.name for alias in node.names}
    return found


def _import_graph(modules: dict[str, ast.Module]) -> dict[str, set[str]]:
    """Every import of the package's own modules, at the top or inside a function."""
    return {name: _own_imports(ast.walk(tree)) & set(modules) for name, tree in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_package_has_no_import_cycle():
    graph = _import_graph(_modules())
    assert "runs" in graph["trainers"] and "trainers" in graph["train"], "the graph reads imports inside functions"
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_imports_sit_at_the_top_and_the_few_inside_functions_say_why():
    inner = []
    for name, tree in _modules().items():
        lines = (PACKAGE / f"{name}.py").read_text().splitlines()
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if _own_imports([node]):
                    above = lines[node.lineno - 2].strip()
                    assert above.startswith("#"), (f"{name}.py:{node.lineno} imports inside a function with no comment "
                                                   f"above it saying why (an optional dependency or a start-up cost)")
                    inner.append(f"{name}.py:{node.lineno}")
    assert len(inner) <= MAX_INNER_IMPORTS, inner


def test_no_function_takes_more_than_eight_parameters():
    wide = []
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
                count = len(names) + (args.vararg is not None) + (args.kwarg is not None)
                count -= bool(names and names[0] in ("self", "cls"))
                if count > MAX_PARAMETERS:
                    wide.append(f"{name}.py:{node.lineno} {node.name} ({count})")
    assert not wide, f"functions with more than {MAX_PARAMETERS} parameters: {wide}"

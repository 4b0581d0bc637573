"""The package's imports run one way: no module imports, directly or through others, one that imports it
(each import counted, those inside functions too), and evaluation never loads the training code."""
import ast
import subprocess
import sys

from conftest import REPO

PACKAGE = REPO / "coral"


def import_graph() -> dict[str, set[str]]:
    """Module -> the coral modules it imports (from its source, wherever the import stands)."""
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    graph = {}
    for name in modules:
        found = set()
        for node in ast.walk(ast.parse((PACKAGE / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "coral":
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("coral."):
                found.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("coral.")}
        graph[name] = found & modules - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk meets, as the modules along it."""
    found, state, path = [], {}, []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                found.append(path[path.index(imported):] + [imported])
            elif imported not in state:
                visit(imported)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def test_the_walk_finds_a_cycle_made_by_hand():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert {"train", "metrics", "classifier", "data", "photo_datasets"} <= set(graph)  # the walk read the package
    assert cycles(graph) == []


def test_evaluation_does_not_load_the_training_code():
    code = "import sys, coral.metrics, coral.classifier; print(sorted(m for m in sys.modules if m in " \
           "('coral.train', 'coral.step', 'coral.objectives', 'coral.distributed')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert loaded.stdout.strip() == "[]"

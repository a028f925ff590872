"""The layers of DESIGN.md, read from the import graph of deead_ros/: no upward import and no cycle.

Every `import` and `from ... import` in every module counts, also the ones inside functions (a lazy
import is still a dependency). A module may import its own layer and the layers below it.
"""
import ast
from collections import defaultdict

from test.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "deead_ros"
# Lowest first. base: shared utilities every layer may use; tools (evaluation, training, data) run the
# runner, so they sit above app; ros holds rclpy and may use everything.
LAYERS = ("base", "engines", "exit", "model", "app", "tools", "ros")
BASE = {"deead_ros", "deead_ros.errors", "deead_ros.geometry", "deead_ros.parameters", "deead_ros.parameter_files",
        "deead_ros.paths"}
APP = {"deead_ros.runner", "deead_ros.frame_assembly", "deead_ros.health", "deead_ros.odometry_history",
       "deead_ros.debug_view", "deead_ros.diagnostics"}


def module_name(path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    if module in BASE:
        return "base"
    if module in APP:
        return "app"
    sub = module.split(".")[1]
    assert sub in LAYERS, f"{module} belongs to no layer of DESIGN.md; add it to this test's table"
    return sub


def imports_of(path, module: str) -> set[str]:
    """deead_ros modules that `module` imports (relative imports resolved)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[: len(module.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join(package + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)       # `from pkg import submodule`
    return {name for name in found if name.split(".")[0] == "deead_ros"}


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {i for i in imports_of(p, m) if i in paths and i != m} for m, p in paths.items()}


def test_no_layer_imports_a_layer_above_it():
    upward = [f"{m} ({layer_of(m)}) imports {i} ({layer_of(i)})"
              for m, targets in graph().items() for i in sorted(targets)
              if LAYERS.index(layer_of(i)) > LAYERS.index(layer_of(m))]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycle():
    edges = graph()
    # a package __init__ re-exporting its own submodules is not a cycle through them
    edges = {m: {i for i in t if not (m.startswith(i + ".") and i in edges)} for m, t in edges.items()}
    state: dict[str, int] = defaultdict(int)        # 0 new, 1 on the stack, 2 done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for i in sorted(edges[m]):
            if state[i] == 1:
                return stack[stack.index(i):] + [i]
            if state[i] == 0 and (cycle := visit(i)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for module in sorted(edges):
        if state[module] == 0:
            cycle = visit(module)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checker_sees_an_upward_import(tmp_path):
    path = tmp_path / "controller.py"
    path.write_text("def f():\n    from deead_ros.model.encoding import FrameInputs\n")
    assert "deead_ros.model.encoding" in imports_of(path, "deead_ros.exit.controller")
    assert LAYERS.index(layer_of("deead_ros.model.encoding")) > LAYERS.index(layer_of("deead_ros.exit.controller"))

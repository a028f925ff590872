"""The layers of docs/design.md, read from the import graph of both packages: no upward import, no cycle.

Every `import` and `from ... import` in every module of deead_ros/ (the runtime) and deead_lab/ (the
lab) counts, also the ones inside functions (a lazy import is still a dependency). A module may import
its own layer and the layers below it. The lab sits above the whole runtime: it may import deead_ros,
and deead_ros never imports deead_lab (a vehicle installs the runtime alone).
"""
import ast
from collections import defaultdict
from pathlib import Path

from test.conftest import REPO_ROOT

# package name -> the folder its import root lives in
SOURCES = {"deead_ros": REPO_ROOT / "deead_ros", "deead_lab": REPO_ROOT / "deead_lab"}
# Lowest first. base: shared utilities every layer may use; app: one frame in, a plan out; ros holds rclpy.
# lab.model: the model definitions and their export (torch); lab: the tools that train, run and judge them.
LAYERS = ("base", "engines", "exit", "model", "app", "ros", "lab.model", "lab")
BASE = {"deead_ros", "deead_ros.errors", "deead_ros.files", "deead_ros.geometry", "deead_ros.parameters",
        "deead_ros.parameter_files", "deead_ros.paths"}
APP = {"deead_ros.runner", "deead_ros.frame_assembly", "deead_ros.health", "deead_ros.odometry_history",
       "deead_ros.imu_history", "deead_ros.camera_sync", "deead_ros.debug_view", "deead_ros.diagnostics",
       "deead_ros.bags", "deead_ros.sensor_contract", "deead_ros.trajectory_kinematics"}


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    if module.startswith("deead_lab"):
        return "lab.model" if module.startswith("deead_lab.model") else "lab"
    if module in BASE:
        return "base"
    if module in APP:
        return "app"
    sub = module.split(".")[1]
    assert sub in LAYERS, f"{module} belongs to no layer of docs/design.md; add it to this test's table"
    return sub


def imports_of(path: Path, module: str) -> set[str]:
    """deead_ros and deead_lab modules that `module` imports (relative imports resolved)."""
    found: set[str] = set()
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
    return {name for name in found if name.split(".")[0] in SOURCES}


def module_paths() -> dict[str, Path]:
    return {module_name(p, root): p for package, root in SOURCES.items() for p in (root / package).rglob("*.py")}


def graph() -> dict[str, set[str]]:
    paths = module_paths()
    return {m: {i for i in imports_of(p, m) if i in paths and i != m} for m, p in paths.items()}


def test_both_packages_are_read():
    modules = module_paths()
    assert {"deead_ros.runner", "deead_ros.ros.node", "deead_lab.eval", "deead_lab.model.export_onnx"} <= set(modules)


def test_the_runtime_never_imports_the_lab():
    offenders = [f"{m} imports {i}" for m, targets in graph().items() if m.startswith("deead_ros")
                 for i in sorted(targets) if i.startswith("deead_lab")]
    assert not offenders, "the runtime imports the lab (a vehicle does not have it):\n" + "\n".join(offenders)


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


def test_the_checker_sees_the_runtime_importing_the_lab(tmp_path):
    path = tmp_path / "node.py"
    path.write_text("def f():\n    from deead_lab.eval import evaluate\n")
    assert "deead_lab.eval" in imports_of(path, "deead_ros.ros.node")
    assert LAYERS.index(layer_of("deead_lab.eval")) > LAYERS.index(layer_of("deead_ros.ros.node"))

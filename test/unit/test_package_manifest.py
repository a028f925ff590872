"""Each package's package.xml names a dependency for every third-party import of its code, so `rosdep install`
gives a node that starts (deead_ros) and tools that run (deead_lab), and names nothing its code never imports:
the runtime's list is what a vehicle installs."""
import ast
import sys
import xml.etree.ElementTree as ET

import pytest

from test.conftest import REPO_ROOT

# package -> (its package.xml, its Python source folder)
PACKAGES = {"deead_ros": (REPO_ROOT / "deead_ros" / "package.xml", REPO_ROOT / "deead_ros" / "deead_ros"),
            "deead_lab": (REPO_ROOT / "deead_lab" / "package.xml", REPO_ROOT / "deead_lab" / "deead_lab")}

# Top-level Python module -> the package.xml key that provides it.
PROVIDED_BY = {
    "numpy": "python3-numpy", "PIL": "python3-pil", "onnxruntime": "python3-onnxruntime-pip",
    "rosbags": "python3-rosbags-pip", "onnx": "python3-onnx", "torch": "python3-torch-pip",
    "safetensors": "python3-safetensors-pip", "transformers": "python3-transformers-pip",
    "matplotlib": "python3-matplotlib", "yaml": "python3-yaml", "foxglove": "python3-foxglove-sdk-pip",
    "imageio_ffmpeg": "python3-imageio-ffmpeg-pip", "simplejpeg": "python3-simplejpeg-pip",
}
# Not package.xml dependencies, with the reason.
ELSEWHERE = {
    "tensorrt": "the vehicle's TensorRT install (optional backend)",
    "cuda": "cuda-python, with the TensorRT install (optional backend)",
    "metadrive": "the simulator's own venv (make metadrive), data collection and the closed loop only",
    "panda3d": "MetaDrive's renderer, in the simulator's venv",
    "ray": "the optional scale-out extra (pip install 'deead_lab[ray]'; no rosdep key), for --workers/--ray-address",
}
# Optional in the runtime: imported only when asked for, with a message naming what to install when missing.
RUNTIME_OPTIONAL = {
    "torch": "the torch reference backend (engine.backend: torch; extra 'torch')",
    "foxglove": "the Foxglove WebSocket server (foxglove.port; extra 'foxglove')",
    "onnx": "fp16 engines on TensorRT 11 (an fp16 copy of each graph; extra 'tensorrt')",
    "autoware_planning_msgs": "the Autoware trajectory (output.autoware_trajectory): the vehicle's Autoware install",
}
# What a vehicle must never be asked to install: the lab's research stack.
LAB_ONLY = ("python3-torch-pip", "python3-transformers-pip", "python3-matplotlib", "python3-safetensors-pip",
            "python3-onnx", "python3-imageio-ffmpeg-pip")


def not_declared(package: str) -> dict[str, str]:
    return {**ELSEWHERE, **(RUNTIME_OPTIONAL if package == "deead_ros" else {})}


def third_party_imports(package: str) -> set[str]:
    found: set[str] = set()
    for path in PACKAGES[package][1].rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in PACKAGES}


def declared(package: str) -> set[str]:
    root = ET.parse(PACKAGES[package][0]).getroot()
    return {e.text.strip() for e in root if e.tag.endswith("depend") and e.text}


@pytest.mark.parametrize("package", PACKAGES)
def test_every_import_has_a_declared_dependency(package):
    deps = declared(package)
    missing = [f"{module} (needs {PROVIDED_BY.get(module, 'a ROS package of that name')})"
               for module in sorted(third_party_imports(package) - set(not_declared(package)))
               if PROVIDED_BY.get(module, module) not in deps]
    assert not missing, f"{package}'s package.xml lacks: {missing}"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_declared_python_dependency_is_unused(package):
    used = {PROVIDED_BY[m] for m in third_party_imports(package) if m in PROVIDED_BY}
    python_keys = {d for d in declared(package) if d.startswith("python3-")} - {
        "python3-pytest", "python3-hypothesis", "python3-jsonschema", "python3-websockets"}
    assert python_keys <= used, f"{package} declares but never imports: {python_keys - used}"


def test_the_runtime_declares_none_of_the_labs_research_stack():
    assert not declared("deead_ros") & set(LAB_ONLY), "a vehicle install would pull the lab's research stack"
    assert "deead_ros" in declared("deead_lab"), "the lab runs the runtime: deead_lab/package.xml must depend on it"

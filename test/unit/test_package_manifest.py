"""package.xml names a dependency for every third-party import of deead_ros/, so `rosdep install` gives a
node that starts (and tools that run)."""
import ast
import sys
import xml.etree.ElementTree as ET

from test.conftest import REPO_ROOT

# Top-level Python module -> the package.xml key that provides it.
PROVIDED_BY = {
    "numpy": "python3-numpy", "PIL": "python3-pil", "onnxruntime": "python3-onnxruntime-pip",
    "rosbags": "python3-rosbags-pip", "onnx": "python3-onnx", "torch": "python3-torch-pip",
    "safetensors": "python3-safetensors-pip", "transformers": "python3-transformers-pip",
    "matplotlib": "python3-matplotlib", "yaml": "python3-yaml", "foxglove": "python3-foxglove-sdk-pip",
    "imageio_ffmpeg": "python3-imageio-ffmpeg-pip",
}
# Not package.xml dependencies, with the reason.
ELSEWHERE = {
    "tensorrt": "the vehicle's TensorRT install (optional backend)",
    "cuda": "cuda-python, with the TensorRT install (optional backend)",
    "metadrive": "the simulator's own venv (make metadrive), data collection and the closed loop only",
    "panda3d": "MetaDrive's renderer, in the simulator's venv",
    "ray": "the optional scale-out extra (pip install 'deead_ros[ray]'; no rosdep key), for --workers/--ray-address",
}


def third_party_imports() -> set[str]:
    found = set()
    for path in (REPO_ROOT / "deead_ros").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "deead_ros"}


def declared() -> set[str]:
    root = ET.parse(REPO_ROOT / "package.xml").getroot()
    return {e.text.strip() for e in root if e.tag.endswith("depend") and e.text}


def test_every_import_has_a_declared_dependency():
    deps = declared()
    missing = [f"{module} (needs {PROVIDED_BY.get(module, 'a ROS package of that name')})"
               for module in sorted(third_party_imports() - set(ELSEWHERE))
               if PROVIDED_BY.get(module, module) not in deps]
    assert not missing, f"package.xml lacks: {missing}"


def test_no_declared_python_dependency_is_unused():
    used = {PROVIDED_BY[m] for m in third_party_imports() if m in PROVIDED_BY}
    python_keys = {d for d in declared() if d.startswith("python3-")} - {"python3-pytest", "python3-hypothesis",
                                                                         "python3-jsonschema",
                                                                         "python3-websockets"}
    assert python_keys <= used, f"declared but never imported: {python_keys - used}"

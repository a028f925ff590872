"""ament_python set-up of deead_ros, the runtime a vehicle installs: console scripts and the share/ files ROS tools
look up. The workstation's tools are the sibling package deead_lab (deead_lab/setup.py)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "deead_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/schema", glob("schema/*.json")),
        (f"share/{PACKAGE}/models/demo", glob("models/demo/*")),
        (f"share/{PACKAGE}/bags/demo", glob("bags/demo/*")),
    ],
    # What the node runs; the ROS wheels, rclpy and the messages come from the ROS install (package.xml).
    install_requires=["setuptools", "numpy", "pillow", "onnxruntime", "rosbags", "PyYAML"],
    zip_safe=True,
    maintainer="deead_ros maintainers",
    maintainer_email="maintainers@deead-ros.dev",
    description="Real-time VLA driving planner with action-guided early exit (DeeAD) for ROS 2.",
    license="Apache-2.0",
    # Optional backends and outputs, each imported only when asked for (engine.backend, foxglove.port).
    extras_require={"tensorrt": ["tensorrt>=10,<12", "cuda-python", "onnx"], "torch": ["torch"],
                    "foxglove": ["foxglove-sdk"]},
    entry_points={
        "console_scripts": [
            "deead_node = deead_ros.ros.node:main",
            "deead_replay = deead_ros.ros.replay:main",
            "deead_build_engines = deead_ros.engines.build:main",
        ],
    },
)

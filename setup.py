"""ament_python set-up of deead_ros: console scripts and the share/ files ROS tools look up."""
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
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="deead_ros maintainers",
    maintainer_email="maintainers@deead-ros.dev",
    description="Real-time VLA driving planner with action-guided early exit (DeeAD) for ROS 2.",
    license="Apache-2.0",
    extras_require={"tensorrt": ["tensorrt>=10", "cuda-python"], "ray": ["ray==2.60.0"]},
    entry_points={
        "console_scripts": [
            "deead_node = deead_ros.ros.node:main",
            "deead_replay = deead_ros.ros.replay:main",
            "deead_export = deead_ros.model.export_onnx:main",
            "deead_build_engines = deead_ros.engines.build:main",
            "deead_eval = deead_ros.tools.eval:main",
            "deead_calibrate = deead_ros.tools.calibrate:main",
            "deead_train = deead_ros.tools.train:main",
            "deead_make_bag = deead_ros.tools.make_bag:main",
        ],
    },
)

"""ament_python set-up of deead_lab, the workstation's package: its console scripts.

It imports the runtime (deead_ros) and adds what only a workstation runs: the model definitions and
their export (torch, transformers), training, evaluation, calibration, the simulator's data and the
closed loop. A vehicle installs deead_ros alone.
"""
from setuptools import find_packages, setup

PACKAGE = "deead_lab"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="deead_ros maintainers",
    maintainer_email="maintainers@deead-ros.dev",
    description="Workstation tools of deead_ros: export, training, evaluation, calibration, simulator data, "
                "closed loop.",
    license="Apache-2.0",
    extras_require={"ray": ["ray==2.60.0"]},
    entry_points={
        "console_scripts": [
            "deead_export = deead_lab.model.export_onnx:main",
            "deead_eval = deead_lab.eval:main",
            "deead_calibrate = deead_lab.calibrate:main",
            "deead_train = deead_lab.train:main",
            "deead_make_bag = deead_lab.make_bag:main",
        ],
    },
)

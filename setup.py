"""ament_python package: colcon-buildable on an apt ROS 2 install, pip-installable in a venv."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "squeeze_perception"

# One executable per node (ros2 run squeeze_perception <node>) plus the umbrella CLI.
NODES = [
    "passthrough_node",
    "bag_player_node",
    "squeezedet_node",
    "squeezeseg_node",
    "tracker_node",
]

setup(
    name=PACKAGE,
    version="0.1.0",
    package_dir={"": "src"},
    packages=find_packages("src"),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    description="SqueezeDet / SqueezeSeg ROS 2 perception stack",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [f"{n} = {PACKAGE}.nodes.{n}:main" for n in NODES]
        + [f"squeeze-perception = {PACKAGE}.cli:main"],
    },
)

"""ament_python package: colcon-buildable on an apt ROS 2 install, pip-installable in a venv.

`colcon build` (with or without --symlink-install) installs into share/squeeze_perception
everything the launch files need: launch/, config/, the trained weights and their model cards
(models/*.pt, *.md), and the bundled bags. paths.py finds them there.
"""
from glob import glob
from pathlib import Path

PACKAGE = "squeeze_perception"
HERE = Path(__file__).resolve().parent

# One executable per node (ros2 run squeeze_perception <node>) plus the umbrella CLI.
NODES = [
    "passthrough_node",
    "bag_player_node",
    "squeezedet_node",
    "squeezeseg_node",
    "tracker_node",
    "synetgy_node",
]

# Models and backends found by the registry through entry points (registry.py); another package
# adds its own under the same groups. registry.SOURCE_TREE_ENTRY_POINTS repeats these lines for a
# source tree without installed metadata (a test keeps both equal).
ENTRY_POINTS = {
    "squeeze_perception.models": [
        "detection = squeeze_perception.detection.models",
        "segmentation = squeeze_perception.segmentation.models",
        "accelerator = squeeze_perception.accelerator.models",
    ],
    "squeeze_perception.backends": [
        "torch = squeeze_perception.backends.torch_backend:TORCH",
        "torch-cuda = squeeze_perception.backends.torch_backend:TORCH_CUDA",
        "onnxruntime = squeeze_perception.backends.onnxruntime_backend:ONNXRUNTIME",
        "onnxruntime-int8 = squeeze_perception.backends.onnxruntime_int8:ONNXRUNTIME_INT8",
        "synetgy = squeeze_perception.backends.synetgy:SYNETGY",
        "auto = squeeze_perception.backends.auto:AUTO",
    ],
}

# Bags committed to the repository (bags/demo_drive, ~500 MB built by `make demo-drive`, is not
# installed: the launch file falls back to its committed preview).
BUNDLED_BAGS = ["demo_drive_preview", "kitti_real_4frames"]


def _files(pattern: str) -> list[str]:
    """Files matching `pattern`, relative to this directory (setuptools wants relative paths)."""
    return sorted(p for p in glob(pattern, root_dir=HERE) if (HERE / p).is_file())


def data_files() -> list[tuple[str, list[str]]]:
    share = f"share/{PACKAGE}"
    files = [
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (share, ["package.xml", "README.md"]),
        (f"{share}/launch", _files("launch/*.py")),
        (f"{share}/config", _files("config/*.yaml") + _files("config/*.rviz")),
        # + the int8 graphs of `offline quantize-int8` and their manifests (onnxruntime-int8 backend)
        (f"{share}/models", _files("models/*.pt") + _files("models/*.md") + _files("models/*.int8.onnx")
         + _files("models/*.int8.manifest.json")),
    ]
    for bag in BUNDLED_BAGS:
        # a rosbag2 folder is flat: metadata.yaml, the storage file(s), our README.md
        files.append((f"{share}/bags/{bag}", _files(f"bags/{bag}/*")))
    return files


if __name__ == "__main__":  # also true under colcon, pip and `python setup.py`
    from setuptools import find_packages, setup

    setup(
        name=PACKAGE,
        version="0.1.0",
        package_dir={"": "src"},
        packages=find_packages("src"),
        data_files=data_files(),
        install_requires=["setuptools"],
        zip_safe=False,  # paths.py locates share/ from the installed package's own file
        description="SqueezeDet / SqueezeSeg ROS 2 perception stack",
        license="Apache-2.0",
        entry_points={
            # nodes.entry installs the quiet Ctrl-C handling before the node module's imports
            "console_scripts": [f"{n} = {PACKAGE}.nodes.entry:{n}" for n in NODES]
            + [f"squeeze-perception = {PACKAGE}.cli:main"],
            **ENTRY_POINTS,
        },
    )

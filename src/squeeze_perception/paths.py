"""Where config, launch files, models and bags live, for a source checkout and a colcon install."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE = "squeeze_perception"
_SRC_ROOT = Path(__file__).resolve().parents[2]  # <repo>/src/squeeze_perception -> <repo>


def _prefix_share_dir() -> Path | None:
    """<prefix>/share/squeeze_perception of the install this module was loaded from.

    A plain `colcon build` (or `pip install .`) puts the code in
    <prefix>/lib/pythonX.Y/site-packages/squeeze_perception and the data files in
    <prefix>/share/squeeze_perception; this finds them with no environment set up.
    """
    for here in (Path(__file__).parent, Path(__file__).resolve().parent):
        if len(here.parents) < 4:
            continue
        share = here.parents[3] / "share" / PACKAGE  # site-packages / pythonX.Y / lib / <prefix>
        if (share / "package.xml").exists():
            return share
    return None


def _share_dir() -> Path | None:
    try:  # colcon / apt install, found through AMENT_PREFIX_PATH: share/squeeze_perception
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # noqa: BLE001 - not installed through ament, fall back to the checkout
        return None


def project_root() -> Path:
    """Where launch/, config/, models/ and bags/ are.

    In order: $SQUEEZE_PERCEPTION_ROOT; the checkout when running from source (package.xml two
    levels above this package: also a `colcon build --symlink-install`, whose Python package is
    the source tree); the share dir beside the installed package (plain `colcon build`); the
    ament index; the checkout location as a last resort.
    """
    env = os.environ.get("SQUEEZE_PERCEPTION_ROOT")
    if env:
        return Path(env)
    if (_SRC_ROOT / "package.xml").exists():
        return _SRC_ROOT
    share = _prefix_share_dir() or _share_dir()
    return share if share is not None else _SRC_ROOT


def cache_dir() -> Path:
    """Per-user cache for files made at run time (ONNX exports when models/ is read-only)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / PACKAGE


def config_dir() -> Path:
    return project_root() / "config"


def launch_dir() -> Path:
    return project_root() / "launch"


def models_dir() -> Path:
    return Path(os.environ.get("SQUEEZE_PERCEPTION_MODELS", project_root() / "models"))


def bags_dir() -> Path:
    return project_root() / "bags"


def shared_data_dir() -> Path:
    """../shared/data beside the checkout (evaluation data; may be absent on a user's clone)."""
    return Path(os.environ.get("SQUEEZE_PERCEPTION_SHARED_DATA", _SRC_ROOT.parent / "shared" / "data"))


def kitti_real_dir() -> Path:
    return shared_data_dir() / "kitti_real"

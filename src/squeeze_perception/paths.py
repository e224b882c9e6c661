"""Where config, launch files, models and bags live, for a source checkout and a colcon install."""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE = "squeeze_perception"
_SRC_ROOT = Path(__file__).resolve().parents[2]  # <repo>/src/squeeze_perception -> <repo>


def _share_dir() -> Path | None:
    try:  # colcon / apt install: share/squeeze_perception
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # noqa: BLE001 - not installed through ament, fall back to the checkout
        return None


def project_root() -> Path:
    """The checkout root when running from source (has package.xml), else the share dir."""
    env = os.environ.get("SQUEEZE_PERCEPTION_ROOT")
    if env:
        return Path(env)
    if (_SRC_ROOT / "package.xml").exists():
        return _SRC_ROOT
    share = _share_dir()
    return share if share is not None else _SRC_ROOT


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

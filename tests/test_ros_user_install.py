"""Works for a ROS user: what `colcon build` installs, where the code finds it, package.xml
against the imports, and the `squeeze-perception export` command a missing model names.

The colcon tests build the package (plain and --symlink-install) into a temporary workspace with
colcon from PyPI (colcon-core + colcon-ros, in requirements.txt) and run the installed package
from outside the checkout.
"""
from __future__ import annotations

import ast
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "squeeze_perception"
SHARE = f"share/{PACKAGE}"


def _setup_module() -> dict:
    return runpy.run_path(str(REPO / "setup.py"), run_name="inspect_setup")  # no setup() call


def _installed_share_files() -> set[str]:
    """Paths relative to share/squeeze_perception that setup.py's data_files install."""
    out = set()
    for dest, files in _setup_module()["data_files"]():
        if dest == SHARE or dest.startswith(SHARE + "/"):
            for f in files:
                out.add(str(Path(dest[len(SHARE):].lstrip("/")) / Path(f).name))
    return out


def _tracked(*patterns: str) -> set[str]:
    """Files of the checkout matching the patterns (git ls-files when it is a clone)."""
    try:
        listed = subprocess.run(["git", "ls-files", *patterns], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        listed = [str(p.relative_to(REPO)) for pat in patterns for p in REPO.glob(pat)]
    return {f for f in listed if (REPO / f).is_file()}


def _launch_needs() -> set[str]:
    """Files (relative to the package root) that launch/vehicle.launch.py reads by default."""
    text = (REPO / "launch" / "vehicle.launch.py").read_text()
    needs = {"launch/vehicle.launch.py", "launch/replay_check.launch.py", "package.xml"}
    needs |= {f"config/{name}" for name in re.findall(r'"(\w+\.(?:yaml|rviz))"', text)}
    from squeeze_perception.nodes import squeezedet_node, squeezeseg_node
    from squeeze_perception.registry import get_model, load_plugins

    load_plugins()
    for params in (squeezedet_node.PARAMS, squeezeseg_node.PARAMS):
        model = get_model(next(p.default for p in params if p.name == "model"))
        needs |= {f"models/{model.weights}", f"models/{Path(model.weights).stem}.md"}
    # default_bag(): bags/demo_drive (built, not installed) else the committed preview
    needs |= {f for f in _tracked("bags/demo_drive_preview")}
    return needs


# ------------------------------------------------------------------ setup.py data_files (no colcon)
def test_data_files_install_everything_the_launch_file_reads():
    installed = _installed_share_files()
    needs = _launch_needs()
    assert "config/squeezedet.yaml" in needs and "config/vehicle.rviz" in needs
    assert "models/squeezedet.pt" in needs and "bags/demo_drive_preview/metadata.yaml" in needs
    assert not needs - installed, f"not installed by setup.py: {sorted(needs - installed)}"


def test_data_files_install_every_committed_model_config_launch_file_and_bundled_bag():
    installed = _installed_share_files()
    bundled = _setup_module()["BUNDLED_BAGS"]
    wanted = _tracked("models/*.pt", "models/*.md", "config/*", "launch/*.py")
    for bag in bundled:
        files = _tracked(f"bags/{bag}")
        assert files, f"bundled bag {bag} is not in the checkout"
        wanted |= files
    assert not wanted - installed, f"not installed: {sorted(wanted - installed)}"
    assert not any(f.startswith("bags/demo_drive/") for f in installed)  # 500 MB, built locally


# ------------------------------------------------------------------ package.xml and rosdep keys
# rosdep keys from rosdep/python.yaml (ros/rosdistro) that resolve to Debian/Ubuntu packages.
VERIFIED_ROSDEP_KEYS = {"python3-numpy", "python3-scipy", "python3-sklearn", "python3-yaml", "python3-matplotlib",
                        "python3-tqdm", "python3-pil", "python3-tabulate", "python3-pytest",
                        "python3-psutil"}
# import name -> rosdep key, or "pip:<distribution>" for what requirements-pip-only.txt installs
THIRD_PARTY = {
    "numpy": "python3-numpy", "scipy": "python3-scipy", "sklearn": "python3-sklearn", "yaml": "python3-yaml",
    "matplotlib": "python3-matplotlib", "tqdm": "python3-tqdm", "PIL": "python3-pil",
    "tabulate": "python3-tabulate", "psutil": "python3-psutil",
    "torch": "pip:torch", "onnxruntime": "pip:onnxruntime", "onnx": "pip:onnx", "open3d": "pip:open3d-cpu",
    "filterpy": "pip:filterpy", "rosbags": "pip:rosbags", "rich": "pip:rich",
    "imageio_ffmpeg": "pip:imageio-ffmpeg",  # render's MP4 (bundled ffmpeg binary)
    "trackeval": "nodeps:trackeval",  # metrics only (squeeze-perception track eval); requirements-nodeps.txt
    # optional: imported lazily where used, a fallback without it, installed by nothing, named in docs/
    "pynvml": "optional:nvidia-ml-py",  # GPU energy from NVML (energy_gpu.py); docs/accelerator.md
}


def _is_ros_module(name: str) -> bool:
    return name in ("rclpy", "launch", "launch_ros", "ament_index_python") or name.endswith(("_msgs", "_interfaces"))


def _imported_modules() -> set[str]:
    names = set()
    for path in list((REPO / "src").rglob("*.py")) + list((REPO / "launch").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {PACKAGE, "__future__"}


def _exec_depends() -> set[str]:
    root = ET.parse(REPO / "package.xml").getroot()
    return {e.text.strip() for e in root if e.tag in ("exec_depend", "depend", "test_depend")}


def test_package_xml_declares_every_imported_ros_package():
    deps = _exec_depends()
    ros = {m for m in _imported_modules() if _is_ros_module(m)}
    assert {"rclpy", "ament_index_python", "sensor_msgs"} <= ros
    assert not ros - deps, f"imported but not in package.xml: {sorted(ros - deps)}"


def test_every_third_party_import_has_a_rosdep_key_or_a_pip_requirement():
    deps = _exec_depends()
    pip_only = {re.split(r"[=<>\[ ]", line)[0].lower()
                for line in (REPO / "requirements-pip-only.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    nodeps = (REPO / "requirements-nodeps.txt").read_text().lower()
    others = {m for m in _imported_modules() if not _is_ros_module(m)}
    unknown = others - set(THIRD_PARTY)
    assert not unknown, f"add these imports to THIRD_PARTY with their rosdep key or pip requirement: {unknown}"
    for module in others:
        key = THIRD_PARTY[module]
        if key.startswith("pip:"):
            assert key[4:] in pip_only, f"{module}: {key[4:]} missing from requirements-pip-only.txt"
        elif key.startswith("nodeps:"):
            assert key[7:] in nodeps
        elif key.startswith("optional:"):
            required = " ".join(f.read_text().lower() for f in REPO.glob("requirements*.txt"))
            assert key[9:] not in required, f"{key[9:]} is optional, not a requirement"
            assert key[9:] in (REPO / "docs" / "accelerator.md").read_text(), f"docs/ should say to install {key[9:]}"
        else:
            assert key in deps, f"{module}: rosdep key {key} missing from package.xml"


def test_package_xml_uses_only_rosdep_keys_that_resolve():
    python_keys = {d for d in _exec_depends() if d.startswith("python3-") or d.endswith("-pip")}
    assert not {d for d in python_keys if d.endswith("-pip")}, "pip-only packages belong in requirements-pip-only.txt"
    assert python_keys <= VERIFIED_ROSDEP_KEYS, sorted(python_keys - VERIFIED_ROSDEP_KEYS)
    assert "requirements-pip-only.txt" in (REPO / "package.xml").read_text()  # the comment says where they are


# ------------------------------------------------------------------ export command, missing-model message
@pytest.fixture()
def tiny_model(tmp_path, monkeypatch):
    import torch

    from squeeze_perception import registry
    from squeeze_perception.registry import ModelSpec

    monkeypatch.setenv("SQUEEZE_PERCEPTION_MODELS", str(tmp_path / "models"))
    (tmp_path / "models").mkdir()
    spec = ModelSpec("tiny_export", "detection", "torch.nn:Conv2d", "tiny_export.pt", (3, 8, 8), ("a",),
                     builder_kwargs={"in_channels": 3, "out_channels": 2, "kernel_size": 3, "padding": 1})
    registry.load_plugins()
    registry.register_model(spec)
    torch.manual_seed(0)
    torch.save({"state_dict": spec.build().state_dict(), "model": spec.name, "meta": {}},
               tmp_path / "models" / "tiny_export.pt")
    yield spec, tmp_path / "models"
    registry.MODELS.pop("tiny_export", None)


def test_export_writes_the_onnx_file_the_backend_loads(tiny_model, capsys):
    import numpy as np

    from squeeze_perception import cli
    from squeeze_perception.backends import OnnxRuntimeBackend, TorchBackend

    spec, models = tiny_model
    assert cli.main(["export", "tiny_export"]) == 0
    onnx = models / "tiny_export.onnx"
    assert onnx.exists() and "wrote" in capsys.readouterr().out
    mtime = onnx.stat().st_mtime_ns
    assert cli.main(["export", "tiny_export"]) == 0  # up to date: not rewritten
    assert "up to date" in capsys.readouterr().out and onnx.stat().st_mtime_ns == mtime
    assert cli.main(["export", "tiny_export", "--force"]) == 0 and onnx.stat().st_mtime_ns >= mtime
    x = np.random.default_rng(0).normal(size=(1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(OnnxRuntimeBackend(spec).infer(x), TorchBackend(spec).infer(x), rtol=1e-4, atol=1e-5)
    assert not list(models.glob(".*tmp"))  # no temporary file left behind
    out = models.parent / "elsewhere" / "t.onnx"
    assert cli.main(["export", "tiny_export", "--out", str(out)]) == 0 and out.exists()


def test_export_failures_exit_1_with_the_reason(tiny_model, capsys):
    from squeeze_perception import cli

    spec, models = tiny_model
    assert cli.main(["export", "no_such_model"]) == 1
    assert "unknown model 'no_such_model'" in capsys.readouterr().err
    (models / "tiny_export.pt").unlink()
    assert cli.main(["export", "tiny_export"]) == 1
    assert "tiny_export.pt' not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["export"])  # no model named


def test_missing_model_names_an_existing_command(tiny_model):
    from squeeze_perception import cli
    from squeeze_perception.backends import ModelLoadError, OnnxRuntimeBackend

    spec, models = tiny_model
    (models / "tiny_export.pt").unlink()
    with pytest.raises(ModelLoadError) as err:
        OnnxRuntimeBackend(spec)
    message = str(err.value)
    assert "tiny_export.pt' not found" in message and "share/squeeze_perception/models" in message
    command = re.search(r"`squeeze-perception (\w+) (\w+)`", message)
    assert command and command.group(1) in cli.COMMANDS and command.group(2) == "tiny_export"


def test_another_models_onnx_beside_the_weights_is_never_run_under_this_name(tiny_model):
    """models/<x>.onnx is named after the weights: the onnxruntime backend must not run a graph
    exported for another model (the torch backend refuses such weights; so must this one)."""
    from squeeze_perception.backends import ModelLoadError, OnnxRuntimeBackend, exported_model
    from squeeze_perception.registry import ModelSpec

    spec, models = tiny_model
    OnnxRuntimeBackend(spec)  # exports models/tiny_export.onnx, stamped with the model name
    assert exported_model(models / "tiny_export.onnx") == "tiny_export"
    other = ModelSpec("tiny_other", "detection", "torch.nn:Conv2d", "tiny_other.pt", (3, 8, 8), ("a",),
                      builder_kwargs={"in_channels": 3, "out_channels": 4, "kernel_size": 3, "padding": 1})
    with pytest.raises(ModelLoadError, match="do not match model 'tiny_other'"):
        OnnxRuntimeBackend(other, weights=str(models / "tiny_export.pt"))
    with pytest.raises(ModelLoadError, match="holds model 'tiny_export', not 'tiny_other'"):
        OnnxRuntimeBackend(other, weights=str(models / "tiny_export.onnx"))
    assert exported_model(models / "tiny_export.onnx") == "tiny_export"  # untouched


def test_read_only_models_folder_exports_to_the_user_cache(tiny_model, tmp_path, monkeypatch):
    """An apt install's share/ is not writable: the graph goes to ~/.cache/squeeze_perception."""
    import squeeze_perception.backends.common as common  # onnx_path_for looks os.access up there
    from squeeze_perception.backends import OnnxRuntimeBackend

    spec, models = tiny_model
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    real_access = os.access
    monkeypatch.setattr(common.os, "access",
                        lambda p, mode: False if Path(p) == models else real_access(p, mode))
    OnnxRuntimeBackend(spec)
    assert (tmp_path / "cache" / PACKAGE / "models" / "tiny_export.onnx").exists()
    assert not (models / "tiny_export.onnx").exists()


# ------------------------------------------------------------------ colcon build into a temp workspace
def _colcon() -> list[str]:
    try:
        import colcon_core  # noqa: F401
        import colcon_ros  # noqa: F401
    except ImportError:
        pytest.skip("colcon-core / colcon-ros not installed (pip install -r requirements.txt)")
    return [sys.executable, "-c", "import sys; from colcon_core.command import main; sys.exit(main())"]


def _build(tmp_path_factory, symlink: bool) -> Path:
    colcon = _colcon()
    ws = tmp_path_factory.mktemp("symlink_ws" if symlink else "plain_ws")
    src = ws / "src" / PACKAGE
    for rel in _tracked("."):  # what a user's clone holds, not .venv or build outputs
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    cmd = colcon + ["--log-base", str(ws / "log"), "build", "--base-paths", str(ws / "src"),
                    "--build-base", str(ws / "build"), "--install-base", str(ws / "install"),
                    "--event-handlers", "console_direct-"] + (["--symlink-install"] if symlink else [])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH")}
    result = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (ws / "install" / PACKAGE).is_dir(), f"colcon built nothing: {result.stdout[-2000:]}"
    return ws


@pytest.fixture(scope="module")
def plain_install(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, symlink=False)


@pytest.fixture(scope="module")
def symlink_install(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, symlink=True)


# What an installed package sees: run from outside the checkout with only the install's
# Python path, load the installed vehicle.launch.py and plan it (the compatible runner).
PROBE = textwrap.dedent("""
    import json, sys, tempfile
    from pathlib import Path
    import squeeze_perception, squeeze_perception.paths as paths
    from squeeze_perception.launch_runner.runner import load_launch_description, plan_launch
    from squeeze_perception.registry import PLUGIN_ERRORS, backend_names, get_backend, get_model, load_plugins
    import yaml

    load_plugins()
    ld = load_launch_description(paths.launch_dir() / "vehicle.launch.py")
    with tempfile.TemporaryDirectory() as tmp:
        plan = plan_launch(ld, {"rviz": "true"}, Path(tmp))
        params = {}
        for proc in plan.processes:
            merged = {}
            args = proc.cmd[proc.cmd.index("--ros-args") + 1:]
            for i, a in enumerate(args):
                if a == "--params-file":
                    for section in yaml.safe_load(Path(args[i + 1]).read_text()).values():
                        merged.update(section["ros__parameters"])
            params[proc.name] = merged
    det, seg = params["squeezedet_node"], params["squeezeseg_node"]
    print(json.dumps({
        "module": squeeze_perception.__file__, "root": str(paths.project_root()),
        "models": str(paths.models_dir()), "bag": params["bag_player_node"]["bag"],
        "rviz": [str(a) for a in plan.skipped],
        "backends": {b: get_backend(b).factory for b in backend_names()}, "plugin_errors": PLUGIN_ERRORS,
        "weights": [str(get_model(det["model"]).weights_path()), str(get_model(seg["model"]).weights_path())],
        "config": [str(paths.config_dir() / f) for f in ("squeezedet.yaml", "squeezeseg.yaml", "tracker.yaml",
                                                         "bag_player.yaml", "vehicle.rviz")],
    }))
""")


def _site_packages(install: Path) -> Path:
    found = list((install / PACKAGE / "lib").glob("python3*/site-packages"))
    assert found, f"no site-packages under {install / PACKAGE / 'lib'}"
    return found[0]


def _installed_env(install: Path, **extra: str) -> dict:
    """The environment after `source install/setup.sh` (what a ROS user does), from a clean start."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH", "SQUEEZE_PERCEPTION_ROOT", "SQUEEZE_PERCEPTION_MODELS")}
    dump = subprocess.run(["bash", "-c", f'. "{install}/setup.sh" && env -0'], env=env, capture_output=True,
                          timeout=120, check=True).stdout.decode()
    env = dict(line.split("=", 1) for line in dump.split("\0") if "=" in line)
    env.update(extra)
    return env


def _probe(ws: Path, tmp_path: Path) -> dict:
    env = _installed_env(ws / "install")
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_plain_colcon_install_has_everything_and_runs_from_share(plain_install, tmp_path):
    share = plain_install / "install" / PACKAGE / SHARE
    missing = sorted(f for f in _launch_needs() if not (share / f).is_file())
    assert not missing, f"missing from {share}: {missing}"
    assert (plain_install / "install" / PACKAGE / "share/ament_index/resource_index/packages" / PACKAGE).exists()
    for exe in ("squeezedet_node", "squeezeseg_node", "tracker_node", "bag_player_node", "squeeze-perception"):
        assert (plain_install / "install" / PACKAGE / "lib" / PACKAGE / exe).exists()
    seen = _probe(plain_install, tmp_path)
    assert seen["module"].startswith(str(plain_install / "install")), seen["module"]  # the installed copy
    assert Path(seen["root"]) == share and Path(seen["models"]) == share / "models"
    assert Path(seen["bag"]) == share / "bags" / "demo_drive_preview"
    # every backend through the installed entry points, each from its module of backends/
    assert not seen["plugin_errors"], seen["plugin_errors"]
    found = {b: f.split(":")[0] for b, f in seen["backends"].items()}
    for name, module in (("torch", "torch_backend"), ("torch-cuda", "torch_backend"),
                         ("onnxruntime", "onnxruntime_backend"), ("onnxruntime-int8", "onnxruntime_int8"),
                         ("synetgy", "synetgy"), ("auto", "auto")):
        assert found.get(name) == f"squeeze_perception.backends.{module}", found
    for f in seen["weights"] + seen["config"]:
        assert Path(f).is_file() and Path(f).is_relative_to(share), f


def test_symlink_colcon_install_has_everything(symlink_install, tmp_path):
    share = symlink_install / "install" / PACKAGE / SHARE
    missing = sorted(f for f in _launch_needs() if not (share / f).exists())
    assert not missing, f"missing from {share}: {missing}"
    assert (share / "models" / "squeezedet.pt").is_symlink()  # edits in the source show up at once
    seen = _probe(symlink_install, tmp_path)
    for f in [seen["bag"]] + seen["weights"] + seen["config"]:
        assert Path(f).exists(), f
        # the files come from the workspace (its source or its install), never from this checkout
        assert Path(f).resolve().is_relative_to(symlink_install.resolve()), f


def test_installed_executable_exports_and_names_the_command(plain_install, tmp_path):
    """The installed `squeeze-perception export` exists and a node with no weights says to run it."""
    install = plain_install / "install"
    env = _installed_env(install, SQUEEZE_PERCEPTION_MODELS=str(tmp_path))
    exe = install / PACKAGE / "lib" / PACKAGE / "squeeze-perception"
    result = subprocess.run([str(exe), "export", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and "--all" in result.stdout, result.stderr[-2000:]
    probe = ("from squeeze_perception.registry import get_backend, get_model, load_plugins\n"
             "load_plugins()\n"
             "try:\n    get_backend('onnxruntime').create(get_model('squeezedet'))\n"
             "except Exception as exc:\n    print(exc)\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert "squeeze-perception export squeezedet" in result.stdout, result.stdout + result.stderr[-2000:]

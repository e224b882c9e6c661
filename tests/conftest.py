"""Shared test set-up: ROS on loopback with a domain id unique to this test run."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before anything imports rclpy: never let DDS discovery leave the machine, and keep
# concurrent test runs (and a running `make run`) from seeing each other.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
# 60..99: below 102 (higher ids can collide with ephemeral ports on Linux), above the
# ids the developers use by hand (< 60).
os.environ.setdefault("ROS_DOMAIN_ID", str(60 + os.getpid() % 40))
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
try:  # Fast DDS large shared-memory segment so best-effort images/clouds arrive intact
    from squeeze_perception.launch_runner.dds import apply_dds_defaults

    apply_dds_defaults(os.environ)
except ImportError:
    pass

REPO = Path(__file__).resolve().parents[1]
KITTI_REAL = REPO.parent / "shared" / "data" / "kitti_real"


@pytest.fixture(scope="session")
def kitti_real() -> Path:
    if not KITTI_REAL.exists():
        pytest.skip(f"real KITTI sample data not present at {KITTI_REAL} (only in the dev workspace)")
    return KITTI_REAL


@pytest.fixture(scope="session")
def v1_weights(tmp_path_factory) -> str:
    """A SqueezeSeg checkpoint with random weights (seed 0), for pipeline and node tests whose
    network output is replaced or does not matter."""
    import torch

    from squeeze_perception.offline.segmentation.train import save_weights
    from squeeze_perception.segmentation.models import build_squeezeseg

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("seg") / "squeezeseg_random.pt"
    save_weights(build_squeezeseg().eval(), "squeezeseg", {"note": "random init for tests"}, path)
    return str(path)


@pytest.fixture(scope="session")
def real_bench_scans() -> list:
    """The real KITTI scans `seg bench` reads (object frames and raw drive scans), for the tests
    that compare a C kernel with its numpy definition on real data; skips where there are none."""
    from squeeze_perception.offline.segmentation.bench import bench_scans
    from squeeze_perception.paths import kitti_real_dir

    try:
        scans = bench_scans(kitti_real_dir())
    except (FileNotFoundError, OSError):
        scans = []
    if not scans:
        pytest.skip("no real KITTI scans beside this checkout")
    return scans


@pytest.fixture()
def rclpy_context():
    """An initialised rclpy context for in-process node tests."""
    import rclpy

    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    yield ctx
    if ctx.ok():
        rclpy.shutdown(context=ctx)


@pytest.fixture()
def ros():
    """rclpy's default context, for node tests that create nodes the usual way."""
    import rclpy

    rclpy.init()
    yield
    if rclpy.ok():
        rclpy.shutdown()


@pytest.fixture(autouse=True)
def _restore_stop_signal_handlers():
    """A node run in-process (main() in a test) installs its stop handlers and, when it
    finishes, ignores SIGINT/SIGTERM for good (shutdown.py says why). Restore them after every
    test so that no later test, nor the processes it starts, inherits that state."""
    import signal

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        if signal.getsignal(sig) != handler and handler is not None:
            signal.signal(sig, handler)


@pytest.fixture()
def one_torch_thread():
    """Small tensors on a shared 2-core machine: one intra-op torch thread (no OpenMP spinning)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

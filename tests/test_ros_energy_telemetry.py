"""A model node in-process publishes energy per frame and inference latency per stage in its
diagnostics (~/telemetry and /diagnostics carry the same DiagnosticArray), with the energy's
source: here the operation model (no readable RAPL in CI containers) or RAPL where readable.
squeezedet_node goes through the same node_base.record_inference with the Detector's
Prediction (not repeated here: a 1242x375 torch frame costs ~10 s on the shared CI machine)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from rclpy.parameter import Parameter

from squeeze_perception import interfaces as itf
from squeeze_perception.msgs_conv import array_to_cloud
from squeeze_perception.offline.segmentation.train import save_weights
from squeeze_perception.segmentation.models import build_squeezeseg


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def _values(node, stage) -> dict:
    return {kv.key: kv.value for kv in node.diagnostic_status(stage).values}


def _check_energy(values: dict) -> None:
    assert values["energy_source"] in ("model", "rapl")
    assert values["inference_latency"] == "measured"
    assert float(values["energy_mj_per_frame"]) > 0
    assert float(values["inference_ms_mean"]) > 0


def test_squeezeseg_node_reports_energy_per_frame_and_network_latency(ros, tmp_path):
    from squeeze_perception.nodes.squeezeseg_node import SqueezeSegNode

    torch.manual_seed(0)
    weights = tmp_path / "squeezeseg_random.pt"
    save_weights(build_squeezeseg().eval(), "squeezeseg", {"note": "random init for tests"}, weights)
    node = SqueezeSegNode(parameter_overrides=[Parameter(k, value=v) for k, v in {
        "num_threads": 1, "model": "squeezeseg", "backend": "torch", "weights": str(weights)}.items()])
    try:
        rng = np.random.default_rng(0)
        arr = np.zeros(3000, itf.POINT_DTYPE)
        arr["x"], arr["y"] = rng.uniform(5, 30, 3000), rng.uniform(-5, 5, 3000)
        arr["z"], arr["intensity"] = rng.uniform(-1.8, 0.5, 3000), rng.uniform(0, 1, 3000)
        node.on_points(array_to_cloud(arr, frame_id="velo_link"))
        assert node.stats["points"].errors == 0, node.stats["points"].last_error
        frame, network = _values(node, "points"), _values(node, "network")
        _check_energy(frame)
        _check_energy(network)
        assert float(frame["energy_mj_per_frame"]) == pytest.approx(float(network["energy_mj_per_frame"]), rel=1e-3)
        assert "energy_mj_per_frame" not in _values(node, "clustering")  # only the network is metered
    finally:
        node.destroy_node()

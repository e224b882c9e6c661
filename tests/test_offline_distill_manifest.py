"""Distill-Net removes channels that are dormant on the kept classes without changing the kept
outputs; model manifests record the weights' sha256 and a changed file is refused on load."""
from __future__ import annotations

import json

import pytest
import torch

from squeeze_perception.backends import ModelLoadError, load_state_dict, manifest_path
from squeeze_perception.offline.data import load_samples
from squeeze_perception.offline.distill import (DistillRun, KeptClassView, channel_activity, distilled_net,
                                                dormant_channels, run_distill)
from squeeze_perception.offline.manifest import load_model, model_card, read_manifest, save_model_with_manifest
from squeeze_perception.segmentation.searched_net import TINY_MACRO, SearchedSegNet

torch.set_num_threads(1)
CAR = 1


def _net_with_dead_channels():
    torch.manual_seed(0)
    net = SearchedSegNet(["k3_e3"] * len(TINY_MACRO.slots()), TINY_MACRO).eval()
    for layer in net.layers:  # half of every block's hidden channels never fire (BN output <= 0)
        n = layer.bn2.num_features
        layer.bn2.weight.data[: n // 2] = 0.0
        layer.bn2.bias.data[: n // 2] = -1.0
    return net


def test_dead_channels_are_removed_and_the_kept_class_outputs_do_not_change():
    net = _net_with_dead_channels()
    samples = load_samples("", 4, 16, 64, seed=1)
    dormant = dormant_channels(channel_activity(net, samples, (CAR,)), threshold=1e-6)
    for i, layer in enumerate(net.layers):
        n = layer.bn2.num_features
        assert dormant[i][: n // 2].all() and not dormant[i][n // 2:].all()
    # Removing exactly the dead channels leaves every kept output unchanged.
    dead = {i: torch.arange(layer.bn2.num_features) < layer.bn2.num_features // 2 for i, layer in enumerate(net.layers)}
    small = distilled_net(net, dead, (CAR,)).eval()
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in net.parameters())
    with torch.no_grad():
        x = samples.inputs[:2]
        original = net(x)
        torch.testing.assert_close(small(x), original[:, [0, CAR]], atol=1e-5, rtol=1e-4)
        assert KeptClassView(net, (CAR,))(x).shape == (2, 2, 16, 64)


def test_tiny_distill_run_reports_smaller_model_and_saves_a_verified_manifest(tmp_path):
    res = run_distill(DistillRun(tiny=True, out=str(tmp_path), threshold=0.3).shrink(), show_progress=False,
                      command="pytest")
    assert res["distilled"]["macs"] < res["original"]["macs"]
    assert res["distilled"]["params"] < res["original"]["params"]
    assert sum(res["removed_channels"].values()) > 0
    model = load_model(tmp_path / "squeezeseg_distilled_car_tiny.pt")
    assert model(torch.rand(1, 5, 16, 64)).shape == (1, 2, 16, 64)


def test_manifest_checksum_mismatch_is_refused_with_a_reason(tmp_path):
    net = SearchedSegNet(["k3_e1"] * len(TINY_MACRO.slots()), TINY_MACRO)
    path = save_model_with_manifest(
        net, tmp_path / "m.pt", name="m", task="segmentation",
        builder="squeeze_perception.segmentation.searched_net:build_searched_segnet",
        builder_kwargs={"choices": list(net.choices), "macro": net.macro.to_dict()}, input_shape=(5, 16, 64),
        classes=("unknown", "car"), metrics={"mIoU": 0.5}, latency_ms={"onnxruntime": 1.0}, command="pytest")
    manifest = read_manifest(path)
    assert manifest["weights"]["file"] == "m.pt" and len(manifest["weights"]["sha256"]) == 64
    assert manifest["params"] > 0 and manifest["flops"] == 2 * manifest["macs"]
    assert "| mIoU | 0.5000 |" in model_card(manifest)
    load_state_dict(path)  # matches
    torch.save({"state_dict": SearchedSegNet(["k3_e3"] * 5, TINY_MACRO).state_dict()}, path)  # swapped
    with pytest.raises(ModelLoadError, match="do not match their manifest"):
        load_state_dict(path)
    manifest_path(path).write_text("{not json")
    with pytest.raises(ModelLoadError, match="unreadable"):
        load_state_dict(path)
    manifest_path(path).unlink()  # no manifest: loads as before
    load_state_dict(path)
    assert json.loads(json.dumps(manifest))["command"] == "pytest"

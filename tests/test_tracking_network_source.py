"""`track eval --source network`: the networks' tables reach the tracker in its input format,
through the nodes' own code, and are cached per drive so a second run loads no network.

The scene is a hand-made 3-frame drive (a car-sized box of points driving away, a road ring);
the segmentation pipeline is the real one (random-init SqueezeSeg checkpoint, torch backend)
with its network call replaced by a stub whose output is known, and the detector is a stub
returning one car box and one implausible row (class 0), so the tracker-side checks are seen.
"""
from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch
from PIL import Image

from squeeze_perception import interfaces as itf
from squeeze_perception.cli import main as umbrella
from squeeze_perception.kitti.labels import write_velodyne_bin
from squeeze_perception.kitti.tracking import write_tracks_velo
from squeeze_perception.nodes import squeezedet_node, squeezeseg_node
from squeeze_perception.offline.segmentation.train import save_weights
from squeeze_perception.offline.tracking import network_source as ns
from squeeze_perception.segmentation.models import build_squeezeseg

FRAMES = 3
CAR_X0, CAR_SPEED = 10.0, 0.5  # m, m per frame


def _scan(rng, car_x: float) -> np.ndarray:
    car = np.c_[rng.uniform(car_x, car_x + 4, 5000), rng.uniform(-1, 1, 5000), rng.uniform(-1.5, 0, 5000)]
    az = rng.uniform(-np.pi, np.pi, 4000)
    r = rng.uniform(5, 30, 4000)
    road = np.c_[r * np.cos(az), r * np.sin(az), np.full(4000, -1.73)]
    pts = np.concatenate([car, road])
    return np.c_[pts, rng.uniform(0, 1, len(pts))].astype(np.float32)


@pytest.fixture()
def drive(tmp_path):
    """root/raw/<date>/<drive>_sync with scans, images and tracks_velo.csv (no calibration:
    the evaluation falls back to the KITTI camera)."""
    root = tmp_path / "synth"
    d = root / "raw" / "2026_01_01" / "2026_01_01_drive_0001_sync"
    (d / "velodyne_points" / "data").mkdir(parents=True)
    (d / "image_02" / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for k in range(FRAMES):
        x = CAR_X0 + CAR_SPEED * k
        write_velodyne_bin(d / "velodyne_points" / "data" / f"{k:010d}.bin", _scan(rng, x))
        Image.fromarray(np.zeros((375, 1242, 3), np.uint8)).save(d / "image_02" / "data" / f"{k:010d}.png")
        rows.append((k, 1, 1, x + 2, 0.0, -0.75, 4.0, 2.0, 1.5, 0.0, 5.0, 0.0, 5000))
    write_tracks_velo(d / "tracks_velo.csv", rows)
    return root, d


class Calls:
    def __init__(self):
        self.builds = {"segmentation": 0, "detection": 0}
        self.frames = {"segmentation": 0, "detection": 0}


@pytest.fixture()
def stub_networks(monkeypatch):
    """The real pipeline with a known network output, and a stub detector; counts their work."""
    calls = Calls()
    real_build = squeezeseg_node.build_pipeline

    def build_pipeline(p):
        calls.builds["segmentation"] += 1
        pipeline = real_build(p)

        def run_network(batch):  # 'car' for cells closer than 16 m ahead, else unknown
            calls.frames["segmentation"] += 1
            logits = np.zeros((len(batch), 4, 64, 512), np.float32)
            car = (batch[:, 4] > 0) & (batch[:, 4] < 16) & (batch[:, 0] > 8)
            logits[:, 1][car] = 10.0
            logits[:, 0][~car] = 10.0
            return logits
        pipeline.run_network = run_network
        return pipeline

    def build_detector(p):
        calls.builds["detection"] += 1

        def predict(rgb):
            calls.frames["detection"] += 1
            dets = np.array([(500.0, 150.0, 700.0, 250.0, 0.9, 1), (10.0, 10.0, 20.0, 20.0, 0.5, 0)],
                            dtype=itf.DETECTION_DTYPE)  # the second: class 0, which the tracker refuses
            return types.SimpleNamespace(detections=dets, latency_ms=1.0)
        return types.SimpleNamespace(input_width=1248, input_height=384, predict=predict)

    monkeypatch.setattr(squeezeseg_node, "build_pipeline", build_pipeline)
    monkeypatch.setattr(squeezedet_node, "build_detector", build_detector)
    return calls


def _source(v1_weights, cache_dir, **seg_overrides):
    seg = ns.segmentation_params("squeezeseg", "torch", v1_weights, num_threads=1)
    seg.update(crf=False, **seg_overrides)
    det = ns.detection_params("squeezedet", "torch", None, num_threads=1)
    return ns.NetworkSource(seg, det, cache_dir)


def test_network_source_gives_tracker_inputs_and_reuses_its_cache(drive, v1_weights, stub_networks, tmp_path):
    _, drive_dir = drive
    cache = tmp_path / "cache"
    source = _source(v1_weights, cache)
    assert source.pending_frames([(drive_dir, FRAMES)]) == 2 * FRAMES
    (seg, det), = source.outputs([(drive_dir, FRAMES)], progress=False)
    assert stub_networks.frames == {"segmentation": FRAMES, "detection": FRAMES}
    inputs = ns.tracker_inputs(seg, det, ns.tracker_table_params())

    assert len(inputs) == FRAMES
    for k, (inst, dets) in enumerate(inputs):
        assert inst.dtype == itf.INSTANCE_DTYPE and dets.dtype == itf.DETECTION_DTYPE
        # one car instance, its box fitted around the moving block of points
        assert len(inst) == 1 and inst["class_id"][0] == 1
        assert abs(inst["x"][0] - (CAR_X0 + CAR_SPEED * k + 2)) < 0.5 and abs(inst["y"][0]) < 0.5
        assert inst["num_points"][0] > 1000 and 0.0 <= inst["score"][0] <= 1.0
        # the detector published two rows; the tracker's plausibility check drops the class-0 one
        assert len(det.tables[k]) == 2 and len(dets) == 1 and dets["class_id"][0] == 1

    files = sorted(p.name for p in (cache / "2026_01_01" / drive_dir.name).glob("*.npz"))
    assert len(files) == 2 and files[0].startswith("det_squeezedet_torch_") and files[1].startswith(
        "seg_squeezeseg_torch_")

    # Second run, same settings: read from the cache, no network built or run.
    before = dict(stub_networks.frames)
    again = _source(v1_weights, cache)
    assert again.pending_frames([(drive_dir, FRAMES)]) == 0
    (seg2, det2), = again.outputs([(drive_dir, FRAMES)], progress=False)
    assert seg2.from_cache and det2.from_cache
    assert stub_networks.frames == before and again.computed_frames == {"segmentation": 0, "detection": 0}
    assert stub_networks.builds == {"segmentation": 1, "detection": 1}
    for a, b in zip(seg.tables, seg2.tables):
        np.testing.assert_array_equal(a, b)

    # A setting that changes the output is a different cache entry: segmentation runs again,
    # the detection cache (untouched settings) is still used.
    changed = _source(v1_weights, cache, cluster_min_points=30)
    changed.outputs([(drive_dir, FRAMES)], progress=False)
    assert changed.computed_frames == {"segmentation": FRAMES, "detection": 0}


def test_other_weights_are_another_cache_entry(drive, v1_weights, stub_networks, tmp_path):
    _, drive_dir = drive
    torch.manual_seed(1)
    other = tmp_path / "squeezeseg_other.pt"
    save_weights(build_squeezeseg().eval(), "squeezeseg", {"note": "other random init"}, other)
    a = _source(v1_weights, tmp_path / "cache")
    b = _source(str(other), tmp_path / "cache")
    scans = ns.NetworkSource.scans(drive_dir, FRAMES)
    assert a.cache_path(drive_dir, "segmentation", scans) != b.cache_path(drive_dir, "segmentation", scans)
    assert a.cache_path(drive_dir, "detection", ns.NetworkSource.images(drive_dir, FRAMES)) == \
        b.cache_path(drive_dir, "detection", ns.NetworkSource.images(drive_dir, FRAMES))


def test_missing_scans_are_refused_with_the_reason(drive, v1_weights, tmp_path):
    _, drive_dir = drive
    with pytest.raises(ns.NetworkSourceError, match="Velodyne scans"):
        _source(v1_weights, tmp_path / "cache").outputs([(drive_dir, FRAMES + 2)], progress=False)


def test_track_eval_source_network_end_to_end(drive, v1_weights, stub_networks, tmp_path, capsys):
    root, _ = drive
    out = tmp_path / "eval.json"
    argv = ["track", "eval", "--root", str(root), "--source", "network", "--seg-model", "squeezeseg",
            "--seg-backend", "torch", "--seg-weights", v1_weights, "--det-backend", "torch",
            "--cache-dir", str(tmp_path / "cache"), "--dropout-period", "0", "--out", str(out)]
    assert umbrella(argv) == 0
    text = capsys.readouterr().out
    assert "inputs (network): networks: SqueezeSeg pipeline 'squeezeseg'" in text and "| lidar_only |" in text
    data = json.loads(out.read_text())
    assert data["inputs"] == "network" and set(data["results"]) == {"lidar_only", "fusion", "fusion+camera_updates"}
    assert data["input_quality"]["instance_precision"] == 1.0 and data["input_quality"]["object_recall"] == 1.0
    assert data["results"]["lidar_only"]["all"]["frames"] == FRAMES
    frames_run = dict(stub_networks.frames)
    assert umbrella(argv) == 0  # the tracker variants again: the networks are not run again
    assert stub_networks.frames == frames_run
    assert "0 + 0 frames run now, 2/2 drive outputs from the cache" in capsys.readouterr().out

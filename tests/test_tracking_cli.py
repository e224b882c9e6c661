"""`squeeze-perception track eval|bench` smoke runs on tiny built-in data."""
from __future__ import annotations

import json

from squeeze_perception.cli import main as umbrella
from squeeze_perception.offline.tracking import evaluation as ev
from squeeze_perception.offline.tracking import scenarios as sc
from squeeze_perception.offline.tracking.cli import DEFAULT_CAMERA, load_config, run_sequence


def test_eval_builtin_writes_all_variants(tmp_path, capsys):
    out = tmp_path / "eval.json"
    rc = umbrella(["track", "eval", "--builtin", "1", "--builtin-objects", "3", "--builtin-frames", "30",
                   "--dropout-period", "10", "--dropout-frames", "3", "--out", str(out),
                   "--plot", str(tmp_path / "eval.png")])
    assert rc == 0
    data = json.loads(out.read_text())["results"]
    assert set(data) == {"lidar_only", "fusion", "fusion+camera_updates", "lidar_only [lidar dropout]",
                         "fusion [lidar dropout]", "fusion+camera_updates [lidar dropout]"}
    assert data["fusion"]["all"]["frames"] == 30
    assert "| lidar_only |" in capsys.readouterr().out
    assert (tmp_path / "eval.png").stat().st_size > 1000


def test_eval_without_data_explains_what_to_do(tmp_path, capsys):
    assert umbrella(["track", "eval", "--root", str(tmp_path)]) == 2
    assert "tracks_velo.csv" in capsys.readouterr().err


def test_bench_prints_a_row_per_object_count(capsys):
    assert umbrella(["track", "bench", "--objects", "1,3", "--frames", "15", "--warmup", "2"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| 1 |") or ln.startswith("| 3 |")]
    assert len(lines) == 2


def test_noiseless_input_tracks_nearly_perfectly():
    """Upper bound check of the whole path: perfect instances give MOTA close to 1."""
    seq = sc.random_traffic(6, 60, seed=3)
    inputs = [(sc.gt_to_instances(gt), None) for gt in seq.frames]
    tracks, _ = run_sequence(seq, inputs, DEFAULT_CAMERA, load_config(None), use_camera=False,
                             camera_updates=False)
    res = ev.evaluate([seq], [tracks])
    assert res["IDSW"] == 0 and res["CLR_FP"] == 0
    # only the first frames of each track (min_hits) are missed
    assert res["MOTA"] > 0.9


def test_set_overrides_tracker_parameters():
    cfg = load_config(None, ["car.motion_model=ctrv", "car.process_noise=[0.1, 0.1, 1.0, 0.02, 0.1]",
                             "chi2_gate=9.21"])
    assert cfg.for_class(1).motion_model == "ctrv" and cfg.for_class(1).process_noise[3] == 0.02
    assert cfg.chi2_gate == 9.21 and cfg.for_class(2).motion_model == "cv"

"""CLEAR MOT / HOTA through TrackEval on hand-built cases, and the ground-truth reader."""
from __future__ import annotations

import numpy as np
import pytest

from squeeze_perception import interfaces as itf
from squeeze_perception.offline.tracking import evaluation as ev
from squeeze_perception.offline.tracking import scenarios as sc

pytest.importorskip("trackeval")


def _tracks_from_gt(seq, id_of=lambda gt_id, k: gt_id, shift=0.0):
    out = []
    for k, gt in enumerate(seq.frames):
        t = np.zeros(len(gt), itf.TRACK_DTYPE)
        for name in ("class_id", "x", "y", "z", "length", "width", "height", "yaw"):
            t[name] = gt[name]
        t["x"] += shift
        t["track_id"] = [id_of(int(i), k) for i in gt["track_id"]]
        out.append(t)
    return out


def test_perfect_tracks_score_one():
    seq = sc.crossing_pair(cls=1, lateral_gap_m=2.0, n_frames=20)
    res = ev.evaluate([seq], [_tracks_from_gt(seq)])
    assert res["MOTA"] == pytest.approx(1.0) and res["HOTA"] == pytest.approx(1.0)
    assert res["IDSW"] == 0 and res["CLR_FP"] == 0 and res["MOTP_m"] == pytest.approx(0.0, abs=1e-6)


def test_swapped_ids_count_two_switches():
    seq = sc.crossing_pair(cls=1, lateral_gap_m=2.0, n_frames=20)
    swap = lambda gt_id, k: gt_id if k < 10 else 3 - gt_id  # noqa: E731
    res = ev.evaluate([seq], [_tracks_from_gt(seq, swap)])
    assert res["IDSW"] == 2 and res["MOTA"] == pytest.approx(1 - 2 / 40)
    assert res["HOTA"] < 0.9 and res["AssA"] < 0.6


def test_offset_converts_to_motp_in_metres_and_beyond_1m_is_a_miss():
    seq = sc.occlusion_gap(gap_frames=0, n_frames=10)
    res = ev.evaluate([seq], [_tracks_from_gt(seq, shift=0.5)])
    assert res["MOTP_m"] == pytest.approx(0.5, abs=1e-5) and res["MOTA"] == pytest.approx(1.0)
    res = ev.evaluate([seq], [_tracks_from_gt(seq, shift=1.5)])
    assert res["CLR_TP"] == 0 and res["CLR_FP"] == 10 and res["CLR_FN"] == 10


def test_missing_frames_and_fragmentation():
    seq = sc.occlusion_gap(gap_frames=0, n_frames=10)
    tracks = _tracks_from_gt(seq)
    for k in (4, 5):
        tracks[k]["x"] += 5.0  # the track wanders off: a miss and a false positive per frame
    res = ev.evaluate([seq], [tracks])
    assert res["CLR_FN"] == 2 and res["CLR_FP"] == 2 and res["Frag"] == 1
    assert res["MOTA"] == pytest.approx(0.6)
    # TrackEval quirk: a frame with no track at all does not break the match chain, so the
    # same gap left empty counts the misses but no fragmentation.
    tracks = _tracks_from_gt(seq)
    tracks[4] = tracks[5] = itf.empty(itf.TRACK_DTYPE)
    res = ev.evaluate([seq], [tracks])
    assert res["CLR_FN"] == 2 and res["MOTA"] == pytest.approx(0.8)


def test_dont_care_objects_and_out_of_region_tracks_are_not_false_positives():
    seq = sc.occlusion_gap(gap_frames=3, n_frames=10)  # frames 20.. hidden: none here, hide manually
    seq.frames[2]["num_points"] = 0
    tracks = _tracks_from_gt(seq)
    extra = np.zeros(1, itf.TRACK_DTYPE)
    extra["x"], extra["y"], extra["track_id"] = -20.0, 0.0, 99  # behind the car: outside the FOV
    tracks[3] = np.concatenate([tracks[3], extra])
    res = ev.evaluate([seq], [tracks])
    assert res["CLR_FP"] == 0 and res["CLR_FN"] == 0 and res["CLR_TP"] == 9


def test_class_filter_counts_wrong_class_as_miss():
    seq = sc.occlusion_gap(gap_frames=0, n_frames=5)
    tracks = _tracks_from_gt(seq)
    for t in tracks:
        t["class_id"] = 2
    assert ev.evaluate([seq], [tracks], class_id=1)["CLR_FN"] == 5
    assert ev.evaluate([seq], [tracks])["CLR_TP"] == 5


def test_read_tracks_velo(tmp_path):
    drive = tmp_path / "raw" / "2011_09_26" / "2011_09_26_drive_0001_sync"
    (drive / "velodyne_points").mkdir(parents=True)
    (drive / "tracks_velo.csv").write_text(
        "frame,track_id,class_id,x,y,z,length,width,height,yaw,vx,vy,num_points\n"
        "0,7,1,10,0,-1,4,1.7,1.5,0,5,0,300\n"
        "2,7,1,11,0,-1,4,1.7,1.5,0,5,0,280\n"
        "2,8,2,5,1,-1,0.8,0.6,1.7,0,0,1,90\n")
    (drive / "velodyne_points" / "timestamps.txt").write_text(
        "2011-09-26 13:02:25.000000000\n2011-09-26 13:02:25.100000000\n2011-09-26 13:02:25.250000000\n")
    [path] = ev.find_sequences(tmp_path)
    seq = ev.read_tracks_velo(path)
    assert len(seq) == 3 and [len(f) for f in seq.frames] == [1, 0, 2]
    np.testing.assert_allclose(seq.stamps_s, [0.0, 0.1, 0.25], atol=1e-6)
    assert seq.frames[2]["track_id"].tolist() == [7, 8] and seq.frames[2]["num_points"][1] == 90


def test_class_zero_ground_truth_is_dont_care():
    seq = sc.occlusion_gap(gap_frames=0, n_frames=5)
    for f in seq.frames:
        f["class_id"] = 0  # a van: no class of ours
    assert ev.evaluate([seq], [_tracks_from_gt(seq)])["CLR_FP"] == 0
    assert ev.evaluate([seq], [[itf.empty(itf.TRACK_DTYPE)] * 5])["CLR_FN"] == 0

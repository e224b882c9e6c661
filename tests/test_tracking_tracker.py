"""MultiObjectTracker on scripted scenarios: crossing pair, occlusion gap, dropout, bag loop."""
from __future__ import annotations

import numpy as np
import pytest

from squeeze_perception import interfaces as itf
from squeeze_perception.offline.tracking import scenarios as sc
from squeeze_perception.tracking.tracker import ClassParams, MultiObjectTracker, TrackerConfig


def _instances(gt: np.ndarray, rng: np.random.Generator, std: float = 0.1) -> np.ndarray:
    inst = sc.gt_to_instances(gt)
    inst["x"] += rng.normal(0, std, len(inst))
    inst["y"] += rng.normal(0, std, len(inst))
    return inst


def _id_map(seq, outputs) -> dict[int, set[int]]:
    """Ground-truth id -> set of track ids published within 1 m of it."""
    ids: dict[int, set[int]] = {}
    for gt, out in zip(seq.frames, outputs):
        for o in gt:
            if len(out) == 0:
                continue
            d = np.hypot(out["x"] - o["x"], out["y"] - o["y"])
            if d.min() < 1.0:
                ids.setdefault(int(o["track_id"]), set()).add(int(out["track_id"][d.argmin()]))
    return ids


def _run(seq, tracker=None, seed=0, skip=()):
    tracker = tracker or MultiObjectTracker()
    rng = np.random.default_rng(seed)
    outputs = []
    for k, (t, gt) in enumerate(zip(seq.stamps_s, seq.frames)):
        if k in skip:
            outputs.append(itf.empty(itf.TRACK_DTYPE))
            continue
        outputs.append(tracker.step(_instances(gt, rng), float(t)))
    return tracker, outputs


@pytest.mark.parametrize("seq", [sc.crossing_pair(cls=2, lateral_gap_m=0.6),
                                 sc.crossing_pair(cls=1, lateral_gap_m=2.0), sc.x_crossing()],
                         ids=["pedestrians", "cars", "x_crossing"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crossing_pair_keeps_ids(seq, seed):
    _, outputs = _run(seq, seed=seed)
    ids = _id_map(seq, outputs)
    assert len(ids[1]) == 1 and len(ids[2]) == 1, f"an id switched: {ids}"
    assert ids[1] != ids[2], "the two objects must have different tracks"
    # both are tracked through the whole sequence once confirmed, passing included
    assert all(len(out) == 2 for out in outputs[3:])


def test_velocity_estimate_of_crossing_pair():
    seq = sc.crossing_pair(cls=1, lateral_gap_m=2.0)
    _, outputs = _run(seq)
    last = outputs[-1]
    vy = np.sort(last["vy"])
    np.testing.assert_allclose(vy, [-8.0, 8.0], atol=0.6)


def test_occluded_object_survives_a_short_gap():
    seq = sc.occlusion_gap(gap_frames=5)
    tracker, outputs = _run(seq)
    ids = _id_map(seq, outputs)
    assert ids == {1: {1}}
    # while hidden it is published only for output_coast_s, then it is held but not shown
    coast = tracker.config.for_class(1).output_coast_s
    hidden_published = sum(len(outputs[k]) for k in range(20, 25))
    assert hidden_published == int(round(coast / 0.1))
    assert len(outputs[26]) == 1 and outputs[26]["track_id"][0] == 1


def test_long_occlusion_ends_the_track():
    seq = sc.occlusion_gap(gap_frames=15)  # 1.5 s > car max_coast_s 1.0
    _, outputs = _run(seq)
    ids = _id_map(seq, outputs)
    assert ids[1] == {1, 2}


def test_sensor_dropout_no_frames_at_all_keeps_the_track():
    # The LiDAR sends nothing for 0.6 s: the next step predicts across the whole gap.
    seq = sc.occlusion_gap(gap_frames=0)
    _, outputs = _run(seq, skip=range(20, 26))
    assert _id_map(seq, outputs) == {1: {1}}


def test_bag_loop_resets_and_restarts_ids():
    seq = sc.crossing_pair(cls=1, lateral_gap_m=2.0, n_frames=30)
    tracker, first = _run(seq)
    assert set(first[-1]["track_id"]) == {1, 2}
    rng = np.random.default_rng(5)
    out = tracker.step(_instances(seq.frames[0], rng), 0.0)  # time jumps back to the start
    assert tracker.resets == 1 and len(out) == 0 and len(tracker.tracks) == 2
    assert sorted(t.track_id for t in tracker.tracks) == [1, 2]
    tracker.step(_instances(seq.frames[1], rng), 0.1)
    out = tracker.step(_instances(seq.frames[2], rng), 0.2)
    assert sorted(out["track_id"]) == [1, 2]


def test_late_frame_is_ignored_not_a_reset():
    seq = sc.occlusion_gap(gap_frames=0, n_frames=10)
    tracker, outputs = _run(seq)
    before = tracker.step(sc.gt_to_instances(seq.frames[5]), float(seq.stamps_s[-1]) - 0.2)
    assert tracker.resets == 0 and tracker.late_frames == 1
    np.testing.assert_array_equal(before["track_id"], outputs[-1]["track_id"])


def test_new_track_is_tentative_until_min_hits():
    tracker = MultiObjectTracker()
    inst = sc.gt_to_instances(sc.occlusion_gap(n_frames=1).frames[0])
    outs = [len(tracker.step(inst, 0.1 * k)) for k in range(4)]
    assert outs == [0, 0, 1, 1]  # car min_hits = 3


def test_low_score_clutter_never_becomes_a_track():
    tracker = MultiObjectTracker()
    inst = sc.gt_to_instances(sc.occlusion_gap(n_frames=1).frames[0], score=0.35)  # >= birth, < confirm
    for k in range(20):
        out = tracker.step(inst, 0.1 * k)
    assert len(out) == 0 and len(tracker.tracks) == 1 and not tracker.tracks[0].confirmed


def test_class_votes_outweigh_a_flickering_label():
    seq = sc.occlusion_gap(gap_frames=0, n_frames=20)
    tracker = MultiObjectTracker()
    for k, (t, gt) in enumerate(zip(seq.stamps_s, seq.frames)):
        inst = sc.gt_to_instances(gt)
        if k % 4 == 3:
            inst["class_id"], inst["score"] = 3, 0.6  # every fourth frame says cyclist
        out = tracker.step(inst, float(t))
    assert out["class_id"].tolist() == [1] and tracker.tracks[0].track_id == 1


def test_published_table_fields():
    seq = sc.occlusion_gap(gap_frames=0, n_frames=15)
    _, outputs = _run(seq)
    row = outputs[-1][0]
    gt = seq.frames[-1][0]
    assert row["class_id"] == 1 and row["age"] == 15 and 0 < row["score"] <= 1
    assert abs(row["x"] - gt["x"]) < 0.5 and abs(row["length"] - gt["length"]) < 1e-3
    assert abs(np.cos(row["yaw"] - gt["yaw"])) > 0.99


def test_config_round_trips_through_flat_and_nested_params():
    cfg = TrackerConfig()
    flat = cfg.to_params()
    assert flat["car.gate_m"] == 4.0 and flat["pedestrian.motion_model"] == "cv"
    flat["car.gate_m"] = 5.5
    assert TrackerConfig.from_params(flat).for_class(1).gate_m == 5.5
    nested = {"chi2_gate": 9.21, "cyclist": {"min_hits": 2, "process_noise": [1, 1, 1, 1, 1, 1]}}
    cfg2 = TrackerConfig.from_params(nested)
    assert cfg2.chi2_gate == 9.21 and cfg2.for_class(3).min_hits == 2
    assert cfg2.for_class(3).process_noise == (1.0,) * 6 and cfg2.for_class(1).gate_m == 4.0


def test_invalid_config_is_refused_with_reason():
    with pytest.raises(ValueError, match="class 'car'.*motion_model"):
        TrackerConfig.from_params({"car.motion_model": "zigzag"})
    with pytest.raises(ValueError, match="at least 6"):
        MultiObjectTracker(TrackerConfig(classes={"car": ClassParams(process_noise=(1.0,))}))


def test_rows_with_nan_positions_are_ignored():
    tracker = MultiObjectTracker()
    inst = sc.gt_to_instances(sc.occlusion_gap(n_frames=1).frames[0])
    bad = inst.copy()
    bad["x"] = np.nan
    for k in range(3):
        out = tracker.step(np.concatenate([inst, bad]), 0.1 * k)
    assert len(out) == 1 and np.isfinite(out["x"]).all()


def test_ctrv_option_keeps_ids_on_the_x_crossing():
    cfg = TrackerConfig.from_params({"car.motion_model": "ctrv", "car.process_noise": [0.1, 0.1, 1.0, 0.02, 0.1],
                                     "car.initial_std": [0.3, 0.3, 5.0, 0.3, 0.2]})
    seq = sc.x_crossing()
    tracker, outputs = _run(seq, MultiObjectTracker(cfg))
    ids = _id_map(seq, outputs)
    assert len(ids[1]) == 1 and len(ids[2]) == 1 and ids[1] != ids[2]
    assert tracker.tracks[0].filter.model == "ctrv"
    np.testing.assert_allclose(np.hypot(outputs[-1]["vx"], outputs[-1]["vy"]), [8.0, 8.0], atol=0.5)

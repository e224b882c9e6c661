"""Class- and instance-level metrics on hand-computed cases; ground truth from the shared point
labeler (Van ignored); SemanticKITTI scans written by the test; strict JSON."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from squeeze_perception.offline.segmentation.evaluation import (SegCounts, counts_from_json, counts_to_json,
                                                                evaluate_object_frames, evaluate_semantic_kitti,
                                                                instance_true_positives, semantic_kitti_labels,
                                                                table_class_instance, table_confusion, table_iou)


def test_class_level_precision_recall_iou_by_hand():
    gt = np.array([1, 1, 1, 1, 0, 0, 2, 2])
    pred = np.array([1, 1, 1, 0, 1, 0, 2, 0])
    c = SegCounts()
    c.add_class_level(pred, gt)
    m = c.class_level()
    assert m["P"][1] == pytest.approx(3 / 4) and m["R"][1] == pytest.approx(3 / 4)
    assert m["IoU"][1] == pytest.approx(3 / 5)
    assert m["P"][2] == 1.0 and m["R"][2] == 0.5 and m["IoU"][2] == 0.5
    assert np.isnan(m["IoU"][3])  # no cyclist anywhere: undefined, not 0


def test_instance_matching_largest_ground_truth_first():
    # GT: car A (4 points), car B (2 points). Prediction: one merged instance over A and B's
    # first point, and a second instance on B's second point.
    gt = np.array([1, 1, 1, 1, 1, 1])
    gt_inst = np.array([0, 0, 0, 0, 1, 1])
    pred = np.array([1, 1, 1, 1, 1, 1])
    pred_inst = np.array([7, 7, 7, 7, 7, 8])
    tp = instance_true_positives(pred, pred_inst, gt, gt_inst)
    # A (largest) takes instance 7 (4 shared points); B can only take 8 (1 shared point).
    assert tp[1] == 5
    c = SegCounts()
    c.add_class_level(pred, gt)
    c.add_instance_level(pred, pred_inst, gt, gt_inst)
    il = c.instance_level()
    assert il["P"][1] == pytest.approx(5 / 6) and il["IoU"][1] == pytest.approx(5 / 6)
    # A predicted instance is used once: with one prediction covering all, B gets nothing.
    assert instance_true_positives(pred, np.zeros(6, int), gt, gt_inst)[1] == 4


def test_tables_have_the_thesis_layout_and_leave_classes_without_truth_out():
    c = SegCounts()
    # cyclist is predicted once but has no ground truth: IoU n/a (not 0) and out of the average;
    # its precision 0/1 still shows the false positive.
    c.add_class_level(np.array([1, 2, 3]), np.array([1, 2, 0]))
    text = table_class_instance([("w/ CRF", c)])
    assert "| car | w/ CRF | 100.0 | 100.0 | 100.0 | n/a | n/a | n/a | 1 pts |" in text
    assert "| cyclist | w/ CRF | 0.0 | n/a | n/a | n/a | n/a | n/a | 0 pts |" in text
    iou = table_iou([("SqueezeSeg", c)], reference={"SqueezeSeg": "64.6 / 21.8 / 25.1"})
    # average over car and pedestrian only: (100 + 100) / 2
    assert "| SqueezeSeg | 100.0 (1 pts) | 100.0 (1 pts) | n/a (0 pts) | 100.0 | 64.6 / 21.8 / 25.1 |" in iou
    d = counts_to_json(c)
    assert d["class"]["IoU"][3] is None and d["mean_iou"] == 1.0 and d["classes_without_gt"] == ["cyclist"]


def test_ground_truth_from_boxes_on_real_object_reduced(kitti_real):
    from squeeze_perception.kitti.calib import load_object_calib
    from squeeze_perception.kitti.labels import read_labels, read_velodyne_bin
    from squeeze_perception.kitti.pointwise import label_points

    root = kitti_real / "object_reduced" / "training"
    pts = read_velodyne_bin(root / "velodyne_reduced" / "000134.bin")
    labels = read_labels(root / "label_2" / "000134.txt")
    lab = label_points(pts, labels, load_object_calib(root / "calib" / "000134.txt"))
    cls, inst = lab.classes, lab.instances
    n_cars = sum(lab.type == "Car" for lab in labels)
    assert len(np.unique(inst[cls == 1])) <= n_cars and (cls == 1).sum() > 50
    assert (cls == 2).sum() > 0 and (cls == 3).sum() > 0
    assert np.all((inst >= 0) == (cls > 0))
    # Two DontCare regions in this frame: some points are ignored, none of them an object point.
    assert lab.ignored.any() and not (lab.ignored & (cls > 0)).any()
    # Object points sit above the lowest points of the scan (boxes rest on the road).
    assert np.median(pts[cls > 0, 2]) > np.percentile(pts[:, 2], 5)


def _label_at_velo(calib, centre_bottom_velo, size_lwh, kind):
    from squeeze_perception.kitti.labels import ObjectLabel

    loc = calib.velo_to_rect_points(np.array([centre_bottom_velo], float))[0]
    length, width, height = size_lwh
    heading = calib.velo_to_rect[:3, :3] @ np.array([1.0, 0.0, 0.0])
    ry = float(np.arctan2(-heading[2], heading[0]))
    return ObjectLabel(kind, 0.0, 0, 0.0, np.array([0, 0, 10, 10.0]), np.array([height, width, length]), loc, ry)


class StubPipeline:
    """Predicts car on points whose x lies in one of `car_x` ranges (one instance per range)."""

    def __init__(self, car_x, fov=lambda p: np.ones(len(p), bool)):
        self.car_x, self.fov = car_x, fov

    def process(self, pts):
        labels = np.zeros(len(pts), np.int32)
        inst = np.full(len(pts), -1, np.int32)
        for k, (lo, hi) in enumerate(self.car_x):
            sel = (pts[:, 0] >= lo) & (pts[:, 0] <= hi)
            labels[sel], inst[sel] = 1, k
        return SimpleNamespace(labels=labels, instances=inst, fov_mask=self.fov(pts))


def test_van_points_are_neither_car_nor_background_in_segmentation_ground_truth(tmp_path):
    from squeeze_perception.kitti.calib import write_object_calib
    from squeeze_perception.kitti.default_calib import kitti_calibration
    from squeeze_perception.kitti.labels import write_labels, write_velodyne_bin

    calib = kitti_calibration()
    for sub in ("velodyne", "label_2", "calib"):
        (tmp_path / sub).mkdir()
    car = _label_at_velo(calib, [8.0, 0.0, -1.73], (4.0, 1.8, 1.5), "Car")
    van = _label_at_velo(calib, [20.0, 0.0, -1.73], (5.0, 2.0, 2.0), "Van")
    write_labels(tmp_path / "label_2" / "000000.txt", [car, van])
    write_object_calib(tmp_path / "calib" / "000000.txt", calib)
    pts = np.array([[x, y, -1.0, 0.5] for x in (7.5, 8.0, 8.5) for y in (0.0,)]        # 3 car points
                   + [[x, 0.0, -1.0, 0.5] for x in (19.5, 20.0, 20.5)]                  # 3 van points
                   + [[x, 0.0, -1.0, 0.5] for x in (30.0, 35.0, 40.0, 45.0)], np.float32)  # 4 background
    write_velodyne_bin(tmp_path / "velodyne" / "000000.bin", pts)
    # Whether the network calls the van a car or background, car IoU is 3/3: the van's points
    # are left out of both prediction and ground truth. (Van as car would give 3/6 when the van
    # is called background; Van as background would give 3/6 when it is called car.)
    for car_x in ([(7, 9), (19, 21)], [(7, 9)]):
        counts = evaluate_object_frames(StubPipeline(car_x), tmp_path, progress=False)
        m = counts.class_level()
        assert counts.gt[1] == 3 and counts.tp[1] == 3 and counts.pred[1] == 3 and m["IoU"][1] == 1.0
        assert counts.gt.sum() == 7  # 10 points - 3 van points
        assert counts.gt_instances[1] == 1 and counts.instance_level()["IoU"][1] == 1.0



def test_object_frames_of_two_folders_add_up_into_one_set(tmp_path):
    """`seg eval`'s real_object set is 000000-000002 and 000134 from two folders: the counts of
    the second folder are added to the first's, not replacing them."""
    from squeeze_perception.kitti.calib import write_object_calib
    from squeeze_perception.kitti.default_calib import kitti_calibration
    from squeeze_perception.kitti.labels import write_labels, write_velodyne_bin

    calib = kitti_calibration()
    for folder, car_at in ((tmp_path / "a", 8.0), (tmp_path / "b", 12.0)):
        for sub in ("velodyne", "label_2", "calib"):
            (folder / sub).mkdir(parents=True)
        write_labels(folder / "label_2" / "000000.txt", [_label_at_velo(calib, [car_at, 0.0, -1.73],
                                                                        (4.0, 1.8, 1.5), "Car")])
        write_object_calib(folder / "calib" / "000000.txt", calib)
        pts = np.array([[car_at + dx, 0.0, -1.0, 0.5] for dx in (-0.5, 0.0, 0.5)]
                       + [[40.0, 0.0, -1.0, 0.5]], np.float32)
        write_velodyne_bin(folder / "velodyne" / "000000.bin", pts)
    stub = StubPipeline([(7, 9)])  # finds the car of folder a only
    first = evaluate_object_frames(stub, tmp_path / "a", progress=False)
    assert first.gt[1] == 3 and first.tp[1] == 3
    both = evaluate_object_frames(stub, tmp_path / "b", progress=False, counts=first)
    assert both is first and both.gt[1] == 6 and both.tp[1] == 3 and both.class_level()["IoU"][1] == 0.5
    assert both.gt_instances[1] == 2

def _write_semantic_kitti(root):
    seq = root / "sequences" / "08"
    (seq / "velodyne").mkdir(parents=True)
    (seq / "labels").mkdir()
    rows = [  # x, y, raw label (lower 16 bits class, upper 16 instance)
        (10.0, 0.0, 10 | 5 << 16), (10.5, 0.0, 10 | 5 << 16),   # parked car, instance 5
        (12.0, 1.0, 252 | 6 << 16),                              # moving car, instance 6
        (8.0, -2.0, 30 | 1 << 16), (8.0, -2.2, 254 | 1 << 16),   # person / moving person: pedestrian
        (-10.0, 0.0, 31 | 2 << 16),                              # bicyclist behind the car: full view only
        (15.0, 0.0, 40), (16.0, 0.0, 40), (-5.0, 3.0, 50),       # road, road, building: background
        (20.0, 0.0, 32 | 3 << 16),                               # motorcyclist: background
        (9.0, 0.0, 0), (9.5, 0.0, 1),                            # unlabeled, outlier: ignored
    ]
    pts = np.array([[x, y, -1.0, 0.3] for x, y, _ in rows], "<f4")
    pts.tofile(seq / "velodyne" / "000000.bin")
    np.array([r for _, _, r in rows], "<u4").tofile(seq / "labels" / "000000.label")
    other = root / "sequences" / "11" / "velodyne"  # a test sequence: scans without labels, skipped
    other.mkdir(parents=True)
    pts.tofile(other / "000000.bin")
    return rows


def test_semantic_kitti_labels_map_to_our_classes():
    raw = np.array([10 | 5 << 16, 252 | 5 << 16, 30, 254 | 1 << 16, 31 | 2 << 16, 253, 32, 40, 0, 1], np.uint32)
    cls, inst, ignored = semantic_kitti_labels(raw)
    assert cls.tolist() == [1, 1, 2, 2, 3, 3, 0, 0, 0, 0]
    assert ignored.tolist() == [False] * 8 + [True, True]
    # instance ids made unique per class (class * 65536 + instance); none where the id is 0
    assert inst.tolist() == [65536 + 5, 65536 + 5, -1, 2 * 65536 + 1, 3 * 65536 + 2, -1, -1, -1, -1, -1]


def test_semantic_kitti_full_and_front_views(tmp_path):
    _write_semantic_kitti(tmp_path)
    front = lambda p: (p[:, 0] > 0) & (np.abs(p[:, 1]) < p[:, 0])  # noqa: E731 - the 90 degree front view
    # Predict car on x in 9..13: the 3 car points, plus the unlabeled and outlier points (ignored,
    # so not false positives). Nothing else is predicted: pedestrian and cyclist are missed.
    pipes = {"full": StubPipeline([(9, 13)]), "front": StubPipeline([(9, 13)], front)}
    views = evaluate_semantic_kitti(pipes, tmp_path, progress=False)
    full, fr = views["full"], views["front"]
    # Full view: 10 counted points (12 - 2 ignored). car: tp 3, pred 3, gt 3 -> IoU 1; 2 car
    # instances (5 and 6). pedestrian: gt 2, tp 0 -> IoU 0. cyclist: gt 1 -> IoU 0. Mean (1+0+0)/3.
    assert full.gt.tolist() == [4, 3, 2, 1] and full.tp[1] == 3 and full.pred[1] == 3
    assert full.gt_instances.tolist() == [0, 2, 1, 1]
    assert full.mean_iou() == pytest.approx(1 / 3)
    # Front view drops the bicyclist (x = -10) and the building (x = -5): cyclist has no ground
    # truth -> n/a and out of the mean: (1 + 0) / 2.
    assert fr.gt.tolist() == [3, 3, 2, 0] and np.isnan(fr.class_level()["IoU"][3])
    assert fr.mean_iou() == pytest.approx(0.5)


def test_seg_eval_semantic_kitti_writes_strict_json(tmp_path, monkeypatch):
    from squeeze_perception.offline.segmentation import cli
    from squeeze_perception.segmentation import pipeline

    _write_semantic_kitti(tmp_path / "skitti")

    def fake_pipeline(name, backend="onnxruntime", fov="front", crf=True, num_threads=1):
        keep = (lambda p: (p[:, 0] > 0) & (np.abs(p[:, 1]) < p[:, 0])) if fov == "front" else \
            (lambda p: np.ones(len(p), bool))
        return StubPipeline([(9, 13)], keep)

    monkeypatch.setattr(pipeline, "SegmentationPipeline", fake_pipeline)
    out = tmp_path / "eval.json"
    assert cli.main(["eval", "--models", "stub_model", "--datasets", "semantic_kitti",
                     "--semantic-kitti", str(tmp_path / "skitti"), "--out", str(out)]) == 0

    def no_constants(token):
        raise AssertionError(f"invalid JSON token {token}")

    res = json.loads(out.read_text(), parse_constant=no_constants)["stub_model"]
    assert set(res) == {"semantic_kitti_front", "semantic_kitti_full"}
    assert res["semantic_kitti_front"]["class"]["IoU"][3] is None
    assert res["semantic_kitti_front"]["classes_without_gt"] == ["cyclist"]
    assert res["semantic_kitti_full"]["gt_instances"][1] == 2
    text = cli.render_tables(json.loads(out.read_text()))
    assert "| stub_model | 100.0 (n=2) | 0.0 (n=1) | n/a (n=0) | 50.0 |" in text


def test_counts_json_round_trip_and_rendered_tables():
    from squeeze_perception.offline.segmentation.cli import render_tables
    from squeeze_perception.offline.segmentation.evaluation import counts_from_json, counts_to_json

    c = SegCounts()
    c.add_class_level(np.array([1, 1, 0, 2]), np.array([1, 0, 0, 2]))
    c.add_instance_level(np.array([1, 1, 0, 2]), np.array([0, 0, -1, 1]), np.array([1, 0, 0, 2]),
                         np.array([5, -1, -1, 6]))
    back = counts_from_json(counts_to_json(c))
    for k in ("tp", "pred", "gt", "inst_tp"):
        np.testing.assert_array_equal(getattr(back, k), getattr(c, k))
    text = render_tables({"squeezeseg": {"real_lidar_2d": counts_to_json(c)}})
    assert "| car | squeezeseg | 50.0 | 100.0 | 50.0 | 50.0 | 100.0 | 50.0 | n=1 |" in text
    assert "30.0 / 2.1" in text  # the thesis figure printed beside ours


def test_model_card_states_the_protocol_counts_and_na(tmp_path, monkeypatch):
    """The card's IoU table: protocol line, n/a for a class without truth, true counts beside each IoU."""
    import torch

    from squeeze_perception.offline.segmentation import cli as seg_cli
    from squeeze_perception.offline.segmentation.evaluation import counts_to_json

    c = SegCounts()  # car: 1 true point predicted right and 1 false car point -> IoU 50; no pedestrian truth
    c.add_class_level(np.array([1, 1, 0, 3]), np.array([1, 0, 0, 3]))
    (tmp_path / "eval.json").write_text(json.dumps({"toy": {"real_lidar_2d": counts_to_json(c)}}))
    torch.save({"state_dict": {"w": torch.zeros(2)}, "model": "toy", "meta": {}}, tmp_path / "toy.pt")
    monkeypatch.setenv("SQUEEZE_PERCEPTION_MODELS", str(tmp_path))
    args = SimpleNamespace(models="toy", eval=str(tmp_path / "eval.json"))
    assert seg_cli._cards(args) == 0
    card = (tmp_path / "toy.md").read_text()
    assert "Protocol:" in card and "label_points" in card
    assert "| real_lidar_2d | 1 | 50.0 (1 pts) | n/a (0 pts) | 100.0 (1 pts) |" in card
    assert "ground stage" not in card
    g = SegCounts()  # after the ground stage the false car point is background: car IoU 100
    g.add_class_level(np.array([1, 0, 0, 3]), np.array([1, 0, 0, 3]))
    (tmp_path / "eval.json").write_text(json.dumps({"toy": {"real_lidar_2d": counts_to_json(c)},
                                                    "toy + ground removal": {"real_lidar_2d": counts_to_json(g)}}))
    assert seg_cli._cards(args) == 0
    card = (tmp_path / "toy.md").read_text()
    assert "| real_lidar_2d + ground stage | 1 | 100.0 (1 pts) | n/a (0 pts) | 100.0 (1 pts) |" in card
    assert "labels the node publishes" in card


def test_grids_scored_as_the_thesis_does_and_after_the_pipelines_ground_stage(tmp_path):
    """evaluate_grids: network + CRF labels (thesis protocol) and, with `with_ground`, the labels
    the node publishes, where object-labelled cells on the fitted road become background. A
    "network" that calls every cell car: the ground stage takes the road cells back, the car
    block stays."""
    from squeeze_perception.offline.segmentation.evaluation import evaluate_grids
    from squeeze_perception.segmentation.pipeline import SegmentationPipeline

    class EverythingIsCar(SegmentationPipeline):
        def __init__(self):  # the ground stage's settings only; no network is loaded
            self.ground_removal, self.ground_threshold, self.ground_max_slope = True, 0.15, 15.0

        def network_input(self, views):
            return np.stack([v.grid.transpose(2, 0, 1) for v in views])

        def run_network(self, batch):
            logits = np.zeros((len(batch), 4, *batch.shape[2:]), np.float32)
            logits[:, 1] = 1.0
            return logits

        def run_crf(self, logits, batch):
            return logits

    rng = np.random.default_rng(0)
    grid = np.zeros((64, 512, 6), np.float32)
    rows, cols = np.mgrid[20:64, 0:512]
    dist = 4.0 + (63 - rows) * 1.5  # road returns, farther up the image
    az = np.radians((cols - 256) * 90 / 512)
    grid[20:64, :, 0], grid[20:64, :, 1] = dist * np.cos(az), dist * np.sin(az)
    grid[20:64, :, 2] = -1.73 + rng.normal(0, 0.02, dist.shape)
    grid[20:64, :, 4] = dist
    grid[20:64, :, 3] = 0.3
    car = (slice(30, 44), slice(240, 272))  # a car block standing on the road: 1 m above it
    grid[car + (2,)] = -0.7
    grid[car + (5,)] = 1
    path = tmp_path / "000000.npy"
    np.save(path, grid)
    with_ground = SegCounts()
    plain = evaluate_grids(EverythingIsCar(), [path], progress=False, with_ground=with_ground)
    n_car, n_all = 14 * 32, 44 * 512
    assert plain.class_level()["P"][1] == pytest.approx(n_car / n_all)  # every road cell a false car
    assert with_ground.class_level()["R"][1] == pytest.approx(1.0)  # the car above the road stays
    assert with_ground.class_level()["P"][1] > 0.9
    assert evaluate_grids(EverythingIsCar(), [path], progress=False).tp.tolist() == plain.tp.tolist()


def test_camera_outcome_overlay_colours_each_point_by_what_the_evaluation_counts(tmp_path):
    """seg plots --outcome-models: a true car point predicted car is green, a background point
    predicted car red, a true pedestrian predicted background yellow; uncounted points (ignored,
    out of view) are not drawn."""
    from PIL import Image

    from squeeze_perception.offline.segmentation.plots import OUTCOME_RGB, plot_camera_outcomes

    image = np.zeros((60, 80, 3), np.uint8)
    uv = np.array([[10.0, 30.0], [30.0, 30.0], [50.0, 30.0], [70.0, 30.0]])
    counted = np.array([True, True, True, False])
    pred = np.array([1, 1, 0, 1])
    truth = np.array([1, 0, 2, 0])
    out = plot_camera_outcomes([("m", [(image, uv, counted, pred, truth)])], tmp_path / "o.png")
    img = np.asarray(Image.open(out).convert("RGB"))
    top = img.shape[0] - 60  # the title band above the image
    assert tuple(img[top + 30, 10]) == OUTCOME_RGB["right"]
    assert tuple(img[top + 30, 30]) == OUTCOME_RGB["false car"]
    assert tuple(img[top + 30, 50]) == OUTCOME_RGB["missed"]
    assert tuple(img[top + 30, 70]) == (0, 0, 0)  # not counted: not drawn


def test_confusion_matrix_by_hand_agrees_with_the_class_counts_and_survives_json():
    # true:      car car car ped ped cyc unknown unknown
    # predicted: car unk ped ped cyc unk car     unknown
    gt = np.array([1, 1, 1, 2, 2, 3, 0, 0])
    pred = np.array([1, 0, 2, 2, 3, 0, 1, 0])
    c = SegCounts()
    c.add_class_level(pred, gt)
    expected = np.zeros((4, 4), int)
    for t, p in zip(gt, pred):
        expected[t, p] += 1
    assert (c.confusion == expected).all()
    assert c.confusion[3, 0] == 1 and c.confusion[1, 2] == 1  # the cyclist went to background, a car to pedestrian
    # the diagonal is the true positives, rows the true points, columns the predicted points
    assert (np.diag(c.confusion) == c.tp).all()
    assert (c.confusion.sum(1) == c.gt).all() and (c.confusion.sum(0) == c.pred).all()
    back = counts_from_json(counts_to_json(c))
    assert (back.confusion == c.confusion).all()
    text = table_confusion([("m", back)])
    # car: 3 true points, one each called unknown, car and pedestrian
    assert "| m | car (3) | 33.3 | 33.3 | 33.3 | 0.0 |" in text
    assert "| m | cyclist (1) | 100.0 | 0.0 | 0.0 | 0.0 |" in text
    # results written before the matrix existed still load, and their table is left out
    old = counts_to_json(c)
    del old["confusion"]
    assert table_confusion([("old", counts_from_json(old))]).count("\n") == 1


def test_intensity_perturbations_change_only_the_intensity_column():
    from squeeze_perception.offline.segmentation.evaluation import perturb_intensity

    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.normal(size=(50, 3)), np.linspace(0.0, 0.98, 50)]).astype(np.float32)
    assert perturb_intensity(pts, "", rng) is pts
    shuffled = perturb_intensity(pts, "shuffle", rng)
    np.testing.assert_array_equal(shuffled[:, :3], pts[:, :3])
    assert sorted(shuffled[:, 3]) == sorted(pts[:, 3]) and not np.array_equal(shuffled[:, 3], pts[:, 3])
    assert np.all(perturb_intensity(pts, "const:0.3", rng)[:, 3] == np.float32(0.3))
    doubled = perturb_intensity(pts, "scale:2", rng)[:, 3]
    np.testing.assert_allclose(doubled, np.minimum(2 * pts[:, 3], 1.0))
    assert pts[0, 3] == 0.0 and pts[-1, 3] == np.float32(0.98)  # the input is left alone
    with pytest.raises(ValueError, match="unknown intensity perturbation"):
        perturb_intensity(pts, "scale", rng)


def test_logit_adjustment_reads_the_training_weights_and_moves_the_argmax_back(tmp_path):
    """`seg eval --logit-adjust TAU`: the class weights come from the checkpoint (a PDC model from
    the checkpoint it was calibrated from); tau 0 changes nothing, tau 1 takes back the whole
    log-weight head start a weighted loss gives a rare class."""
    import torch

    from squeeze_perception.offline.segmentation.evaluation import logit_adjustment, training_class_weights

    trained = {"config": {"class_weights": "0.29,1,4.5,6.8"}}
    assert training_class_weights(trained).tolist() == pytest.approx([0.29, 1, 4.5, 6.8])
    torch.save({"meta": trained}, tmp_path / "source.pt")
    calibrated = {"calibrated_from": "source.pt", "source_meta": {"steps": "10"}}
    assert training_class_weights(calibrated, tmp_path).tolist() == pytest.approx([0.29, 1, 4.5, 6.8])
    assert training_class_weights(calibrated) is None  # nowhere to look the source up
    assert training_class_weights({"config": {"class_weights": ""}}) is None
    w = np.array([0.29, 1, 4.5, 6.8])
    assert logit_adjustment(w, 0.0) == pytest.approx(np.zeros(4))
    # A cell the network calls cyclist by less than the cyclist's log weight (1.92) over background.
    logits = np.array([0.0, -1.0, -1.0, 1.5], np.float32)
    assert logits.argmax() == 3
    assert (logits + logit_adjustment(w, 1.0)).argmax() == 0
    assert (logits + logit_adjustment(w, 0.25)).argmax() == 3  # a quarter of the head start: still cyclist


def test_logit_adjusted_pipeline_offsets_the_scores_every_argmax_reads():
    from squeeze_perception.offline.segmentation.evaluation import logit_adjusted_pipeline

    offsets = np.array([1.0, 0.0, -2.0, -3.0], np.float32)
    pl = logit_adjusted_pipeline(offsets, "squeezesegv2", backend="torch", crf=False)
    logits = np.zeros((1, 4, 2, 3), np.float32)
    out = pl.run_crf(logits, np.zeros((1, 5, 2, 3), np.float32))
    assert out[0, :, 1, 2].tolist() == offsets.tolist()
    scan = np.random.default_rng(0).uniform([-5, -20, -2, 0], [40, 20, 1, 1], (2000, 4)).astype(np.float32)
    # The whole-scan path reads the same scores: on a random cloud the untuned network calls hundreds
    # of points cyclist; 3 logits against the cyclist and 1 for background leave none.
    plain = logit_adjusted_pipeline(np.zeros(4, np.float32), "squeezesegv2", backend="torch", crf=False).process(scan)
    res = pl.process(scan)
    assert (plain.labels == 3).sum() > 100
    assert (res.labels == 3).sum() < (plain.labels == 3).sum() / 10

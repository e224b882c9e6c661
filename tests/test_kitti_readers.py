"""Writers and readers: synthetic frames round-trip through the KITTI layouts; real files load the same way."""
from __future__ import annotations

import numpy as np
import pytest

from squeeze_perception.kitti.calib import load_raw_calib
from squeeze_perception.kitti.checks import check_object_frame
from squeeze_perception.kitti.datasets import KittiObjectDataset, RawDrive, find_raw_drives, read_image, read_timestamps
from squeeze_perception.kitti.default_calib import kitti_calibration, write_raw_calib
from squeeze_perception.kitti.labels import KittiFormatError
from squeeze_perception.kitti.lidar_2d import read_lidar_2d, write_lidar_2d
from squeeze_perception.kitti.tracking import (TRACKS_VELO_COLUMNS, read_tracking_labels, read_tracks_velo,
                                               write_tracks_velo)
from squeeze_perception.offline.synth.generate import dataset_tasks, run_tasks
from squeeze_perception.offline.synth.lidar import KITTI_RECORDED_RANGE_M


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    run_tasks(dataset_tasks(root, seed=3, object_train=2, object_test=1, sequences=1, frames=3))
    return root


def test_object_layout_round_trip(tiny_dataset):
    train = KittiObjectDataset(tiny_dataset, "training")
    assert train.names == ["000000", "000001"] and len(KittiObjectDataset(tiny_dataset, "testing")) == 1
    frame = train[1]
    assert frame.image.shape == (375, 1242, 3) and frame.image.dtype == np.uint8
    assert frame.points.shape[1] == 4 and len(frame.points) > 50_000
    assert frame.point_labels.shape == (len(frame.points), 2)
    np.testing.assert_allclose(frame.calib.velo_to_image, kitti_calibration().velo_to_image, rtol=1e-9)
    checks = check_object_frame(frame.labels, frame.points, frame.calib, (1242, 375))
    for check in checks:
        assert check.bbox_in_image
        # Objects past the 80 m that KITTI's scans record are labelled (the camera sees them)
        # but have no returns, as in KITTI; every nearer one must have points inside its box.
        beyond_range = np.hypot(check.label.location[0], check.label.location[2]) > KITTI_RECORDED_RANGE_M - 1.0
        assert beyond_range or check.points_inside > 0, check
    assert any(c.points_inside > 0 for c in checks)
    lidar_2d = read_lidar_2d(tiny_dataset / "lidar_2d" / "train" / "000001.npy")
    assert lidar_2d.shape == (64, 512, 6)
    # The lidar_2d label channel agrees with the per-point labels of the same scan.
    cars_in_cells = (lidar_2d[..., 5] == 1).sum()
    assert (cars_in_cells > 0) == bool(np.any(frame.point_labels[:, 0] == 1))


def test_raw_layout_round_trip(tiny_dataset):
    drives = find_raw_drives(tiny_dataset)
    assert [d.name for d in drives] == ["2026_01_01_drive_0001_sync"]
    drive = RawDrive(drives[0])
    assert len(drive) == 3
    stamps = drive.timestamps()
    np.testing.assert_allclose(np.diff(stamps), 0.1, atol=1e-6)
    np.testing.assert_allclose(drive.timestamps("image_02"), stamps)
    np.testing.assert_allclose(drive.calib.velo_to_image, kitti_calibration().velo_to_image, rtol=1e-6)
    assert drive.image(2).shape == (375, 1242, 3) and drive.points(0).shape[1] == 4
    tracks = read_tracks_velo(drives[0] / "tracks_velo.csv")
    assert set(tracks["frame"]) <= {0, 1, 2} and set(tracks["class_id"]) <= {1, 2, 3}
    tracking = read_tracking_labels(drives[0] / "label_02.txt")
    ids = {t.track_id for t in tracking if t.label.type in ("Car", "Pedestrian", "Cyclist")}
    assert ids <= set(tracks["track_id"].tolist())
    # A tracked object's LiDAR point count equals the points carrying its instance id in that frame.
    labels0 = drive.point_labels(0)
    for row in tracks[tracks["frame"] == 0][:5]:
        assert row["num_points"] == np.sum(labels0[:, 1] == row["track_id"])
    # Velocities are relative to the ego car, so they match the motion of the boxes in velo_link.
    first, second = tracks[tracks["frame"] == 0], tracks[tracks["frame"] == 1]
    compared = 0
    for row in first:
        nxt = second[second["track_id"] == row["track_id"]]
        if len(nxt) and row["class_id"] == 1:
            moved = (np.array([nxt[0]["x"], nxt[0]["y"]]) - [row["x"], row["y"]]) / 0.1
            np.testing.assert_allclose(moved, [row["vx"], row["vy"]], atol=0.35)
            compared += 1
    assert compared > 0
    oxts = np.loadtxt(drives[0] / "oxts" / "data" / "0000000002.txt")
    assert oxts.shape == (30,)


def test_tracks_velo_and_lidar_2d_validation(tmp_path):
    rows = [(0, 5, 1, 10.0, -2.0, -0.9, 4.0, 1.7, 1.5, 0.1, 3.0, 0.0, 120)]
    write_tracks_velo(tmp_path / "t.csv", rows)
    back = read_tracks_velo(tmp_path / "t.csv")
    assert back.dtype.names == TRACKS_VELO_COLUMNS
    assert back[0]["track_id"] == 5 and back[0]["num_points"] == 120 and back[0]["x"] == pytest.approx(10.0)
    (tmp_path / "bad.csv").write_text("frame,id\n1,2\n")
    with pytest.raises(KittiFormatError):
        read_tracks_velo(tmp_path / "bad.csv")
    with pytest.raises(ValueError):
        write_lidar_2d(tmp_path / "x.npy", np.zeros((64, 512, 5)))
    np.save(tmp_path / "y.npy", np.zeros((32, 512, 6)))
    with pytest.raises(KittiFormatError):
        read_lidar_2d(tmp_path / "y.npy")


def test_raw_calibration_writer_matches_the_real_files(kitti_real, tmp_path):
    real = load_raw_calib(kitti_real / "raw" / "2011_09_26")
    write_raw_calib(tmp_path, real)
    mine = load_raw_calib(tmp_path)
    for name in ("P2", "P3", "R0_rect", "Tr_velo_to_cam", "Tr_imu_to_velo"):
        np.testing.assert_allclose(getattr(mine, name), getattr(real, name), rtol=1e-6, atol=1e-9)
    # The packaged copy equals the real 2011_09_26 calibration.
    np.testing.assert_allclose(kitti_calibration().velo_to_image, real.velo_to_image, rtol=1e-9)


def test_real_files_load_through_the_same_readers(kitti_real):
    objects = KittiObjectDataset(kitti_real, "training")
    assert objects.names == ["000000", "000001", "000002"]
    frame = objects[1]
    assert frame.image.shape == (375, 1242, 3) and len(frame.points) > 100_000 and frame.point_labels is None
    drive = RawDrive(kitti_real / "raw" / "2011_09_26" / "2011_09_26_drive_unknown_sfnd_sync")
    assert len(drive) == 4 and drive.points(0).shape[1] == 4
    stamps = read_timestamps(kitti_real / "raw" / "2011_09_26" / "2011_09_26_drive_0001_sync" / "velodyne_points"
                             / "timestamps.txt")
    assert len(stamps) == 108 and 0.09 < np.median(np.diff(stamps)) < 0.11
    for f in sorted((kitti_real / "lidar_2d").glob("*.npy")):
        assert read_lidar_2d(f).shape == (64, 512, 6)
    palette = read_image(kitti_real / "mmdet3d_tests" / "training" / "image_2" / "000007.png")
    assert palette.ndim == 3 and palette.shape[2] == 3


def test_synth_cli_writes_ready_last_and_stats_reads_the_result(tmp_path, capsys):
    from squeeze_perception.offline.synth.cli import main

    out = tmp_path / "ds"
    assert main(["--out", str(out), "--sequences", "0", "--object-train", "1", "--seed", "9"]) == 0
    assert (out / "READY").read_text().strip() == \
        f"squeeze-perception synth --out {out} --sequences 0 --object-train 1 --seed 9"
    assert len(KittiObjectDataset(out, "training")) == 1
    first = out / "object" / "training" / "velodyne" / "000000.bin"
    stamp = first.stat().st_mtime_ns
    assert main(["--out", str(out), "--sequences", "0", "--object-train", "2", "--seed", "9", "--skip-existing"]) == 0
    assert first.stat().st_mtime_ns == stamp and len(KittiObjectDataset(out, "training")) == 2
    capsys.readouterr()
    assert main(["stats", "--root", str(out), "--limit", "1", "--real", str(tmp_path / "none")]) == 0
    report = capsys.readouterr().out
    assert "points per scan" in report and "front 64x512 empty cells" in report

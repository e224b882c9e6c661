"""kitti2bag: raw and object layouts -> rosbag2, read back and checked field by field."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from rosbags.typesys import Stores, get_typestore
from scipy.spatial.transform import Rotation

from squeeze_perception.bag.source import BagSource
from squeeze_perception.kitti.calib import load_raw_calib
from squeeze_perception.offline import kitti2bag as k2b

TS = get_typestore(Stores.ROS2_KILTED)
P2 = np.array([[700.0, 0, 600, 45.0], [0, 700.0, 180, 0.0], [0, 0, 1, 0.0]])  # cam 2: baseline along x only
R_VELO = Rotation.from_euler("xyz", [-90, 0, -90], degrees=True).as_matrix()  # velo x fwd -> cam z fwd
T_VELO = np.array([0.01, -0.08, -0.27])
R_IMU = Rotation.from_euler("z", 2, degrees=True).as_matrix()
T_IMU = np.array([-0.8, 0.3, 0.8])


def _fmt(values) -> str:
    return " ".join(f"{v:.9e}" for v in np.asarray(values).reshape(-1))


def write_raw_calib(date_dir: Path) -> None:
    date_dir.mkdir(parents=True, exist_ok=True)
    (date_dir / "calib_cam_to_cam.txt").write_text(
        "calib_time: 09-Jan-2012 13:57:47\n"
        f"R_rect_00: {_fmt(np.eye(3))}\nP_rect_02: {_fmt(P2)}\nS_rect_02: 1.2e+01 6.0e+00\n")
    (date_dir / "calib_velo_to_cam.txt").write_text(f"R: {_fmt(R_VELO)}\nT: {_fmt(T_VELO)}\n")
    (date_dir / "calib_imu_to_velo.txt").write_text(f"R: {_fmt(R_IMU)}\nT: {_fmt(T_IMU)}\n")


def make_raw_drive(root: Path, frames: int = 3, timestamps: bool = True) -> tuple[Path, list, list]:
    """A tiny KITTI raw sync drive: 12x6 RGB images and 5-point scans."""
    date = root / "2011_09_26"
    drive = date / "2011_09_26_drive_0042_sync"
    write_raw_calib(date)
    (drive / "image_02" / "data").mkdir(parents=True)
    (drive / "velodyne_points" / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, scans = [], []
    for i in range(frames):
        img = rng.integers(0, 255, size=(6, 12, 3), dtype=np.uint8)
        PILImage.fromarray(img).save(drive / "image_02" / "data" / f"{i:010d}.png")
        pts = rng.normal(size=(5, 4)).astype(np.float32)
        pts.tofile(drive / "velodyne_points" / "data" / f"{i:010d}.bin")
        images.append(img)
        scans.append(pts)
    if timestamps:
        cam = [f"2011-09-26 13:02:2{5 + i}.{951199337 + i:09d}" for i in range(frames)]
        velo = [f"2011-09-26 13:02:2{5 + i}.{950000000 + i:09d}" for i in range(frames)]
        (drive / "image_02" / "timestamps.txt").write_text("\n".join(cam) + "\n")
        (drive / "velodyne_points" / "timestamps.txt").write_text("\n".join(velo) + "\n")
    return drive, images, scans


def read_bag(path: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    with BagSource(path) as bag:
        for m in bag.messages():
            out.setdefault(m.topic, []).append((m.timestamp_ns, TS.deserialize_cdr(m.data, m.msgtype)))
    return out


def stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def test_parse_kitti_timestamp_is_exact_to_the_nanosecond():
    # 2011-09-26 13:02:25 UTC = 1317042145 s since the epoch.
    assert k2b.parse_kitti_timestamp("2011-09-26 13:02:25.951199337") == 1317042145_951199337
    assert k2b.parse_kitti_timestamp("2011-09-26 13:02:25.5") == 1317042145_500000000


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_raw_drive_round_trip(tmp_path, storage):
    drive, images, scans = make_raw_drive(tmp_path / "in")
    out = tmp_path / f"bag_{storage}"
    summary = k2b.convert(drive, out, storage=storage, progress=False)
    assert summary.frames == 3 and summary.layout == "raw"
    msgs = read_bag(out)
    assert set(msgs) == {k2b.TOPIC_IMAGE, k2b.TOPIC_CAMERA_INFO, k2b.TOPIC_POINTS, k2b.TOPIC_TF_STATIC}
    cam_ts = [1317042145_951199337 + i * 1_000_000_001 for i in range(3)]
    velo_ts = [1317042145_950000000 + i * 1_000_000_001 for i in range(3)]

    for i, (t, img) in enumerate(msgs[k2b.TOPIC_IMAGE]):
        assert t == stamp_ns(img.header) == cam_ts[i]
        assert (img.encoding, img.width, img.height, img.step, img.header.frame_id) == ("rgb8", 12, 6, 36,
                                                                                       "camera_color_left")
        np.testing.assert_array_equal(np.asarray(img.data).reshape(6, 12, 3), images[i])
    for i, (t, cloud) in enumerate(msgs[k2b.TOPIC_POINTS]):
        assert t == stamp_ns(cloud.header) == velo_ts[i]
        assert [f.name for f in cloud.fields] == ["x", "y", "z", "intensity"]
        assert (cloud.point_step, cloud.width, cloud.header.frame_id) == (16, 5, "velo_link")
        np.testing.assert_array_equal(np.frombuffer(bytes(cloud.data), "<f4").reshape(-1, 4), scans[i])
    info = msgs[k2b.TOPIC_CAMERA_INFO][0][1]
    np.testing.assert_allclose(info.p.reshape(3, 4), P2)
    np.testing.assert_allclose(info.k.reshape(3, 3), P2[:, :3])
    assert (info.width, info.height) == (12, 6)


def test_static_transforms_compose_to_the_calibration(tmp_path):
    drive, _, _ = make_raw_drive(tmp_path / "in", frames=1)
    msgs = read_bag(k2b.convert(drive, tmp_path / "bag", progress=False).output)
    assert len(msgs[k2b.TOPIC_TF_STATIC]) == 1
    poses = {}
    for tf in msgs[k2b.TOPIC_TF_STATIC][0][1].transforms:
        q, t = tf.transform.rotation, tf.transform.translation
        pose = np.eye(4)
        pose[:3, :3] = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
        pose[:3, 3] = [t.x, t.y, t.z]
        poses[(tf.header.frame_id, tf.child_frame_id)] = pose
    assert set(poses) == {("base_link", "imu_link"), ("imu_link", "velo_link"), ("velo_link", "camera_color_left")}
    # A Velodyne point expressed in imu_link must equal Tr_imu_to_velo^-1 applied to it.
    p_velo = np.array([5.0, 1.0, -0.5, 1.0])
    imu_to_velo = np.eye(4)
    imu_to_velo[:3, :3], imu_to_velo[:3, 3] = R_IMU, T_IMU
    np.testing.assert_allclose(poses[("imu_link", "velo_link")] @ p_velo, np.linalg.solve(imu_to_velo, p_velo),
                               atol=1e-9)
    # A point on camera 2's optical axis projects to the principal point.
    cam = poses[("velo_link", "camera_color_left")]
    point_on_axis = cam @ np.array([0.0, 0.0, 10.0, 1.0])
    uv, _ = load_raw_calib(drive.parent).project_velo(point_on_axis[None, :3])
    np.testing.assert_allclose(uv[0], P2[:2, 2], atol=1e-6)


def test_missing_timestamps_fall_back_to_10_hz(tmp_path):
    drive, _, _ = make_raw_drive(tmp_path / "in", frames=3, timestamps=False)
    summary = k2b.convert(drive, tmp_path / "bag", progress=False)
    assert "10 Hz" in summary.timing_note
    stamps = [t for t, _ in read_bag(summary.output)[k2b.TOPIC_POINTS]]
    assert np.diff(stamps).tolist() == [100_000_000, 100_000_000]


def test_object_layout(tmp_path):
    split = tmp_path / "object" / "training"
    for sub in ("image_2", "velodyne", "calib", "label_2"):
        (split / sub).mkdir(parents=True)
    for i, fx in enumerate((700.0, 720.0)):
        PILImage.fromarray(np.full((4, 8, 3), i, np.uint8)).save(split / "image_2" / f"{i:06d}.png")
        np.ones((3, 4), np.float32).tofile(split / "velodyne" / f"{i:06d}.bin")
        p2 = P2.copy()
        p2[0, 0], p2[0, 3] = fx, P2[0, 3] / P2[0, 0] * fx  # other intrinsics, same baseline
        tr = np.hstack([R_VELO, T_VELO[:, None]])
        (split / "calib" / f"{i:06d}.txt").write_text(
            f"P2: {_fmt(p2)}\nR0_rect: {_fmt(np.eye(3))}\nTr_velo_to_cam: {_fmt(tr)}\n")
    summary = k2b.convert(split, tmp_path / "bag", progress=False)
    assert summary.layout == "object" and summary.frames == 2
    msgs = read_bag(summary.output)
    assert [info.k[0] for _, info in msgs[k2b.TOPIC_CAMERA_INFO]] == [700.0, 720.0]
    # Same extrinsics in both frames: the static tree is written once.
    assert len(msgs[k2b.TOPIC_TF_STATIC]) == 1


def _no_partial_left(parent: Path, name: str) -> bool:
    return not (parent / name).exists() and not list(parent.glob(f".{name}.partial-*"))


def test_corrupt_scan_names_the_file_and_leaves_no_bag(tmp_path):
    drive, _, _ = make_raw_drive(tmp_path / "in")
    bad = drive / "velodyne_points" / "data" / "0000000002.bin"
    bad.write_bytes(b"\x00" * 10)  # not a multiple of 16 bytes
    with pytest.raises(k2b.Kitti2BagError, match="0000000002.bin"):
        k2b.convert(drive, tmp_path / "out" / "bag", progress=False)
    assert _no_partial_left(tmp_path / "out", "bag")


def test_corrupt_image_and_missing_calibration_name_the_file(tmp_path, capsys):
    drive, _, _ = make_raw_drive(tmp_path / "in")
    (drive / "image_02" / "data" / "0000000001.png").write_bytes(b"not a png")
    assert k2b.main([str(drive), "-o", str(tmp_path / "bag"), "--quiet"]) == 1
    assert "0000000001.png" in capsys.readouterr().err
    assert _no_partial_left(tmp_path, "bag")

    (drive.parent / "calib_velo_to_cam.txt").unlink()
    with pytest.raises(k2b.Kitti2BagError, match="calib_velo_to_cam.txt"):
        k2b.convert(drive, tmp_path / "bag", progress=False)
    assert _no_partial_left(tmp_path, "bag")


def test_existing_output_is_never_overwritten(tmp_path):
    drive, _, _ = make_raw_drive(tmp_path / "in", frames=1)
    (tmp_path / "bag").mkdir()
    (tmp_path / "bag" / "keep.txt").write_text("x")
    with pytest.raises(k2b.Kitti2BagError, match="exists"):
        k2b.convert(drive, tmp_path / "bag", progress=False)
    assert (tmp_path / "bag" / "keep.txt").read_text() == "x"


def test_real_sfnd_frames(kitti_real, tmp_path):
    drive = kitti_real / "raw" / "2011_09_26" / "2011_09_26_drive_unknown_sfnd_sync"
    summary = k2b.convert(drive, tmp_path / "real", progress=False)
    assert summary.counts == {k2b.TOPIC_TF_STATIC: 1, k2b.TOPIC_CAMERA_INFO: 4, k2b.TOPIC_IMAGE: 4,
                              k2b.TOPIC_POINTS: 4}
    msgs = read_bag(summary.output)
    img = msgs[k2b.TOPIC_IMAGE][0][1]
    assert (img.width, img.height) == (1242, 375)
    for i, (_, cloud) in enumerate(msgs[k2b.TOPIC_POINTS]):
        raw = np.fromfile(drive / "velodyne_points" / "data" / f"{i:010d}.bin", "<f4")
        assert cloud.width * 4 == raw.size > 100_000
        np.testing.assert_array_equal(np.frombuffer(bytes(cloud.data), "<f4"), raw)


def test_committed_real_bag_matches_the_converter(kitti_real):
    """bags/kitti_real_4frames is what kitti2bag makes from the real frames (same clouds and stamps)."""
    repo_bag = Path(__file__).resolve().parents[1] / "bags" / "kitti_real_4frames"
    drive = kitti_real / "raw" / "2011_09_26" / "2011_09_26_drive_unknown_sfnd_sync"
    msgs = read_bag(repo_bag)
    assert [stamp_ns(c.header) for _, c in msgs[k2b.TOPIC_POINTS]] == [
        1317038400_000000000 + i * 100_000_000 for i in range(4)]
    raw = np.fromfile(drive / "velodyne_points" / "data" / "0000000003.bin", "<f4")
    np.testing.assert_array_equal(np.frombuffer(bytes(msgs[k2b.TOPIC_POINTS][3][1].data), "<f4"), raw)


def test_timestamps_are_looked_up_by_frame_number(tmp_path):
    """A drive holding frames 1 and 2 only takes lines 2 and 3; one sensor's file serves both."""
    drive, _, _ = make_raw_drive(tmp_path / "in", frames=3)
    (drive / "image_02" / "data" / "0000000000.png").unlink()
    (drive / "velodyne_points" / "data" / "0000000000.bin").unlink()
    (drive / "image_02" / "timestamps.txt").unlink()
    summary = k2b.convert(drive, tmp_path / "bag", progress=False)
    assert "only velodyne_points" in summary.timing_note
    msgs = read_bag(summary.output)
    expected = [1317042145_950000000 + i * 1_000_000_001 for i in (1, 2)]
    assert [t for t, _ in msgs[k2b.TOPIC_POINTS]] == expected
    assert [t for t, _ in msgs[k2b.TOPIC_IMAGE]] == expected


def test_too_short_timestamp_file_names_the_file(tmp_path):
    drive, _, _ = make_raw_drive(tmp_path / "in", frames=3)
    (drive / "image_02" / "timestamps.txt").write_text("2011-09-26 13:02:25.951199337\n")
    with pytest.raises(k2b.Kitti2BagError, match=r"image_02/timestamps.txt.*frame 2"):
        k2b.convert(drive, tmp_path / "bag", progress=False)
    assert _no_partial_left(tmp_path, "bag")

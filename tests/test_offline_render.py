"""`squeeze-perception render` on the first scans of the bundled real KITTI bag: PNG frames with the
camera boxes and labelled points actually drawn, a video file with one frame per scan, per-stage
times in render.json; plus the box geometry and the GIF fallback on their own."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from squeeze_perception.offline import render as rd

REPO = Path(__file__).resolve().parents[1]
BAG = REPO / "bags" / "kitti_real_4frames"
CAR_RGB = tuple(int(round(c * 255)) for c in rd.CLASS_COLOURS[1])


def test_box_corners_follow_yaw():
    corners = rd.box_corners_bev(10.0, 2.0, 4.0, 2.0, math.pi / 2)
    # length along +y after a 90 deg turn: corners span y 0..4 and x 9..11
    assert corners[:, 0].min() == pytest.approx(9.0) and corners[:, 0].max() == pytest.approx(11.0)
    assert corners[:, 1].min() == pytest.approx(0.0) and corners[:, 1].max() == pytest.approx(4.0)


def test_sensor_frames_pair_each_scan_with_its_image():
    frames = rd.read_sensor_frames(BAG, max_frames=1, start=1)
    assert len(frames) == 1
    [f] = frames
    assert f.stamp_ns == 1317038400100000000  # the second scan (10 Hz from 12:00:00)
    assert f.points.shape[1] == 4 and len(f.points) > 100_000
    assert f.image is not None and f.image.shape == (375, 1242, 3)
    assert f.camera_p is not None and f.image_size == (1242, 375)


def test_gif_when_no_mp4_writer(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # as if not installed
    monkeypatch.setattr(rd.shutil, "which", lambda name: None)  # and no ffmpeg on PATH
    pngs = []
    for i, shade in enumerate((0, 255)):
        p = tmp_path / f"frame_{i:04d}.png"
        Image.fromarray(np.full((8, 8, 3), shade, np.uint8)).save(p)
        pngs.append(p)
    video, how = rd.write_video(pngs, tmp_path, fps=10)
    assert video.suffix == ".gif" and "GIF" in how
    assert Image.open(video).n_frames == 2


def test_mp4_with_the_bundled_ffmpeg(tmp_path):
    """imageio-ffmpeg (requirements-pip-only.txt) brings an ffmpeg binary: an H.264 MP4 with one
    frame per PNG, odd sizes padded to even."""
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    from PIL import Image

    pngs = []
    for i in range(3):
        p = tmp_path / f"frame_{i:04d}.png"
        Image.fromarray(np.full((31, 45, 3), 80 * i, np.uint8)).save(p)
        pngs.append(p)
    video, how = rd.write_video(pngs, tmp_path, fps=10)
    assert video.name == "render.mp4" and how.startswith("mp4"), how
    assert imageio_ffmpeg.count_frames_and_secs(str(video))[0] == 3
    meta = next(imageio_ffmpeg.read_frames(str(video)))
    assert tuple(meta["size"]) == (46, 32) and meta["codec"] == "h264"


def _has_colour(region: np.ndarray, rgb: tuple[int, int, int], tol: int = 12) -> int:
    return int(np.count_nonzero(np.all(np.abs(region[..., :3].astype(int) - rgb) <= tol, axis=-1)))


def test_render_two_scans_of_the_real_bag(tmp_path):
    from PIL import Image

    summary = rd.render(BAG, tmp_path, max_frames=2, log=lambda *_: None)
    pngs = sorted(tmp_path.glob("frame_*.png"))
    assert [p.name for p in pngs] == ["frame_0000.png", "frame_0001.png"]
    video = tmp_path / summary["video"]
    assert video.exists() and video.stat().st_size > 0
    if video.suffix == ".gif":
        assert Image.open(video).n_frames == 2
    else:
        import imageio_ffmpeg

        assert imageio_ffmpeg.count_frames_and_secs(str(video))[0] == 2

    saved = json.loads((tmp_path / "render.json").read_text())
    assert len(saved["frames"]) == 2
    for frame in saved["frames"]:
        assert frame["detections"] > 0 and frame["object_points"] > 0 and frame["instances"] > 0
        for stage in ("detect", "segment", "segment.network", "track"):
            assert frame["timings_ms"][stage] > 0

    img = np.asarray(Image.open(pngs[0]).convert("RGB"))
    h = img.shape[0]
    camera, bev = img[: int(h * 0.37)], img[int(h * 0.40):, : int(img.shape[1] * 0.56)]
    assert _has_colour(camera, CAR_RGB) > 100  # car boxes drawn on the camera image
    assert _has_colour(bev, CAR_RGB) > 100  # car-labelled points in the bird's-eye view

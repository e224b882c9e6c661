"""Build a synthetic dataset: independent object frames and continuous raw sequences, deterministic by seed."""
from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .frame import FrameRenderer, SynthFrame
from .world import World
from .writer import RawSequenceWriter, write_lidar_2d_scan, write_object_frame

FRAME_PERIOD_S = 0.1  # 10 Hz, the HDL-64E's rotation rate
_SPLIT_CODE = {"training": 0, "testing": 1}
_RENDERER: FrameRenderer | None = None


def _renderer(shadows: bool, nthreads: int, lidar: bool = True) -> FrameRenderer:
    global _RENDERER
    if _RENDERER is None or _RENDERER.shadows != shadows or _RENDERER.nthreads != nthreads or \
            _RENDERER.with_lidar != lidar:
        _RENDERER = FrameRenderer(shadows=shadows, nthreads=nthreads, lidar=lidar)
    return _RENDERER


def object_frame(seed: int, split: str, index: int, shadows: bool = True, nthreads: int = 0,
                 lidar: bool = True) -> SynthFrame:
    """One independent scene for the object benchmark layout (seed, split, index fix it completely).

    lidar=False: camera-only (image and labels identical to the frame with its scan)."""
    ss = np.random.SeedSequence([seed, _SPLIT_CODE.get(split, 2), index])
    world_seed, render_seed = ss.spawn(2)
    world = World(int(world_seed.generate_state(1)[0]), length=0.0)
    rng = np.random.default_rng(render_seed)
    # Let traffic settle for a moment so followers have adapted to their leaders.
    for _ in range(int(rng.integers(0, 20))):
        world.step(FRAME_PERIOD_S)
    world.ego.yaw = float(rng.normal(0.0, 0.03))  # the street is not always exactly straight ahead
    return _renderer(shadows, nthreads, lidar).render(world, rng)


def object_scan(seed: int, split: str, index: int, nthreads: int = 0):
    """The LiDAR scan of `object_frame(seed, split, index)`, without rendering the camera."""
    ss = np.random.SeedSequence([seed, _SPLIT_CODE.get(split, 2), index])
    world_seed, render_seed = ss.spawn(2)
    world = World(int(world_seed.generate_state(1)[0]), length=0.0)
    rng = np.random.default_rng(render_seed)
    for _ in range(int(rng.integers(0, 20))):  # the same draws as object_frame
        world.step(FRAME_PERIOD_S)
    world.ego.yaw = float(rng.normal(0.0, 0.03))
    return _renderer(True, nthreads, True).scan_only(world, rng)


def sequence_frames(seed: int, drive: int, frames: int, shadows: bool = True, nthreads: int = 0,
                    ego_speed: float | None = None, style: str | None = None, density: float | None = None,
                    world_frames: int | None = None, lidar: bool = True):
    """Yield `frames` consecutive 10 Hz frames of one drive.

    world_frames sizes the street (default: frames); fixing it makes a shorter run the exact
    beginning of a longer one.
    """
    ss = np.random.SeedSequence([seed, 7, drive])
    world_seed, render_seed = ss.spawn(2)
    rng = np.random.default_rng(render_seed)
    world = World(int(world_seed.generate_state(1)[0]), length=(world_frames or frames) * FRAME_PERIOD_S * 15.0,
                  style=style, ego_speed=ego_speed, density=density)
    from .camera import Lighting

    lighting = Lighting.random(rng)  # one time of day per drive
    renderer = _renderer(shadows, nthreads, lidar)
    for _ in range(frames):
        yield renderer.render(world, rng, lighting)
        world.step(FRAME_PERIOD_S)


@dataclass
class Task:
    kind: str  # object | sequence
    root: str
    seed: int
    split: str = ""
    index: int = 0
    frames: int = 0
    lidar_2d_split: str | None = None
    shadows: bool = True
    nthreads: int = 0
    skip_existing: bool = False
    lidar: bool = True  # False: camera-only (image_2, calib, label_2; raw drives without velodyne_points data)
    camera: bool = True  # False: an object task writes only its lidar_2d grid (segmentation training sets)

    def outputs_exist(self) -> bool:
        """All files of this task are on disk already (a task's last file is written last)."""
        root = Path(self.root)
        if self.kind == "object":
            name = f"{self.index:06d}"
            base = root / "object" / self.split
            if not self.camera:
                return (root / "lidar_2d" / (self.lidar_2d_split or self.split) / f"{name}.npy").exists()
            files = [base / "image_2" / f"{name}.png", base / "calib" / f"{name}.txt", base / "label_2" / f"{name}.txt"]
            if self.lidar:
                files += [base / "velodyne" / f"{name}.bin", base / "velodyne_labels" / f"{name}.npy"]
            if self.lidar_2d_split and self.lidar:
                files.append(root / "lidar_2d" / self.lidar_2d_split / f"{name}.npy")
            return all(f.exists() for f in files)
        drives = list((root / "raw").glob(f"*/*_drive_{self.index:04d}_sync/ego_poses.csv"))
        return bool(drives)


def run_task(task: Task) -> tuple[str, int, float]:
    """Render and write one task; returns (kind, frames written, seconds)."""
    t0 = time.perf_counter()
    if task.skip_existing and task.outputs_exist():
        return task.kind, 1 if task.kind == "object" else task.frames, 0.0
    if task.kind == "object" and not task.camera:
        # The camera is ~3/4 of a frame's CPU time and the segmentation networks never see it.
        scan = object_scan(task.seed, task.split, task.index, task.nthreads)
        write_lidar_2d_scan(task.root, task.lidar_2d_split or task.split, task.index, scan)
        return task.kind, 1, time.perf_counter() - t0
    if task.kind == "object":
        frame = object_frame(task.seed, task.split, task.index, task.shadows, task.nthreads, task.lidar)
        write_object_frame(task.root, task.split, task.index, frame, task.lidar_2d_split)
        return task.kind, 1, time.perf_counter() - t0
    writer = RawSequenceWriter(task.root, drive=task.index)
    for frame in sequence_frames(task.seed, task.index, task.frames, task.shadows, task.nthreads, lidar=task.lidar):
        writer.add(frame)
    writer.close()
    return task.kind, task.frames, time.perf_counter() - t0


def dataset_tasks(root: str | Path, seed: int, object_train: int, object_test: int, sequences: int, frames: int,
                  shadows: bool = True, nthreads: int = 0, first_drive: int = 1, skip_existing: bool = False,
                  lidar: bool = True, camera: bool = True) -> list[Task]:
    """camera=False: object tasks write only their lidar_2d grids (the same scans as a full run of the seed),
    and no drives are written."""
    if not (lidar or camera):
        raise ValueError("a dataset needs the camera, the LiDAR or both")
    root = str(root)
    tasks = [Task("object", root, seed, "training", i, lidar_2d_split="train", shadows=shadows, nthreads=nthreads)
             for i in range(object_train)]
    tasks += [Task("object", root, seed, "testing", i, lidar_2d_split="test", shadows=shadows, nthreads=nthreads)
              for i in range(object_test)]
    tasks += [Task("sequence", root, seed, index=first_drive + d, frames=frames, shadows=shadows, nthreads=nthreads)
              for d in range(sequences if camera else 0)]
    for task in tasks:
        task.skip_existing = skip_existing
        task.lidar = lidar
        task.camera = camera
    return tasks


def run_tasks(tasks: list[Task], workers: int = 1, progress=None):
    """Run tasks (in `workers` processes when > 1), calling progress(kind, frames, seconds) after each."""
    if workers <= 1:
        for task in tasks:
            result = run_task(task)
            if progress:
                progress(*result)
        return
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers) as pool:
        for result in pool.imap_unordered(run_task, tasks, chunksize=1):
            if progress:
                progress(*result)

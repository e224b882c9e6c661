"""`squeeze-perception synth bench`: how fast the generator makes LiDAR + camera frames, stage by stage.

  squeeze-perception synth bench [--frames 10] [--threads 0]

Every stage runs on the same worlds in the same process, so the ratios are side by side.
CPU ms/frame is the time of all threads; with --threads 1 it is what one `--workers` process
spends, so 1000 / CPU ms x cores estimates an otherwise idle machine's dataset rate.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="squeeze-perception synth bench", description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="open3d ray-casting threads (0 = all cores)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from rich.console import Console
    from rich.progress import track
    from rich.table import Table

    from ...kitti.hdl64e import KITTI_VELODYNE_HEIGHT_M
    from .camera import Lighting
    from .frame import FrameRenderer
    from .generate import FRAME_PERIOD_S
    from .raycast import RayScene
    from .world import World
    from .writer import write_object_frame

    renderer = FrameRenderer(nthreads=args.threads)
    no_shadow = FrameRenderer(shadows=False, nthreads=args.threads)
    camera_only = FrameRenderer(nthreads=args.threads, lidar=False)
    stages = ("world", "scene", "lidar", "camera", "camera_no_shadows", "frame", "frame_and_write",
              "camera_only_frame_and_write", "sequence_frame")
    times: dict[str, list[float]] = {k: [] for k in stages}
    cpu: dict[str, list[float]] = {k: [] for k in stages}
    clock: dict[str, tuple[float, float]] = {}

    def start(stage: str) -> None:
        clock[stage] = (time.perf_counter(), time.process_time())

    def stop(stage: str) -> None:
        wall0, cpu0 = clock.pop(stage)
        times[stage].append(time.perf_counter() - wall0)
        cpu[stage].append(time.process_time() - cpu0)

    points = []
    tmp = tempfile.TemporaryDirectory()
    seq_world = World(args.seed + 1000, length=args.frames * 1.5)
    for i in track(range(args.frames), description="bench"):
        rng = np.random.default_rng(i)
        start("world")
        world = World(args.seed * 10_000 + i, length=0.0)
        stop("world")
        rotation, origin = world.sensor_pose(KITTI_VELODYNE_HEIGHT_M)
        start("scene")
        objs = [(m, a.class_id, a.instance_id) for a in world.agents_near(130.0) for m in [a.world_mesh()[0]]]
        scene = RayScene(world.static_mesh, objs, args.threads)
        scene.cast(origin, np.array([[1.0, 0.0, 0.0]]))  # open3d builds its BVH on the first cast
        stop("scene")
        start("lidar")
        scan = renderer.lidar.scan(scene, rotation, origin, rng, world.layout.on_lane_paint)
        stop("lidar")
        points.append(len(scan.points))
        lighting = Lighting.random(rng)
        start("camera")
        renderer.camera.render(scene, rotation, origin, lighting, rng, world.layout.on_lane_paint, True)
        stop("camera")
        start("camera_no_shadows")
        no_shadow.camera.render(scene, rotation, origin, lighting, rng, world.layout.on_lane_paint, False)
        stop("camera_no_shadows")
        start("frame")
        frame = renderer.render(world, rng, lighting)
        stop("frame")
        start("frame_and_write")
        frame = renderer.render(world, rng, lighting)
        write_object_frame(tmp.name, "training", i, frame, "train")
        stop("frame_and_write")
        start("camera_only_frame_and_write")
        frame = camera_only.render(world, rng, lighting)
        write_object_frame(tmp.name, "testing", i, frame)
        stop("camera_only_frame_and_write")
        start("sequence_frame")
        renderer.render(seq_world, rng, lighting)
        seq_world.step(FRAME_PERIOD_S)
        stop("sequence_frame")
    tmp.cleanup()

    full = np.median(times["frame_and_write"])
    table = Table(title=f"synth bench: {args.frames} frames, median per frame (open3d threads: {args.threads or 'all'})")
    for col in ("stage", "wall ms/frame", "frames/s", "share of frame+write", "CPU ms/frame (all threads)"):
        table.add_column(col, justify="right" if col != "stage" else "left")
    for key, vals in times.items():
        med = float(np.median(vals))
        table.add_row(key, f"{1000 * med:.0f}", f"{1 / med:.2f}", f"{med / full:.2f}", f"{1000 * np.median(cpu[key]):.0f}")
    Console().print(table)
    cores = os.cpu_count() or 1
    cpu_full, cpu_cam = np.median(cpu["frame_and_write"]), np.median(cpu["camera_only_frame_and_write"])
    print(f"summary: {1 / full:.2f} LiDAR+camera frames/s written (goal 5), LiDAR alone {1 / np.median(times['lidar']):.1f}/s,"
          f" camera alone {1 / np.median(times['camera']):.1f}/s; {np.mean(points):.0f} points per scan;"
          f" CPU {cpu_full:.3f} s per written frame ({cpu_cam:.3f} s camera-only), i.e. about"
          f" {cores / cpu_full:.1f} ({cores / cpu_cam:.1f} camera-only) frames/s with --workers {cores} on an idle"
          f" machine; load average {os.getloadavg()[0]:.1f} on {cores} cores")
    return 0

"""The small per-frame stages of issue 11 item 4 (target: at most 2 ms each per real scan, one
thread): spherical projection (`project_tiles` + `network_input`, the pipeline's "projection"
stage) and box fit (`boxes_for_instances`), numpy reference vs the C kernels of
segmentation/_stages_native.py, interleaved on the same inputs; then the message conversions
the nodes do per frame (PointCloud2 <-> arrays, Image <-> array), which have no second version.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/small_stages.py [--repeats 30] [--fov front]

Inputs: the real KITTI scans of `seg bench` with more than --min-points points (the 7 full
HDL-64E scans, 114k-127k points); the instances are what squeezesegv2 + onnxruntime (CRF,
ground removal, DBSCAN: the node's defaults) find in them, computed once and cached (--cache);
the per-point confidences are random (the box fit's cost does not depend on their values).
Prints, per stage, the median and p99 over scans x repeats of CPU time of this thread
(time.thread_time: another process on the machine does not inflate it) and of wall time, the
ratio reference / kernel, whether every output is bit-identical, and the load average."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def frames(fov: str, min_points: int, cache: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(points float32 (N, 4), labels, instances) per scan."""
    from squeeze_perception.offline.segmentation.bench import bench_scans
    from squeeze_perception.paths import kitti_real_dir

    scans = [np.array(s[:, :4], dtype=np.float32) for s in bench_scans(kitti_real_dir()) if len(s) > min_points]
    if cache.exists():
        d = np.load(cache)
        if int(d["frames"]) == len(scans) and all(len(d[f"labels{i}"]) == len(s) for i, s in enumerate(scans)):
            return [(s, d[f"labels{i}"], d[f"instances{i}"]) for i, s in enumerate(scans)]
    import torch

    from squeeze_perception.segmentation.pipeline import SegmentationPipeline

    torch.set_num_threads(1)
    pl = SegmentationPipeline("squeezesegv2", backend="onnxruntime", fov=fov, crf=True, num_threads=1)
    out = {"frames": np.array(len(scans))}
    for i, pts in enumerate(scans):
        r = pl.process(pts)
        out[f"labels{i}"], out[f"instances{i}"] = r.labels.astype(np.int64), r.instances.astype(np.int64)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return [(s, out[f"labels{i}"], out[f"instances{i}"]) for i, s in enumerate(scans)]


def timed(fn):
    c0, w0 = time.thread_time(), time.perf_counter()
    out = fn()
    return out, (time.thread_time() - c0) * 1e3, (time.perf_counter() - w0) * 1e3


def stats(v) -> str:
    v = np.asarray(v)
    return f"median {np.median(v):7.3f}  p99 {np.percentile(v, 99):7.3f}"


def same_projection(a, b) -> bool:
    (pa, oa), (pb, ob) = a, b
    return np.array_equal(oa, ob) and len(pa) == len(pb) and all(
        x.grid.tobytes() == y.grid.tobytes() and np.array_equal(x.point_index, y.point_index)
        and np.array_equal(x.rows, y.rows) and np.array_equal(x.cols, y.cols) and np.array_equal(x.mask, y.mask)
        for x, y in zip(pa, pb))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--fov", choices=("front", "full"), default="front")
    ap.add_argument("--min-points", type=int, default=100_000)
    ap.add_argument("--channels", type=int, default=5, help="network input channels (squeezesegv2: 5)")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "squeeze_perception" / "small_stages_{fov}.npz"))
    a = ap.parse_args()

    from squeeze_perception.segmentation import _stages_native
    from squeeze_perception.segmentation.data import to_input
    from squeeze_perception.segmentation.pipeline import boxes_for_instances, project_tiles

    if _stages_native.load() is None:
        raise SystemExit(f"no C kernel: {_stages_native.load_error()}")
    data = frames(a.fov, a.min_points, Path(a.cache.format(fov=a.fov)))
    rng = np.random.default_rng(0)
    conf = [rng.uniform(size=len(p)).astype(np.float32) for p, _, _ in data]

    def projection(p, native):
        projs, owner = project_tiles(p, a.fov, native=native)
        batch = np.stack([to_input(q.grid, a.channels) for q in projs])  # SegmentationPipeline.network_input
        return (projs, owner), batch

    cpu = {k: [] for k in ("projection ref", "projection C", "boxfit ref", "boxfit C")}
    wall = {k: [] for k in cpu}
    identical = {"projection": True, "boxfit": True}
    la0 = os.getloadavg()
    for rep in range(a.repeats):
        for (p, labels, inst), c in zip(data, conf):
            ref, c0, w0 = timed(lambda: projection(p, False))
            got, c1, w1 = timed(lambda: projection(p, True))
            cpu["projection ref"].append(c0), wall["projection ref"].append(w0)
            cpu["projection C"].append(c1), wall["projection C"].append(w1)
            if rep == 0:
                identical["projection"] &= same_projection(ref[0], got[0]) and ref[1].tobytes() == got[1].tobytes()
            ref, c0, w0 = timed(lambda: boxes_for_instances(p, labels, inst, c, native=False))
            got, c1, w1 = timed(lambda: boxes_for_instances(p, labels, inst, c, native=True))
            cpu["boxfit ref"].append(c0), wall["boxfit ref"].append(w0)
            cpu["boxfit C"].append(c1), wall["boxfit C"].append(w1)
            if rep == 0:
                identical["boxfit"] &= ref.tobytes() == got.tobytes()
    la1 = os.getloadavg()
    n_inst = [len(np.unique(i[i >= 0])) for _, _, i in data]
    print(f"{len(data)} real scans, fov {a.fov}: points {min(len(p) for p, _, _ in data)}-"
          f"{max(len(p) for p, _, _ in data)}, instances {min(n_inst)}-{max(n_inst)} "
          f"(clustered points {min(int((i >= 0).sum()) for _, _, i in data)}-"
          f"{max(int((i >= 0).sum()) for _, _, i in data)}); {a.repeats} repeats, 1 thread")
    print(f"{'':16s} {'CPU ms (thread_time)':30s}   {'wall ms':30s}")
    for k in cpu:
        print(f"{k:16s} {stats(cpu[k])}   {stats(wall[k])}")
    for s in ("projection", "boxfit"):
        r = np.median(cpu[f"{s} ref"]) / np.median(cpu[f"{s} C"])
        print(f"{s}: reference / C kernel = {r:.1f}x (CPU medians); outputs bit-identical: {identical[s]}")

    # Message conversions (the nodes' per-frame work around the pipeline; one version each).
    try:
        from squeeze_perception import interfaces as itf
        from squeeze_perception.msgs_conv import array_to_cloud, array_to_image, cloud_to_array, image_to_array
    except ImportError as exc:  # no ROS message packages in this environment
        print(f"message conversions skipped: {exc}")
    else:
        p = data[0][0]
        cloud = np.zeros(len(p), dtype=[(f, np.float32) for f in itf.POINT_FIELDS_REQUIRED])
        for i, f in enumerate(itf.POINT_FIELDS_REQUIRED):
            cloud[f] = p[:, i]
        msg = array_to_cloud(cloud)
        labelled = np.zeros(len(p), dtype=itf.LABELLED_POINT_DTYPE)
        img = np.random.default_rng(1).integers(0, 255, (375, 1242, 3), dtype=np.uint8)  # a KITTI image's size
        img_msg = array_to_image(img, "bgr8")
        rgb_msg = array_to_image(img, "rgb8")

        def cloud_in():  # squeezeseg_node.on_points: message -> (N, 4) float32
            arr = cloud_to_array(msg)
            return np.stack([arr[f].astype(np.float32) for f in itf.POINT_FIELDS_REQUIRED], 1)

        def cloud_out():  # squeezeseg_node.publish: labelled points -> message
            for i, name in enumerate(itf.POINT_FIELDS_REQUIRED):
                labelled[name] = p[:, i]
            return array_to_cloud(labelled)

        conv = {"PointCloud2 -> (N, 4)": cloud_in, "(N, 4) + labels -> PointCloud2": cloud_out,
                "Image bgr8 -> RGB array": lambda: image_to_array(img_msg),
                "RGB array -> Image bgr8": lambda: array_to_image(img, "bgr8"),
                "Image rgb8 -> RGB array": lambda: image_to_array(rgb_msg),
                "RGB array -> Image rgb8": lambda: array_to_image(img, "rgb8"),
                "bgr <-> rgb swap img[..., [2, 1, 0]]": lambda: np.ascontiguousarray(img[..., [2, 1, 0]])}
        print(f"message conversions ({len(p)} points, {msg.point_step * len(p) / 1e6:.1f} MB in, "
              f"{labelled.nbytes / 1e6:.1f} MB out; image 1242x375):")
        for name, fn in conv.items():
            fn()
            c, w = [], []
            for _ in range(a.repeats):
                _, c0, w0 = timed(fn)
                c.append(c0), w.append(w0)
            print(f"  {name:38s} CPU {stats(c)}   wall {stats(w)}")
    print(f"load average before {la0[0]:.2f} {la0[1]:.2f} {la0[2]:.2f}, after {la1[0]:.2f} {la1[1]:.2f} {la1[2]:.2f}"
          f" ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()

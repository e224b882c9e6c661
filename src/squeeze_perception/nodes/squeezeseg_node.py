"""SqueezeSeg / SqueezeSegV2 node: PointCloud2 in; labelled points, instance table and box
markers out, all stamped with the cloud header. The work is segmentation.pipeline; this node
only converts messages, holds parameters and reports per-stage telemetry.

The default backend `auto` runs the model's int8 graph when it has a usable one, else fp32
onnxruntime; the log and the diagnostics (`backend`, `backend_reason`) say which and why.
Model, backend, weights and num_threads switch at runtime (node_base.ModelSlot: load first,
swap on success, refuse with the reason otherwise). Without usable weights the node stays up
and reports an error per frame instead of publishing made-up labels.
"""
from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Point
from sensor_msgs.msg import PointCloud2
from visualization_msgs.msg import Marker, MarkerArray

from .. import interfaces as itf
from ..msgs_conv import CloudFormatError, array_to_cloud, cloud_to_array, table_to_cloud
from ..node_base import MODEL_RELOAD_KEYS, ModelSlot, ParamSpec, PerceptionNode, run_node
from ..plausibility import check_points
from .limits import POINT_LIMIT_PARAMS, check_point_limit_change, point_limits
from ..registry import backend_names, model_names
from ..vision_msgs_conv import instances_detection3d_array, load_vision_msgs
from ..segmentation.constants import CLUSTER_EPS_M, CLUSTER_MIN_POINTS, PIPELINE_STAGES as SUB_STAGES
from ..visualization import class_colour

MODEL_KEYS = MODEL_RELOAD_KEYS  # a change reloads the pipeline
MODEL_STAGES = ("points", "network")  # diagnostics naming the backend that runs (record_inference's stages)
# RGBA per class id for markers (unknown, car, pedestrian, cyclist).

PARAMS = [
    ParamSpec("model", "squeezesegv2_bnmix2_isqrt_pdc", "Segmentation model name from the registry",
              choices=lambda: model_names("segmentation")),
    ParamSpec("backend", "auto", "Inference backend from the registry: auto (onnxruntime-int8 when the model has a "
              "usable int8 graph, else onnxruntime fp32; the choice is logged and in diagnostics) | onnxruntime | "
              "onnxruntime-int8 | torch | ...", choices=backend_names),
    ParamSpec("weights", "", "Weights file; empty = models/<model>.pt"),
    ParamSpec("fov", "front", "front: 90 deg 64x512 grid; full: 360 deg as four rotated 64x512 tiles",
              choices=("front", "full")),
    ParamSpec("crf", True, "Run the recurrent CRF after the CNN"),
    ParamSpec("cluster_eps", CLUSTER_EPS_M, "DBSCAN radius in metres", min=0.01, max=5.0),
    ParamSpec("cluster_min_points", CLUSTER_MIN_POINTS, "DBSCAN minPts (the point itself counts)", min=1, max=10000),
    ParamSpec("clustering", "fast", "sklearn: scikit-learn DBSCAN; fast: exact KD-tree + union of cores",
              choices=("sklearn", "fast")),
    ParamSpec("ground_removal", True, "Segmented LATTE ground planes fitted before DBSCAN; object-labelled "
              "ground points are relabelled 0 and form no instance"),
    ParamSpec("ground_threshold", 0.15, "Height above the local ground plane (m) below which a point is ground",
              min=0.01, max=2.0),
    ParamSpec("ground_max_slope", 15.0, "Steepest ground plane accepted (deg from horizontal)", min=0.0, max=45.0),
    ParamSpec("size_gate", True, "Reject instances longer, wider or taller above the ground than their class can be "
              "(KITTI size statistics); their points are relabelled 0, counted as instances_rejected_<class>_<cause>"),
    ParamSpec("size_gate_sigmas", 4.0, "Size gate: class mean + this many standard deviations", min=0.0, max=20.0),
    ParamSpec("size_gate_slack", 0.3, "Size gate: metres added to every limit for the box fit's error",
              min=0.0, max=10.0),
    ParamSpec("box_completion", True, "Grow each object box the LiDAR saw in part to its class's mean footprint "
              "(KITTI size statistics), away from the sensor, keeping the measured face; after the size gate"),
    ParamSpec("max_points", 500000, "Refuse clouds larger than this", min=1, max=10_000_000),
    ParamSpec("num_threads", 1, "Torch / ONNX Runtime threads (0 = library default: every core; 1 leaves the "
              "other core of a 2-core machine to squeezedet_node, docs/performance.md)", min=0, max=64),
    *POINT_LIMIT_PARAMS,
]


def build_pipeline(p: dict):
    """The segmentation pipeline for node parameters `p` (also used by `track eval --source network`,
    so the offline evaluation segments exactly as this node does)."""
    from ..segmentation.pipeline import SegmentationPipeline

    return SegmentationPipeline(
        model=p["model"], backend=p["backend"], weights=p["weights"], fov=p["fov"], crf=p["crf"],
        cluster_eps=p["cluster_eps"], cluster_min_points=p["cluster_min_points"],
        clustering=p["clustering"], ground_removal=p["ground_removal"], ground_threshold=p["ground_threshold"],
        ground_max_slope=p["ground_max_slope"], size_gate=p["size_gate"], size_gate_sigmas=p["size_gate_sigmas"],
        size_gate_slack=p["size_gate_slack"], num_threads=p["num_threads"], box_completion=p["box_completion"])


def mask_implausible_points(points: np.ndarray, p: dict) -> tuple[np.ndarray, dict[str, int]]:
    """(points to segment, dropped counts per cause) of one (N, 4) scan under node parameters `p`.

    Implausible points (NaN/Inf, out of range, intensity out of bounds) are left out of
    segmentation like NaN points: label 0, instance -1, still one output row each."""
    keep, dropped = check_points(points, point_limits(p))
    work = points
    if not keep.all():
        work = points.copy()
        work[~keep] = np.nan
    return work, dropped


class SqueezeSegNode(PerceptionNode):
    def __init__(self, **kwargs):
        super().__init__("squeezeseg_node", PARAMS, stages=("points", *SUB_STAGES), **kwargs)
        self.model_slot = ModelSlot(MODEL_KEYS, self._build, self.get_logger())
        self.model_slot.load(self.p)
        self.report_backend(self.pipeline, self.p["backend"], MODEL_STAGES)  # what `auto` resolved to
        self.points_pub = self.advertise(PointCloud2, itf.TOPIC_LABELLED_POINTS)
        self.instances_pub = self.advertise(PointCloud2, itf.TOPIC_INSTANCES)
        self.markers_pub = self.advertise(MarkerArray, itf.TOPIC_INSTANCE_MARKERS)
        # vision_msgs only exists on apt ROS 2 installs; without it the table is the only output
        self.vision_msgs = load_vision_msgs()
        self.instances3d_pub = (self.advertise(self.vision_msgs.Detection3DArray, itf.TOPIC_INSTANCES_3D)
                                if self.vision_msgs is not None else None)
        self.subscribe(PointCloud2, itf.TOPIC_POINTS, self.on_points, stage="points")

    # ------------------------------------------------------------------ model loading
    @property
    def pipeline(self):
        return self.model_slot.current

    @pipeline.setter
    def pipeline(self, value) -> None:
        self.model_slot.current = value

    @property
    def load_error(self) -> str | None:
        return self.model_slot.error

    def _build(self, p: dict):
        return build_pipeline(p)

    def on_parameters_changing(self, changes: dict) -> str | None:
        reason = check_point_limit_change(self.p, changes)
        if reason:
            return reason
        return self.model_slot.prepare(self.p, changes)  # loads a new pipeline when a reload key changes

    def on_parameters_changed(self, changes: dict) -> None:
        if self.model_slot.commit():  # swaps the prepared pipeline in, closing the previous backend
            self.report_backend(self.pipeline, self.p["backend"], MODEL_STAGES)
        if self.pipeline is None:
            return
        pl = self.pipeline
        pl.fov = self.p["fov"]
        pl.use_crf = self.p["crf"]
        pl.cluster_eps = self.p["cluster_eps"]
        pl.cluster_min_points = self.p["cluster_min_points"]
        pl.clustering = self.p["clustering"]
        pl.ground_removal = self.p["ground_removal"]
        pl.ground_threshold = self.p["ground_threshold"]
        pl.ground_max_slope = self.p["ground_max_slope"]
        pl.size_gate = self.p["size_gate"]
        pl.size_gate_sigmas = self.p["size_gate_sigmas"]
        pl.size_gate_slack = self.p["size_gate_slack"]
        pl.box_completion = self.p["box_completion"]

    # ------------------------------------------------------------------ per frame
    def on_points(self, msg: PointCloud2) -> None:
        with self.frame("points", msg.header) as ctx:
            if self.pipeline is None:
                self.report_error("points", f"model not loaded: {self.load_error}")
                return
            cloud = cloud_to_array(msg)
            if len(cloud) > self.p["max_points"]:
                raise CloudFormatError(f"{len(cloud)} points exceeds max_points {self.p['max_points']}")
            points = np.stack([cloud[f].astype(np.float32) for f in itf.POINT_FIELDS_REQUIRED], 1) \
                if len(cloud) else np.zeros((0, 4), np.float32)
            if len(points) == 0:
                self.report_error("points", "empty cloud (0 points); publishing empty outputs", dropped=False)
            work, dropped = mask_implausible_points(points, self.p)
            self.report_dropped_points("points", dropped, len(points))
            result = self.pipeline.process(work)
            if len(points) and result.in_fov == 0:
                self.report_error("points", f"no returns inside the {self.pipeline.fov} field of view; "
                                  "every point is labelled 0", dropped=False)
            for stage, ms in result.timings_ms.items():
                st = self.stats[stage]
                st.frames_in += 1
                st.frames_processed += 1
                st.frames_out += 1
                st.add_processing(ms)
            count_size_rejections(self.stats["size_gate"], result)
            # the network's energy is the frame's; its (possibly emulated) latency per stage
            self.record_inference(ctx, ("points", "network"), result.inference)
            self.publish(msg.header, cloud, points, result)
            ctx.published += 3

    def publish(self, header, cloud, points: np.ndarray, result) -> None:
        out = np.zeros(len(points), dtype=itf.LABELLED_POINT_DTYPE)
        for i, name in enumerate(itf.POINT_FIELDS_REQUIRED):
            out[name] = points[:, i] if len(points) else []
        out["label"] = result.labels
        out["instance"] = result.instances
        self.points_pub.publish(array_to_cloud(out, header))
        self.instances_pub.publish(table_to_cloud(result.table, header))
        self.markers_pub.publish(instance_markers(result.table, header))
        if self.instances3d_pub is not None:
            self.instances3d_pub.publish(instances_detection3d_array(result.table, header, self.vision_msgs))


def count_size_rejections(stats, result) -> None:
    """Instances the size gate rejected, counted per class and cause (`instances_rejected_car_too_long`,
    ...) in the size_gate stage's diagnostics: filtered by design, so counted but not logged per frame."""
    if result.size_rejected is None:
        return
    for row, cause in zip(result.size_rejected, result.size_rejected_causes):
        stats.count(f"instances_rejected_{itf.CLASS_NAMES[int(row['class_id'])]}_{cause}", 1)


def instance_markers(table: np.ndarray, header) -> MarkerArray:
    arr = MarkerArray()
    clear = Marker()
    clear.header = header
    clear.action = Marker.DELETEALL
    arr.markers.append(clear)
    for row in table:
        colour = class_colour(row["class_id"])
        box = Marker()
        box.header, box.ns, box.id = header, "instances", int(row["instance_id"])
        box.type, box.action = Marker.CUBE, Marker.ADD
        box.pose.position = Point(x=float(row["x"]), y=float(row["y"]), z=float(row["z"]))
        box.pose.orientation.z = float(np.sin(row["yaw"] / 2))
        box.pose.orientation.w = float(np.cos(row["yaw"] / 2))
        box.scale.x = max(float(row["length"]), 0.05)
        box.scale.y = max(float(row["width"]), 0.05)
        box.scale.z = max(float(row["height"]), 0.05)
        box.color.r, box.color.g, box.color.b, box.color.a = colour[0], colour[1], colour[2], 0.4
        arr.markers.append(box)
        text = Marker()
        text.header, text.ns, text.id = header, "labels", int(row["instance_id"])
        text.type, text.action = Marker.TEXT_VIEW_FACING, Marker.ADD
        text.pose.position = Point(x=float(row["x"]), y=float(row["y"]),
                                   z=float(row["z"] + row["height"] / 2 + 0.3))
        text.pose.orientation.w = 1.0
        text.scale.z = 0.6
        text.color.r = text.color.g = text.color.b = text.color.a = 1.0
        text.text = f"{itf.CLASS_NAMES[int(row['class_id'])]} {int(row['instance_id'])} ({row['score']:.2f})"
        arr.markers.append(text)
    return arr


def main(args=None) -> int:
    return run_node(SqueezeSegNode, args)


if __name__ == "__main__":
    raise SystemExit(main())

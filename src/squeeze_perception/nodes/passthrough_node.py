"""Pass-through node: decodes the camera and Velodyne inputs through the message contract
and republishes them. It proves the plumbing (QoS, conversion, telemetry, bad-input
handling) before and beside the model nodes."""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image, PointCloud2

from .. import interfaces as itf
from ..msgs_conv import (CloudFormatError, array_to_cloud, array_to_image, cloud_to_array,
                         finite_mask, image_to_array)
from ..node_base import ParamSpec, PerceptionNode, run_node
from ..plausibility import check_points
from .limits import POINT_LIMIT_PARAMS, check_point_limit_change, point_limits

PARAMS = [
    ParamSpec("drop_nan_points", True, "Remove points with non-finite x/y/z/intensity before republishing"),
    ParamSpec("max_points", 300000, "Refuse clouds larger than this (guards against garbage headers)",
              min=1, max=10_000_000),
    *POINT_LIMIT_PARAMS,
]


class PassthroughNode(PerceptionNode):
    def __init__(self):
        super().__init__("passthrough_node", PARAMS, stages=("points", "image"))
        self.points_pub = self.advertise(PointCloud2, "perception/passthrough/points")
        self.image_pub = self.advertise(Image, "perception/passthrough/image")
        self.subscribe(PointCloud2, itf.TOPIC_POINTS, self.on_points, stage="points")
        self.subscribe(Image, itf.TOPIC_IMAGE, self.on_image, stage="image")

    def on_parameters_changing(self, changes: dict) -> str | None:
        return check_point_limit_change(self.p, changes)

    def on_points(self, msg: PointCloud2) -> None:
        with self.frame("points", msg.header) as ctx:
            cloud = cloud_to_array(msg)
            if len(cloud) > self.p["max_points"]:
                raise CloudFormatError(f"{len(cloud)} points exceeds max_points {self.p['max_points']}")
            if len(cloud) == 0:
                self.report_error("points", "empty cloud (0 points); publishing an empty cloud", dropped=False)
            finite = finite_mask(cloud)
            if not finite.all():
                n_bad = int((~finite).sum())
                self.report_error("points", f"{n_bad} of {len(cloud)} points have NaN/Inf fields"
                                  + ("; removed" if self.p["drop_nan_points"] else ""), dropped=False,
                                  cause="non_finite")
                self.stats["points"].count("points_dropped_non_finite" if self.p["drop_nan_points"]
                                           else "points_non_finite", n_bad)
                if self.p["drop_nan_points"]:
                    cloud = cloud[finite]
                    finite = finite[finite]
            # Out of range / intensity out of bounds: always removed, counted per cause.
            xyzi = np.stack([cloud[f].astype(np.float64) for f in itf.POINT_FIELDS_REQUIRED], 1) \
                if len(cloud) else np.zeros((0, 4))
            keep, dropped = check_points(xyzi, point_limits(self.p))
            dropped.pop("non_finite", None)  # handled above (drop_nan_points)
            self.report_dropped_points("points", dropped, len(cloud))
            if dropped:
                cloud = cloud[keep | ~finite]
            out = np.zeros(len(cloud), dtype=itf.POINT_DTYPE)
            for name in itf.POINT_DTYPE.names:
                out[name] = cloud[name]
            self.points_pub.publish(array_to_cloud(out, msg.header))
            ctx.published += 1

    def on_image(self, msg: Image) -> None:
        with self.frame("image", msg.header) as ctx:
            rgb = image_to_array(msg)
            encoding = "mono8" if rgb.ndim == 2 else "rgb8"
            self.image_pub.publish(array_to_image(rgb.astype(np.uint8), encoding, msg.header))
            ctx.published += 1


def main(args=None) -> int:
    return run_node(PassthroughNode, args)


if __name__ == "__main__":
    raise SystemExit(main())

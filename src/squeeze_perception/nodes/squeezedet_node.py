"""SqueezeDet camera detector node.

Subscribes to the rectified left colour image (and its CameraInfo, to check image sizes),
runs the registry model through the chosen backend and publishes the detection table
(DETECTION_DTYPE as a PointCloud2, original-image pixels, stamped with the image header) and
an annotated rgb8 image. The default backend `auto` runs the model's int8 graph when it has a
usable one, else fp32 onnxruntime; the log and the diagnostics (`backend`, `backend_reason`) say
which and why. `model`, `backend`, `weights` and `num_threads` can change at runtime
(node_base.ModelSlot): the new detector is loaded first and the change is refused, with the
reason, when loading fails.
Without usable weights the node stays up and reports an error per frame, publishing nothing.
"""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from .. import interfaces as itf
from ..msgs_conv import MessageFormatError, array_to_image, image_to_array, table_to_cloud
from ..node_base import LATCHED_QOS, MODEL_RELOAD_KEYS, ModelSlot, ParamSpec, PerceptionNode, run_node
from ..registry import backend_names, model_names
from ..vision_msgs_conv import detection2d_array, load_vision_msgs
from ..visualization import class_colour_uint8

STAGE = "detect"

PARAMS = [
    ParamSpec("model", "squeezedet", "Registry detection model (squeeze-perception models)",
              choices=lambda: model_names("detection")),
    ParamSpec("backend", "auto", "Inference backend: auto (onnxruntime-int8 when the model has a usable int8 graph, "
              "else onnxruntime fp32; the choice is logged and in diagnostics) | onnxruntime | onnxruntime-int8 | "
              "torch | ...", choices=backend_names),
    ParamSpec("weights", "", "Weights file overriding models/<model>.pt ('' = the shipped file)"),
    ParamSpec("score_threshold", 0.3, "Drop detections scoring below this (confidence x class probability)",
              min=0.0, max=1.0),
    ParamSpec("top_k", 64, "Boxes kept by confidence before NMS (thesis: 64)", min=1, max=100000),
    ParamSpec("nms_iou", 0.4, "Per-class NMS IoU threshold", min=0.0, max=1.0),
    ParamSpec("annotate", True, "Publish the image with boxes drawn on it"),
    ParamSpec("max_upscale", 4.0, "Refuse images needing more than this upscaling to fit the model input",
              min=1.0, max=100.0),
    ParamSpec("num_threads", 1, "CPU threads for inference (0 = library default: every core; 1 leaves the other "
              "core of a 2-core machine to squeezeseg_node, docs/performance.md)", min=0, max=256),
]


class InputSizeError(MessageFormatError):
    """The image cannot be fitted to the model input sensibly."""


def check_image_size(width: int, height: int, input_width: int, input_height: int, max_upscale: float) -> None:
    scale = min(input_width / width, input_height / height)
    if scale > max_upscale:
        raise InputSizeError(
            f"image {width}x{height} is too small for model input {input_width}x{input_height}: it needs "
            f"x{scale:.1f} upscaling (max_upscale {max_upscale}); send the full camera image")


def draw_detections(rgb: np.ndarray, dets: np.ndarray) -> np.ndarray:
    """Boxes and 'class score' labels drawn with PIL onto a copy of the image."""
    from PIL import Image as PILImage, ImageDraw

    im = PILImage.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    draw = ImageDraw.Draw(im)
    for d in dets:
        cid = int(d["class_id"])
        colour = class_colour_uint8(cid)
        draw.rectangle([float(d["u_min"]), float(d["v_min"]), float(d["u_max"]), float(d["v_max"])],
                       outline=colour, width=2)
        name = itf.CLASS_NAMES[cid] if 0 <= cid < len(itf.CLASS_NAMES) else str(cid)
        draw.text((float(d["u_min"]) + 2, max(0.0, float(d["v_min"]) - 11)), f"{name} {d['score']:.2f}", fill=colour)
    return np.asarray(im)


def to_rgb8(img: np.ndarray) -> np.ndarray:
    """Decoded image (rgb uint8, mono8 or mono16) -> (H, W, 3) uint8."""
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return img


def build_detector(p: dict):
    """The detector for node parameters `p` (also used by `track eval --source network`)."""
    from ..detection.decode import DecodeConfig
    from ..detection.inference import Detector

    return Detector(p["model"], p["backend"], p["weights"] or None,
                    DecodeConfig(top_k=p["top_k"], nms_iou=p["nms_iou"], score_threshold=p["score_threshold"]),
                    num_threads=p["num_threads"])


def detect_image(detector, rgb: np.ndarray, p: dict):
    """The Prediction for one (H, W, 3) uint8 RGB image under node parameters `p`; an image
    that would need more than `max_upscale` is refused (InputSizeError)."""
    h, w = rgb.shape[:2]
    check_image_size(w, h, detector.input_width, detector.input_height, p["max_upscale"])
    return detector.predict(rgb)


class SqueezeDetNode(PerceptionNode):
    def __init__(self, **kwargs):
        super().__init__("squeezedet_node", PARAMS, stages=(STAGE,), **kwargs)
        self.camera_info: CameraInfo | None = None
        self.model_slot = ModelSlot(MODEL_RELOAD_KEYS, self._make_detector, self.get_logger())
        self.model_slot.load(self.p)
        self.report_backend(self.detector, self.p["backend"], (STAGE,))  # what `auto` resolved to
        self.det_pub = self.advertise(PointCloud2, itf.TOPIC_DETECTIONS)
        self.image_pub = self.advertise(Image, itf.TOPIC_DETECTIONS_IMAGE)
        # vision_msgs only exists on apt ROS 2 installs; without it the table is the only output
        self.vision_msgs = load_vision_msgs()
        self.det2d_pub = (self.advertise(self.vision_msgs.Detection2DArray, itf.TOPIC_DETECTIONS_2D)
                          if self.vision_msgs is not None else None)
        self.subscribe(Image, itf.TOPIC_IMAGE, self.on_image, stage=STAGE)
        self.subscribe(CameraInfo, itf.TOPIC_CAMERA_INFO, self.on_camera_info, qos=LATCHED_QOS)

    # ------------------------------------------------------------------ model management
    @property
    def detector(self):
        return self.model_slot.current

    @detector.setter
    def detector(self, value) -> None:
        self.model_slot.current = value

    @property
    def load_error(self) -> str | None:
        return self.model_slot.error

    def _make_detector(self, p: dict):
        return build_detector(p)

    def on_parameters_changing(self, changes: dict) -> str | None:
        return self.model_slot.prepare(self.p, changes)  # loads a new detector when a reload key changes

    def on_parameters_changed(self, changes: dict) -> None:
        from ..detection.decode import DecodeConfig

        if self.model_slot.commit():  # swaps the prepared detector in, closing the previous backend
            self.report_backend(self.detector, self.p["backend"], (STAGE,))
        if self.detector is not None:
            self.detector.decode_config = DecodeConfig(top_k=self.p["top_k"], nms_iou=self.p["nms_iou"],
                                                       score_threshold=self.p["score_threshold"])

    # ------------------------------------------------------------------ callbacks
    def on_camera_info(self, msg: CameraInfo) -> None:
        self.camera_info = msg

    def on_image(self, msg: Image) -> None:
        with self.frame(STAGE, msg.header) as ctx:
            if self.detector is None:
                self.report_error(STAGE, f"no detector loaded: {self.load_error}")
                return
            rgb = to_rgb8(image_to_array(msg))
            h, w = rgb.shape[:2]
            info = self.camera_info
            if info is not None and info.width and (info.width != w or info.height != h):
                self.report_error(STAGE, f"image {w}x{h} differs from camera_info {info.width}x{info.height}",
                                  dropped=False)
            pred = detect_image(self.detector, rgb, self.p)
            self.record_inference(ctx, (STAGE,), pred)  # energy per frame, inference latency
            self.det_pub.publish(table_to_cloud(pred.detections, msg.header))
            if self.det2d_pub is not None:
                self.det2d_pub.publish(detection2d_array(pred.detections, msg.header, self.vision_msgs))
            ctx.published += 1
            if self.p["annotate"]:
                self.image_pub.publish(array_to_image(draw_detections(rgb, pred.detections), "rgb8", msg.header))


def main(args=None) -> int:
    return run_node(SqueezeDetNode, args)


if __name__ == "__main__":
    raise SystemExit(main())

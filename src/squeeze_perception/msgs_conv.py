"""numpy <-> ROS message conversion (PointCloud2, Image, tables) without per-point loops.

ROS-free at import time: readers duck-type the message (rclpy messages and rosbags'
deserialised messages both work); writers import sensor_msgs lazily. sensor_msgs_py has
no wheel here, so this is our own small equivalent built on numpy structured dtypes.
"""
from __future__ import annotations

import array
from typing import Any, Iterable

import numpy as np

from .interfaces import POINT_FIELDS_REQUIRED

# sensor_msgs/PointField datatype constants -> numpy base type.
_PF_TO_NP = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
_NP_TO_PF = {np.dtype(v).str[1:]: k for k, v in _PF_TO_NP.items()}

# Image encodings we decode -> (channels, numpy dtype, channel order to RGB or None).
_IMAGE_ENCODINGS = {
    "rgb8": (3, "u1", None),
    "bgr8": (3, "u1", [2, 1, 0]),
    "rgba8": (4, "u1", [0, 1, 2]),
    "bgra8": (4, "u1", [2, 1, 0]),
    "mono8": (1, "u1", None),
    "8UC1": (1, "u1", None),
    "8UC3": (3, "u1", None),
    "mono16": (1, "u2", None),
    "16UC1": (1, "u2", None),
}


def _reorder_channels(img: np.ndarray, order) -> np.ndarray:
    """img[..., order] as a new C-contiguous array, one strided copy per output channel: numpy's
    fancy index on the last axis takes 3.1 ms for a 1242x375 bgr8 frame, this 0.4 ms."""
    out = np.empty(img.shape[:-1] + (len(order),), dtype=img.dtype)
    for k, src in enumerate(order):
        out[..., k] = img[..., src]
    return out


class MessageFormatError(ValueError):
    """A message that cannot be decoded; the text says exactly why (shown to users)."""


class CloudFormatError(MessageFormatError):
    pass


class ImageEncodingError(MessageFormatError):
    pass


# --------------------------------------------------------------------------- PointCloud2
def fields_to_dtype(fields: Iterable[Any], point_step: int, is_bigendian: bool = False) -> np.dtype:
    """Structured dtype matching a PointCloud2's field list (offsets and padding kept)."""
    names, formats, offsets = [], [], []
    order = ">" if is_bigendian else "<"
    seen: dict[str, list[int]] = {}
    for f in fields:
        name = str(f.name)
        seen.setdefault(name, []).append(int(f.offset))
        if not name:
            raise CloudFormatError("a PointField has an empty name")
        if f.datatype not in _PF_TO_NP:
            raise CloudFormatError(f"field '{name}' has unknown PointField datatype {f.datatype}")
        base = order + _PF_TO_NP[f.datatype]
        count = int(getattr(f, "count", 1) or 1)
        if count < 0 or count > 65535:
            raise CloudFormatError(f"field '{name}' has an implausible count {count}")
        if int(f.offset) < 0:
            raise CloudFormatError(f"field '{name}' has a negative offset {int(f.offset)}")
        names.append(name)
        formats.append((base, (count,)) if count > 1 else base)
        offsets.append(int(f.offset))
    dup = {n: o for n, o in seen.items() if len(o) > 1}
    if dup:
        name, offs = next(iter(dup.items()))
        raise CloudFormatError(
            f"PointCloud2 field '{name}' appears {len(offs)} times (offsets {', '.join(map(str, offs))}); "
            "field names must be unique")
    end = max((o + np.dtype(fm).itemsize for o, fm in zip(offsets, formats)), default=0)
    if end > point_step:
        raise CloudFormatError(
            f"point_step {point_step} is smaller than the field layout needs ({end} bytes)")
    try:
        return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})
    except (ValueError, TypeError) as exc:  # e.g. a layout numpy cannot represent
        raise CloudFormatError(f"field layout cannot be decoded: {exc}") from exc


def dtype_to_fields(dtype: np.dtype) -> list[tuple[str, int, int, int]]:
    """(name, offset, datatype, count) for every field of a structured dtype."""
    out = []
    for name in dtype.names:
        sub, offset = dtype.fields[name][:2]
        count = 1
        if sub.subdtype is not None:
            sub, shape = sub.subdtype
            count = int(np.prod(shape))
        key = sub.str[1:]
        if key not in _NP_TO_PF:
            raise TypeError(f"field '{name}' has dtype {sub} with no PointField equivalent")
        out.append((name, int(offset), _NP_TO_PF[key], count))
    return out


def cloud_to_array(msg: Any, required: Iterable[str] = POINT_FIELDS_REQUIRED) -> np.ndarray:
    """Decode a PointCloud2 into a flat structured array (height*width rows).

    Raises CloudFormatError with a user-facing reason for missing fields, an inconsistent
    point_step/row_step/data length, or unknown datatypes. Zero points is valid (empty array).
    """
    fields = list(msg.fields)
    present = {f.name for f in fields}
    missing = [r for r in required if r not in present]
    if missing:
        raise CloudFormatError(
            f"PointCloud2 lacks required field(s) {missing}; it has {sorted(present)}")
    for f in fields:
        count = int(getattr(f, "count", 1) or 1)
        if f.name in required and count != 1:
            raise CloudFormatError(
                f"field '{f.name}' has count {count}; required fields {list(required)} must each be one "
                "scalar per point (count 1), e.g. x, y, z as three fields, not one field of count 3")
    point_step, width, height = int(msg.point_step), int(msg.width), int(msg.height)
    if point_step <= 0:
        raise CloudFormatError(f"point_step must be positive, got {point_step}")
    dtype = fields_to_dtype(fields, point_step, bool(msg.is_bigendian))
    n_points = width * height
    row_step = int(msg.row_step) if int(msg.row_step) else width * point_step
    if row_step < width * point_step:
        raise CloudFormatError(
            f"row_step {row_step} < width {width} x point_step {point_step}")
    data = msg.data
    buf = data if isinstance(data, (bytes, bytearray, memoryview)) else np.asarray(data, np.uint8).tobytes()
    expected = row_step * height
    if len(buf) < expected:
        raise CloudFormatError(
            f"data has {len(buf)} bytes but height {height} x row_step {row_step} needs {expected}")
    if n_points == 0:  # little endian like every decoded cloud (see the byte swap below)
        return np.zeros(0, dtype=dtype.newbyteorder("<"))
    raw = np.frombuffer(buf, dtype=np.uint8, count=expected)
    if row_step != width * point_step:  # drop row padding
        raw = raw.reshape(height, row_step)[:, : width * point_step].reshape(-1)
    arr = raw.view(dtype)
    if dtype.byteorder == ">" or any(dtype.fields[n][0].byteorder == ">" for n in dtype.names):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr


def xyz(cloud: np.ndarray) -> np.ndarray:
    """(N, 3) float32 coordinates from a structured cloud."""
    return np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=-1).astype(np.float32, copy=False)


def finite_mask(cloud: np.ndarray, fields: Iterable[str] = POINT_FIELDS_REQUIRED) -> np.ndarray:
    mask = np.ones(len(cloud), dtype=bool)
    for f in fields:
        if f in cloud.dtype.names:
            mask &= np.isfinite(cloud[f])
    return mask


def packed(arr: np.ndarray) -> np.ndarray:
    """Copy into a packed (no padding) dtype so tobytes() is exactly point_step per row."""
    names = arr.dtype.names
    dt = np.dtype([(n, arr.dtype.fields[n][0]) for n in names])
    if dt == arr.dtype:
        return np.ascontiguousarray(arr)
    out = np.empty(arr.shape, dtype=dt)
    for n in names:
        out[n] = arr[n]
    return out


def array_to_cloud(arr: np.ndarray, header: Any = None, frame_id: str | None = None):
    """Structured array -> sensor_msgs/PointCloud2 (height 1, dense if all xyz finite)."""
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header

    arr = np.ascontiguousarray(arr.reshape(-1))
    msg = PointCloud2()
    msg.header = header if header is not None else Header()
    if frame_id is not None:
        msg.header.frame_id = frame_id
    msg.height = 1
    msg.width = int(arr.shape[0])
    msg.fields = [PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in dtype_to_fields(arr.dtype)]
    msg.is_bigendian = False
    msg.point_step = int(arr.dtype.itemsize)
    msg.row_step = msg.point_step * msg.width
    has_xyz = all(k in arr.dtype.names for k in ("x", "y", "z"))
    msg.is_dense = bool(np.all(finite_mask(arr, ("x", "y", "z")))) if has_xyz else True
    msg.data = _byte_array(arr)
    return msg


def _byte_array(arr: np.ndarray):
    """The bytes of `arr` for a uint8[] message field, as the array.array('B') the generated
    setter stores anyway: with ROS_PYTHON_CHECK_FIELDS=1 it checks any other sequence element by
    element (about a second for a 1.9 MB cloud), an array.array not at all."""
    out = array.array("B")
    out.frombytes(np.ascontiguousarray(arr).tobytes())
    return out


# Tables (detections, instances, tracks) are PointCloud2s whose rows are records.
table_to_cloud = array_to_cloud


def cloud_to_table(msg: Any, dtype: np.dtype) -> np.ndarray:
    """Decode a table published with table_to_cloud and check it has the expected columns."""
    arr = cloud_to_array(msg, required=dtype.names)
    out = np.empty(len(arr), dtype=dtype)
    for n in dtype.names:
        out[n] = arr[n]
    return out


# --------------------------------------------------------------------------- Image
def image_to_array(msg: Any) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB, or (H, W) for mono encodings."""
    enc = str(msg.encoding)
    if enc not in _IMAGE_ENCODINGS:
        raise ImageEncodingError(
            f"unsupported image encoding '{enc}'; supported: {sorted(_IMAGE_ENCODINGS)}")
    channels, base, order = _IMAGE_ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    dt = np.dtype(base).newbyteorder(">" if msg.is_bigendian else "<")
    row_bytes = w * channels * dt.itemsize
    if h == 0 or w == 0:
        raise ImageEncodingError(f"image is empty ({w}x{h})")
    if step < row_bytes:
        raise ImageEncodingError(f"step {step} < width {w} x {channels} channels x {dt.itemsize} bytes")
    data = msg.data
    buf = data if isinstance(data, (bytes, bytearray, memoryview)) else np.asarray(data, np.uint8).tobytes()
    if len(buf) < step * h:
        raise ImageEncodingError(f"data has {len(buf)} bytes, needs step {step} x height {h}")
    rows = np.frombuffer(buf, np.uint8, count=step * h).reshape(h, step)[:, :row_bytes]
    img = np.ascontiguousarray(rows).view(dt).reshape(h, w, channels)
    if order is not None:
        return _reorder_channels(img, order)
    return np.ascontiguousarray(img[..., 0] if channels == 1 else img)


def array_to_image(img: np.ndarray, encoding: str = "rgb8", header: Any = None):
    """(H, W, 3) uint8 RGB ((H, W, 4) RGBA for rgba8/bgra8, (H, W) for mono) -> sensor_msgs/Image."""
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    if encoding not in _IMAGE_ENCODINGS:
        raise ImageEncodingError(f"cannot encode '{encoding}'")
    channels, base, _ = _IMAGE_ENCODINGS[encoding]
    img = np.ascontiguousarray(img, dtype=np.dtype(base))
    if (img.ndim == 2 and channels != 1) or (img.ndim == 3 and img.shape[2] != channels):
        raise ImageEncodingError(f"array shape {img.shape} does not match encoding {encoding}")
    if encoding in ("bgr8", "bgra8"):  # RGB(A) array -> B, G, R(, A) bytes
        img = _reorder_channels(img, [2, 1, 0, 3][:channels])
    msg = Image()
    msg.header = header if header is not None else Header()
    msg.height, msg.width = int(img.shape[0]), int(img.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(img.shape[1] * channels * img.dtype.itemsize)
    msg.data = _byte_array(img)
    return msg


# --------------------------------------------------------------------------- CameraInfo
class CameraInfoError(MessageFormatError):
    pass


def camera_info_to_arrays(msg: Any) -> tuple[np.ndarray, tuple[int, int]]:
    """sensor_msgs/CameraInfo -> (P (3, 4) float64, (width, height)).

    Raises CameraInfoError unless P has 12 finite values with positive focal lengths and the
    image size is positive (a zero CameraInfo is what an uncalibrated driver sends).
    """
    try:
        p = np.asarray(msg.p, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise CameraInfoError(f"camera_info p is not numeric: {exc}") from exc
    if p.size != 12:
        raise CameraInfoError(f"camera_info p needs 12 values (3x4), got {p.size}")
    p = p.reshape(3, 4)
    width, height = int(msg.width), int(msg.height)
    if not np.all(np.isfinite(p)) or p[0, 0] <= 0 or p[1, 1] <= 0 or width <= 0 or height <= 0:
        raise CameraInfoError(f"camera_info has no usable P / size (P[0,0]={p[0, 0]}, P[1,1]={p[1, 1]}, "
                              f"{width}x{height})")
    return p, (width, height)


def stamp_to_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)

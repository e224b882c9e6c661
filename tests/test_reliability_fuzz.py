"""Issue 16: property-based fuzzing (hypothesis) of every message decoder and every node parameter.

Each decoder either returns a well-formed result or raises its MessageFormatError subclass with a
reason; nothing else escapes (a node turns those into a counted, reported dropped frame). Bounded
for CI: few examples per property, a per-example deadline, no example database on disk.
"""
from __future__ import annotations

import importlib
import math
from datetime import timedelta
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from squeeze_perception import interfaces as itf
from squeeze_perception.msgs_conv import (MessageFormatError, array_to_cloud, camera_info_to_arrays,
                                          cloud_to_array, cloud_to_table, image_to_array)
from squeeze_perception.plausibility import PointLimits, TableLimits, check_detections, check_instances, check_points
from squeeze_perception.telemetry import InputMonitor

FUZZ = settings(max_examples=60, deadline=timedelta(seconds=5), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ANY_NUMBER = st.one_of(st.integers(-2**40, 2**40), st.floats(allow_nan=True, allow_infinity=True))
NAMES = st.sampled_from(["x", "y", "z", "intensity", "ring", "time", "", "x "])


# ----------------------------------------------------------------------------- PointCloud2
@st.composite
def raw_clouds(draw):
    """Arbitrary PointCloud2 headers and data, biased towards almost-valid ones."""
    fields = [SimpleNamespace(name=draw(NAMES), offset=draw(st.integers(-4, 40)),
                              datatype=draw(st.integers(0, 9)), count=draw(st.integers(0, 4)))
              for _ in range(draw(st.integers(0, 6)))]
    point_step = draw(st.integers(-1, 48))
    width, height = draw(st.integers(0, 40)), draw(st.integers(0, 3))
    row_step = draw(st.one_of(st.just(0), st.integers(0, 2000)))
    n = draw(st.integers(0, 4000))
    return SimpleNamespace(fields=fields, point_step=point_step, width=width, height=height, row_step=row_step,
                           is_bigendian=draw(st.booleans()), data=draw(st.binary(min_size=n, max_size=n)))


@FUZZ
@given(raw_clouds())
def test_cloud_decoder_returns_or_raises_a_format_error(msg):
    try:
        arr = cloud_to_array(msg)
    except MessageFormatError as exc:
        assert str(exc)  # a reason for the user
        return
    assert len(arr) == msg.width * msg.height
    for name in itf.POINT_FIELDS_REQUIRED:
        assert arr[name].shape == (len(arr),)  # scalar fields only (count 3 is refused)


@FUZZ
@given(st.lists(st.tuples(ANY_NUMBER, ANY_NUMBER, ANY_NUMBER, ANY_NUMBER), max_size=50))
def test_cloud_round_trip_and_point_plausibility(rows):
    arr = np.zeros(len(rows), itf.POINT_DTYPE)
    with np.errstate(over="ignore", invalid="ignore"):
        for i, k in enumerate(itf.POINT_DTYPE.names):
            arr[k] = [r[i] for r in rows] if rows else []
    back = cloud_to_array(array_to_cloud(arr))
    np.testing.assert_array_equal(back.view(np.uint8), arr.view(np.uint8))  # bit-exact, NaN included
    pts = np.stack([back[k] for k in itf.POINT_FIELDS_REQUIRED], 1) if len(back) else np.zeros((0, 4))
    limits = PointLimits()
    keep, counts = check_points(pts, limits)
    assert sum(counts.values()) == len(pts) - keep.sum()
    kept = pts[keep].astype(np.float64)
    assert np.isfinite(kept).all()
    assert (np.linalg.norm(kept[:, :3], axis=1) <= limits.max_range_m).all()
    assert ((kept[:, 3] >= limits.intensity_min) & (kept[:, 3] <= limits.intensity_max)).all()


# ----------------------------------------------------------------------------- tables
@FUZZ
@given(st.sampled_from(["instances", "detections"]), st.integers(0, 30), st.data())
def test_tables_decode_and_only_plausible_rows_survive(kind, n, data):
    dtype = itf.INSTANCE_DTYPE if kind == "instances" else itf.DETECTION_DTYPE
    raw = data.draw(st.binary(min_size=n * dtype.itemsize, max_size=n * dtype.itemsize))
    table = np.frombuffer(raw, dtype=dtype).copy()  # every bit pattern: NaN, Inf, huge, negative
    table = cloud_to_table(array_to_cloud(table), dtype)
    limits = TableLimits()
    check = check_instances if kind == "instances" else check_detections
    kept, counts = check(table, limits)
    assert len(kept) + sum(counts.values()) == n
    if kind == "instances" and len(kept):
        assert ((kept["class_id"] >= 0) & (kept["class_id"] <= limits.max_class_id)).all()
        for k in ("length", "width", "height"):
            assert ((kept[k] > 0) & (kept[k] <= limits.max_box_size_m)).all()
        assert ((kept["score"] >= 0) & (kept["score"] <= 1)).all()
    if kind == "detections" and len(kept):
        assert ((kept["class_id"] >= 1) & (kept["class_id"] <= limits.max_class_id)).all()
        assert (kept["u_max"] >= kept["u_min"]).all() and (kept["v_max"] >= kept["v_min"]).all()


@FUZZ
@given(st.sampled_from([itf.INSTANCE_DTYPE, itf.DETECTION_DTYPE]), raw_clouds())
def test_table_decoder_on_garbage_clouds(dtype, msg):
    try:
        table = cloud_to_table(msg, dtype)
    except MessageFormatError:
        return
    assert table.dtype == dtype


# ----------------------------------------------------------------------------- Image
ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "8UC3", "mono16", "16UC1", "bayer_rggb8", "", "32FC1"]


@FUZZ
@given(st.sampled_from(ENCODINGS), st.integers(0, 12), st.integers(0, 12), st.integers(-1, 80),
       st.booleans(), st.integers(0, 1200), st.data())
def test_image_decoder_returns_or_raises_a_format_error(encoding, h, w, step, bigendian, n, data):
    msg = SimpleNamespace(encoding=encoding, height=h, width=w, step=step, is_bigendian=bigendian,
                          data=data.draw(st.binary(min_size=n, max_size=n)))
    try:
        img = image_to_array(msg)
    except MessageFormatError as exc:
        assert str(exc)
        return
    assert img.shape[:2] == (h, w) and img.ndim in (2, 3)
    if img.ndim == 3:
        assert img.shape[2] == 3 and img.dtype == np.uint8


# ----------------------------------------------------------------------------- CameraInfo
@FUZZ
@given(st.lists(ANY_NUMBER, max_size=14), st.integers(-5, 5000), st.integers(-5, 5000))
def test_camera_info_decoder_returns_usable_intrinsics_or_raises(p, width, height):
    try:
        P, size = camera_info_to_arrays(SimpleNamespace(p=p, width=width, height=height))
    except MessageFormatError:
        return
    assert P.shape == (3, 4) and np.isfinite(P).all() and P[0, 0] > 0 and P[1, 1] > 0
    assert size[0] > 0 and size[1] > 0


# ----------------------------------------------------------------------------- telemetry
@FUZZ
@given(st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 2**64 - 1)), st.sampled_from(["a", "b", None]),
                          st.one_of(st.none(), st.integers(0, 2**63 - 1))), max_size=40),
       st.sampled_from([0.0, 0.1]))
def test_input_monitor_never_counts_negative_or_crashes(events, period):
    m = InputMonitor("t", period_s=period)
    for seq, source, stamp in events:
        assert m.observe(seq, source, stamp) >= 0
    assert m.received == len(events) and m.skipped >= 0 and m.jumps_back >= 0


# ----------------------------------------------------------------------------- every node parameter
NODES = ["passthrough_node", "squeezedet_node", "squeezeseg_node", "tracker_node", "bag_player_node"]


def _all_specs():
    from squeeze_perception.node_base import COMMON_PARAMS

    specs = {}
    for node in NODES:
        for spec in importlib.import_module(f"squeeze_perception.nodes.{node}").PARAMS:
            specs[f"{node}.{spec.name}"] = spec
    for spec in COMMON_PARAMS:
        specs[f"common.{spec.name}"] = spec
    return specs


@pytest.fixture(scope="module", autouse=True)
def _warm_choices():
    """Dynamic choices (registry backends) import their libraries on first use: not in a deadline."""
    for spec in SPECS.values():
        spec.validate(spec.default)


SPECS = _all_specs()
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                   st.lists(st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True)), max_size=20))


@pytest.mark.parametrize("key", sorted(SPECS))
@settings(max_examples=25, deadline=timedelta(seconds=5), database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(value=VALUES)
def test_every_parameter_validates_without_raising(key, value):
    spec = SPECS[key]
    got, reason = spec.validate(value)
    if reason is not None:
        assert spec.name in reason
        return
    want = type(spec.default)
    assert isinstance(got, want) and not (want is int and isinstance(got, bool))
    if isinstance(got, float):
        assert not math.isnan(got)
    if spec.min is not None and isinstance(got, (int, float)):
        assert got >= spec.min
    if spec.max is not None and isinstance(got, (int, float)):
        assert got <= spec.max

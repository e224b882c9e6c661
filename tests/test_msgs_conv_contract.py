"""msgs_conv against the ROS message contract, function by function.

Written from the message definitions (sensor_msgs/PointCloud2 + PointField, Image, CameraInfo,
builtin_interfaces/Time) and the module's docstrings: field layout, point_step/row_step padding,
is_bigendian/is_dense, count, encodings, step, P/size validity, and the user-facing error texts
(MessageFormatError: "the text says exactly why"). Readers duck-type the message, so several
tests feed plain namespaces carrying bytes / lists / numpy data, as rosbags and hand-built
messages do. All small arrays: the whole file runs in about a second.
"""
from __future__ import annotations

from types import SimpleNamespace as NS

import numpy as np
import pytest

from squeeze_perception import interfaces as itf
from squeeze_perception.msgs_conv import (CameraInfoError, CloudFormatError, ImageEncodingError,
                                          array_to_cloud, array_to_image, camera_info_to_arrays,
                                          cloud_to_array, cloud_to_table, dtype_to_fields,
                                          fields_to_dtype, finite_mask, image_to_array, packed,
                                          stamp_to_ns, xyz)

# sensor_msgs/PointField datatype constants (PointField.msg).
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)


def _pf(name, offset, datatype=FLOAT32, count=1):
    from sensor_msgs.msg import PointField
    return PointField(name=name, offset=offset, datatype=datatype, count=count)


def _xyzi_fields():
    return [_pf(n, 4 * i) for i, n in enumerate(("x", "y", "z", "intensity"))]


def _points(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = np.zeros(n, itf.POINT_DTYPE)
    for name in itf.POINT_DTYPE.names:
        arr[name] = rng.normal(size=n).astype(np.float32)
    return arr


def _ns_cloud(fields, point_step, data, width, height=1, row_step=None, is_bigendian=False):
    """A duck-typed PointCloud2 (what rosbags or a hand-built message looks like)."""
    return NS(fields=fields, point_step=point_step, width=width, height=height,
              row_step=width * point_step if row_step is None else row_step,
              is_bigendian=is_bigendian, data=data)


# =========================================================================== fields_to_dtype
def test_fields_to_dtype_is_little_endian_unless_told_otherwise():
    dt = fields_to_dtype(_xyzi_fields(), 16)
    assert dt == np.dtype({"names": ["x", "y", "z", "intensity"], "formats": ["<f4"] * 4,
                           "offsets": [0, 4, 8, 12], "itemsize": 16})
    assert dt.fields["x"][0].str == "<f4"
    be = fields_to_dtype(_xyzi_fields(), 16, is_bigendian=True)
    assert be.fields["x"][0].str == ">f4"


@pytest.mark.parametrize("datatype, npstr", [(INT8, "|i1"), (UINT8, "|u1"), (INT16, "<i2"),
                                             (UINT16, "<u2"), (INT32, "<i4"), (UINT32, "<u4"),
                                             (FLOAT32, "<f4"), (FLOAT64, "<f8")])
def test_every_pointfield_datatype_maps_to_its_numpy_type(datatype, npstr):
    dt = fields_to_dtype([_pf("v", 0, datatype)], 8)
    assert dt.fields["v"][0].str == npstr and dt.itemsize == 8


def test_count_greater_than_one_is_a_subarray_and_count_zero_or_missing_is_scalar():
    dt = fields_to_dtype([_pf("normal", 0, FLOAT32, 3), _pf("pair", 12, UINT8, 2),
                          _pf("zero", 14, UINT8, 0), NS(name="nocount", offset=15, datatype=UINT8)],
                         16)
    assert dt.fields["normal"][0].shape == (3,) and dt.fields["normal"][0].base == np.dtype("<f4")
    assert dt.fields["pair"][0].shape == (2,)
    assert dt.fields["zero"][0].shape == () and dt.fields["zero"][0] == np.dtype("u1")
    assert dt.fields["nocount"][0].shape == () and dt.fields["nocount"][0] == np.dtype("u1")
    assert dt.itemsize == 16


def test_count_limits():
    # 65535 is the largest plausible count; one more is refused with the field named.
    dt = fields_to_dtype([_pf("blob", 0, UINT8, 65535)], 65535)
    assert dt.fields["blob"][0].shape == (65535,)
    with pytest.raises(CloudFormatError, match=r"field 'blob' has an implausible count 65536"):
        fields_to_dtype([_pf("blob", 0, UINT8, 65536)], 70000)
    with pytest.raises(CloudFormatError, match=r"field 'neg' has an implausible count -2"):
        fields_to_dtype([NS(name="neg", offset=0, datatype=UINT8, count=-2)], 8)


def test_bad_fields_are_refused_with_the_reason():
    with pytest.raises(CloudFormatError, match="empty name"):
        fields_to_dtype([_pf("", 0)], 4)
    with pytest.raises(CloudFormatError, match=r"field 'rgb' has unknown PointField datatype 9"):
        fields_to_dtype([_pf("rgb", 0, 9)], 4)
    with pytest.raises(CloudFormatError, match=r"field 'x' has a negative offset -4"):
        fields_to_dtype([NS(name="x", offset=-4, datatype=FLOAT32, count=1)], 4)
    with pytest.raises(CloudFormatError,
                       match=r"point_step 12 is smaller than the field layout needs \(16 bytes\)"):
        fields_to_dtype(_xyzi_fields(), 12)


def test_duplicate_field_names_are_reported_with_their_offsets():
    fields = [_pf("x", 0), _pf("y", 4), _pf("x", 8)]
    with pytest.raises(CloudFormatError) as ei:
        fields_to_dtype(fields, 12)
    assert str(ei.value) == ("PointCloud2 field 'x' appears 2 times (offsets 0, 8); "
                             "field names must be unique")


def test_no_fields_give_an_empty_record_of_point_step_bytes():
    assert fields_to_dtype([], 4).itemsize == 4 and fields_to_dtype([], 4).names == ()
    assert fields_to_dtype([], 0).itemsize == 0


def test_a_layout_numpy_cannot_represent_is_a_cloud_format_error():
    # point_step is uint32 in the message; numpy records stop at 2**31 - 1 bytes.
    with pytest.raises(CloudFormatError, match=r"field layout cannot be decoded: .+"):
        fields_to_dtype([_pf("x", 0)], 2 ** 31)


# =========================================================================== dtype_to_fields
def test_dtype_to_fields_lists_name_offset_datatype_count():
    dt = np.dtype({"names": ["x", "label", "normal", "d"], "formats": ["<f4", "<i4", ("<f4", (3,)), "<f8"],
                   "offsets": [0, 4, 8, 24], "itemsize": 40})
    assert dtype_to_fields(dt) == [("x", 0, FLOAT32, 1), ("label", 4, INT32, 1),
                                   ("normal", 8, FLOAT32, 3), ("d", 24, FLOAT64, 1)]
    # A 2-D subarray counts all its elements.
    assert dtype_to_fields(np.dtype([("m", "<f4", (2, 3))])) == [("m", 0, FLOAT32, 6)]


def test_dtype_to_fields_accepts_titled_fields():
    dt = np.dtype([(("x coordinate", "x"), "<f4"), ("y", "<f4")])
    assert dtype_to_fields(dt) == [("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1)]


def test_dtype_without_pointfield_equivalent_names_the_field():
    with pytest.raises(TypeError, match=r"field 'big' has dtype int64 with no PointField equivalent"):
        dtype_to_fields(np.dtype([("x", "<f4"), ("big", "<i8")]))


# =========================================================================== array_to_cloud
def test_array_to_cloud_follows_the_pointcloud2_layout():
    arr = _points(5)
    msg = array_to_cloud(arr)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1), ("intensity", 12, FLOAT32, 1)]
    assert msg.height == 1 and msg.width == 5
    assert msg.point_step == 16 and msg.row_step == 80
    assert msg.is_bigendian is False
    assert msg.is_dense is True
    assert bytes(msg.data) == arr.tobytes()
    assert msg.header.frame_id == ""


def test_array_to_cloud_subarray_fields_carry_their_count():
    dt = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "u1", (3,))])
    msg = array_to_cloud(np.zeros(2, dt))
    assert [(f.name, f.count) for f in msg.fields] == [("x", 1), ("y", 1), ("z", 1), ("rgb", 3)]
    assert msg.point_step == 15


def test_array_to_cloud_flattens_an_organised_array():
    arr = _points(6).reshape(2, 3)
    msg = array_to_cloud(arr)
    assert msg.height == 1 and msg.width == 6 and msg.row_step == 96
    np.testing.assert_array_equal(cloud_to_array(msg), arr.reshape(-1))


def test_array_to_cloud_keeps_the_given_header_and_sets_frame_id():
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    hdr = Header(stamp=Time(sec=12, nanosec=34), frame_id="velo_link")
    msg = array_to_cloud(_points(2), header=hdr)
    assert msg.header.stamp.sec == 12 and msg.header.stamp.nanosec == 34
    assert msg.header.frame_id == "velo_link"
    msg = array_to_cloud(_points(2), header=Header(stamp=Time(sec=1)), frame_id="base_link")
    assert msg.header.stamp.sec == 1 and msg.header.frame_id == "base_link"


@pytest.mark.parametrize("bad", ["x", "y", "z"])
def test_is_dense_is_false_when_any_coordinate_is_not_finite(bad):
    arr = _points(4)
    arr[bad][2] = np.nan
    assert array_to_cloud(arr).is_dense is False
    arr[bad][2] = np.inf
    assert array_to_cloud(arr).is_dense is False


def test_is_dense_looks_at_coordinates_only():
    arr = _points(4)
    arr["intensity"][1] = np.nan  # a missing intensity does not make the point invalid
    assert array_to_cloud(arr).is_dense is True


def test_tables_without_coordinates_are_dense():
    det = np.zeros(2, itf.DETECTION_DTYPE)
    assert "x" not in det.dtype.names
    assert array_to_cloud(det).is_dense is True
    assert array_to_cloud(itf.empty(itf.DETECTION_DTYPE)).is_dense is True


# =========================================================================== cloud_to_array
def test_single_point_cloud_is_decoded():
    arr = _points(1)
    back = cloud_to_array(array_to_cloud(arr))
    assert back.shape == (1,)
    np.testing.assert_array_equal(back, arr)


def test_zero_height_or_zero_width_is_an_empty_cloud():
    raw = _ns_cloud(_xyzi_fields(), 16, b"", width=5, height=0)
    out = cloud_to_array(raw)
    assert len(out) == 0 and out.dtype == fields_to_dtype(_xyzi_fields(), 16)
    out = cloud_to_array(_ns_cloud(_xyzi_fields(), 16, b"", width=0, height=3))
    assert len(out) == 0


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "numpy", "list", "array"])
def test_duck_typed_clouds_with_any_byte_container(kind):
    import array as pyarray

    arr = _points(3)
    raw = arr.tobytes()
    data = {"bytes": raw, "bytearray": bytearray(raw), "memoryview": memoryview(raw),
            "numpy": np.frombuffer(raw, np.uint8).copy(), "list": list(raw),
            "array": pyarray.array("B", raw)}[kind]
    fields = [NS(name=n, offset=4 * i, datatype=FLOAT32, count=1)
              for i, n in enumerate(("x", "y", "z", "intensity"))]
    np.testing.assert_array_equal(cloud_to_array(_ns_cloud(fields, 16, data, width=3)), arr)


def test_fields_without_count_attribute_are_scalars():
    arr = _points(2)
    fields = [NS(name=n, offset=4 * i, datatype=FLOAT32) for i, n in enumerate(("x", "y", "z", "intensity"))]
    back = cloud_to_array(_ns_cloud(fields, 16, arr.tobytes(), width=2))
    np.testing.assert_array_equal(back, arr)


def test_count_zero_required_field_is_one_scalar():
    arr = _points(2)
    fields = [_pf(n, 4 * i, FLOAT32, 0) for i, n in enumerate(("x", "y", "z", "intensity"))]
    np.testing.assert_array_equal(cloud_to_array(_ns_cloud(fields, 16, arr.tobytes(), width=2)), arr)


def test_required_field_with_count_above_one_is_refused():
    fields = [_pf("x", 0, FLOAT32, 3), _pf("y", 12), _pf("z", 16), _pf("intensity", 20)]
    msg = _ns_cloud(fields, 24, bytes(48), width=2)
    with pytest.raises(CloudFormatError) as ei:
        cloud_to_array(msg)
    text = str(ei.value)
    assert text.startswith("field 'x' has count 3; required fields ['x', 'y', 'z', 'intensity'] "
                           "must each be one scalar per point (count 1)")


def test_extra_fields_may_have_any_count():
    dt = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4"), ("normal", "<f4", (3,))])
    arr = np.zeros(3, dt)
    arr["normal"] = np.arange(9, dtype=np.float32).reshape(3, 3)
    back = cloud_to_array(array_to_cloud(arr))
    assert back.dtype["normal"].shape == (3,)
    np.testing.assert_array_equal(back["normal"], arr["normal"])


def test_one_byte_points_are_valid():
    labels = np.array([3, 1, 2], dtype=[("label", "u1")])
    msg = array_to_cloud(labels)
    assert msg.point_step == 1
    np.testing.assert_array_equal(cloud_to_array(msg, required=("label",))["label"], [3, 1, 2])


def test_zero_row_step_means_unpadded_rows():
    arr = _points(6)
    msg = _ns_cloud(_xyzi_fields(), 16, arr.tobytes(), width=3, height=2, row_step=0)
    np.testing.assert_array_equal(cloud_to_array(msg), arr)


def test_row_step_shorter_than_a_row_is_refused():
    msg = _ns_cloud(_xyzi_fields(), 16, bytes(96), width=3, height=2, row_step=32)
    with pytest.raises(CloudFormatError, match=r"^row_step 32 < width 3 x point_step 16$"):
        cloud_to_array(msg)


def test_short_data_is_refused_with_sizes():
    msg = _ns_cloud(_xyzi_fields(), 16, bytes(40), width=3, height=1)
    with pytest.raises(CloudFormatError, match=r"data has 40 bytes but height 1 x row_step 48 needs 48"):
        cloud_to_array(msg)


def test_trailing_bytes_after_the_last_row_are_ignored():
    arr = _points(3)
    msg = _ns_cloud(_xyzi_fields(), 16, arr.tobytes() + bytes(16), width=3)
    back = cloud_to_array(msg)
    assert len(back) == 3
    np.testing.assert_array_equal(back, arr)


def test_padded_rows_with_row_step_are_stripped():
    arr = _points(4)
    rows = arr.tobytes()
    data = rows[:32] + b"\xff" * 8 + rows[32:] + b"\xff" * 8
    back = cloud_to_array(_ns_cloud(_xyzi_fields(), 16, data, width=2, height=2, row_step=40))
    np.testing.assert_array_equal(back, arr)


def test_big_endian_cloud_decodes_to_little_endian_and_republishes_intact():
    arr = _points(4)
    be = arr.astype(arr.dtype.newbyteorder(">"))
    msg = _ns_cloud(_xyzi_fields(), 16, be.tobytes(), width=4, is_bigendian=True)
    back = cloud_to_array(msg)
    for n in arr.dtype.names:
        assert back.dtype.fields[n][0].byteorder in ("<", "="), n
    assert back.tobytes() == arr.tobytes()
    # array_to_cloud always writes is_bigendian False, so the decoded array must be little endian.
    np.testing.assert_array_equal(cloud_to_array(array_to_cloud(back)), arr)


def test_empty_big_endian_cloud_has_the_same_little_endian_dtype_as_a_full_one():
    full = cloud_to_array(_ns_cloud(_xyzi_fields(), 16, bytes(32), width=2, is_bigendian=True))
    empty = cloud_to_array(_ns_cloud(_xyzi_fields(), 16, b"", width=0, is_bigendian=True))
    assert len(empty) == 0 and empty.dtype == full.dtype
    assert empty.dtype.fields["x"][0].str == "<f4"


def test_mixed_width_big_endian_fields():
    dt = np.dtype([("x", ">f4"), ("y", ">f4"), ("z", ">f4"), ("intensity", ">f4"), ("ring", ">u2"), ("flag", "u1")])
    arr = np.zeros(2, dt)
    arr["x"] = [1.5, -2.0]
    arr["ring"] = [7, 300]
    arr["flag"] = [1, 2]
    fields = [_pf("x", 0), _pf("y", 4), _pf("z", 8), _pf("intensity", 12), _pf("ring", 16, UINT16),
              _pf("flag", 18, UINT8)]
    back = cloud_to_array(_ns_cloud(fields, 19, arr.tobytes(), width=2, is_bigendian=True))
    assert back["ring"].tolist() == [7, 300] and back["x"].tolist() == [1.5, -2.0]
    assert back.dtype.fields["ring"][0].str == "<u2"


def test_little_endian_cloud_keeps_its_layout():
    arr = _points(3)
    back = cloud_to_array(array_to_cloud(arr))
    assert back.dtype == arr.dtype


def test_missing_field_and_point_step_errors_name_the_cause():
    msg = _ns_cloud(_xyzi_fields()[:3], 16, bytes(16), width=1)
    with pytest.raises(CloudFormatError,
                       match=r"PointCloud2 lacks required field\(s\) \['intensity'\]; it has \['x', 'y', 'z'\]"):
        cloud_to_array(msg)
    with pytest.raises(CloudFormatError, match=r"point_step must be positive, got -1"):
        cloud_to_array(_ns_cloud(_xyzi_fields(), -1, bytes(16), width=1))


# =========================================================================== cloud_to_table
def test_cloud_to_table_reorders_to_the_expected_dtype_and_refuses_missing_columns():
    src = np.zeros(2, [("score", "<f4"), ("class_id", "<i4")])
    src["score"] = [0.5, 0.25]
    src["class_id"] = [1, 3]
    want = np.dtype([("class_id", "<i4"), ("score", "<f4")])
    table = cloud_to_table(array_to_cloud(src), want)
    assert table.dtype == want and table["class_id"].tolist() == [1, 3]
    with pytest.raises(CloudFormatError, match="lacks required field"):
        cloud_to_table(array_to_cloud(src), np.dtype([("class_id", "<i4"), ("track_id", "<i4")]))


# =========================================================================== xyz / finite_mask / packed
def test_xyz_is_n_by_3_float32_in_x_y_z_order():
    dt = np.dtype([("intensity", "<f4"), ("z", "<f8"), ("y", "<f8"), ("x", "<f8")])
    cloud = np.zeros(4, dt)
    cloud["x"], cloud["y"], cloud["z"] = [1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]
    out = xyz(cloud)
    assert out.shape == (4, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out, [[1, 5, 9], [2, 6, 10], [3, 7, 11], [4, 8, 12]])
    assert xyz(cloud[:0]).shape == (0, 3)


def test_finite_mask_requires_every_listed_field_finite():
    arr = _points(5)
    arr["x"][0] = np.nan
    arr["intensity"][2] = np.inf
    arr["z"][4] = -np.inf
    assert finite_mask(arr).tolist() == [False, True, False, True, False]
    assert finite_mask(arr, ("x", "y", "z")).tolist() == [False, True, True, True, False]
    # Fields the cloud does not have are skipped.
    assert finite_mask(arr, ("x", "ring")).tolist() == [False, True, True, True, True]
    assert finite_mask(arr[:0]).shape == (0,)


def test_packed_removes_padding_and_keeps_values():
    dt = np.dtype({"names": ["x", "y", "z", "label"], "formats": ["<f4", "<f4", "<f4", "<i4"],
                   "offsets": [0, 4, 8, 16], "itemsize": 32})
    arr = np.zeros(3, dt)
    arr["x"] = [1, 2, 3]
    arr["label"] = [-1, 5, 7]
    out = packed(arr)
    assert out.dtype == np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("label", "<i4")])
    assert out.dtype.itemsize == 16 and out.shape == (3,)
    assert out["x"].tolist() == [1, 2, 3] and out["label"].tolist() == [-1, 5, 7]
    assert len(out.tobytes()) == 3 * 16


def test_packed_returns_an_already_packed_array_contiguous_and_equal():
    arr = _points(6)[::2]
    assert not arr.flags.c_contiguous
    out = packed(arr)
    assert out.dtype == arr.dtype and out.flags.c_contiguous
    np.testing.assert_array_equal(out, arr)


# =========================================================================== Image
def test_array_to_image_fills_the_image_message():
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    img = np.arange(2 * 3 * 3).reshape(2, 3, 3)  # int64 input is encoded as uint8
    msg = array_to_image(img)
    assert (msg.height, msg.width, msg.encoding) == (2, 3, "rgb8")
    assert msg.step == 9 and msg.is_bigendian == 0
    assert bytes(msg.data) == img.astype(np.uint8).tobytes()
    assert msg.header.frame_id == "" and msg.header.stamp.sec == 0
    hdr = Header(stamp=Time(sec=5, nanosec=6), frame_id="camera_color_left")
    msg = array_to_image(img, header=hdr)
    assert msg.header.frame_id == "camera_color_left" and msg.header.stamp.nanosec == 6


def test_bgr8_is_stored_blue_first():
    rgb = np.array([[[10, 20, 30]]], np.uint8)
    assert bytes(array_to_image(rgb, "bgr8").data) == bytes([30, 20, 10])


def test_bgra8_is_stored_blue_first_with_alpha_last():
    # The array is RGB(A) whatever the encoding; bgra8 bytes are B, G, R, A (was stored as RGBA).
    rgba = np.array([[[10, 20, 30, 255], [1, 2, 3, 4]]], np.uint8)
    msg = array_to_image(rgba, "bgra8")
    assert msg.step == 8 and bytes(msg.data) == bytes([30, 20, 10, 255, 3, 2, 1, 4])
    assert image_to_array(msg).tolist() == [[[10, 20, 30], [1, 2, 3]]]
    msg = array_to_image(rgba, "rgba8")
    assert bytes(msg.data) == rgba.tobytes()
    assert image_to_array(msg).tolist() == [[[10, 20, 30], [1, 2, 3]]]
    with pytest.raises(ImageEncodingError, match=r"array shape \(1, 2, 3\) does not match encoding bgra8"):
        array_to_image(rgba[..., :3], "bgra8")


def test_mono16_is_two_bytes_per_pixel_little_endian():
    img = np.array([[1, 258, 65535]])
    msg = array_to_image(img, "mono16")
    assert msg.step == 6 and msg.is_bigendian == 0
    assert bytes(msg.data) == np.array([1, 258, 65535], "<u2").tobytes()
    back = image_to_array(msg)
    assert back.dtype == np.uint16 and back.tolist() == [[1, 258, 65535]]


def test_array_shape_must_match_the_encoding():
    with pytest.raises(ImageEncodingError, match=r"array shape \(2, 2, 4\) does not match encoding rgb8"):
        array_to_image(np.zeros((2, 2, 4), np.uint8), "rgb8")
    with pytest.raises(ImageEncodingError, match=r"array shape \(2, 2\) does not match encoding rgb8"):
        array_to_image(np.zeros((2, 2), np.uint8), "rgb8")
    with pytest.raises(ImageEncodingError, match=r"array shape \(2, 2, 3\) does not match encoding mono8"):
        array_to_image(np.zeros((2, 2, 3), np.uint8), "mono8")


def test_unknown_encoding_cannot_be_encoded():
    with pytest.raises(ImageEncodingError, match=r"cannot encode 'yuv422'"):
        array_to_image(np.zeros((2, 2, 3), np.uint8), "yuv422")


def _ns_image(h, w, enc, step, data, is_bigendian=0):
    return NS(height=h, width=w, encoding=enc, step=step, data=data, is_bigendian=is_bigendian)


@pytest.mark.parametrize("shape", [(1, 4), (4, 1), (1, 1)])
def test_one_row_or_one_column_images_decode(shape):
    img = np.arange(np.prod(shape) * 3, dtype=np.uint8).reshape(*shape, 3)
    np.testing.assert_array_equal(image_to_array(array_to_image(img)), img)


@pytest.mark.parametrize("h, w", [(0, 4), (4, 0), (0, 0)])
def test_empty_image_is_refused(h, w):
    with pytest.raises(ImageEncodingError, match=rf"^image is empty \({w}x{h}\)$"):
        image_to_array(_ns_image(h, w, "rgb8", 3 * w, b""))


def test_step_shorter_than_a_row_is_refused():
    with pytest.raises(ImageEncodingError, match=r"^step 5 < width 2 x 3 channels x 1 bytes$"):
        image_to_array(_ns_image(2, 2, "rgb8", 5, bytes(10)))


def test_short_image_data_is_refused():
    with pytest.raises(ImageEncodingError, match=r"^data has 10 bytes, needs step 6 x height 2$"):
        image_to_array(_ns_image(2, 2, "rgb8", 6, bytes(10)))


def test_trailing_image_bytes_are_ignored():
    img = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    np.testing.assert_array_equal(image_to_array(_ns_image(2, 2, "rgb8", 6, img.tobytes() + b"\0\0")), img)


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "numpy", "list"])
def test_duck_typed_images_with_any_byte_container(kind):
    img = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    raw = img.tobytes()
    data = {"bytes": raw, "bytearray": bytearray(raw), "memoryview": memoryview(raw),
            "numpy": np.frombuffer(raw, np.uint8).copy(), "list": list(raw)}[kind]
    np.testing.assert_array_equal(image_to_array(_ns_image(2, 2, "rgb8", 6, data)), img)


@pytest.mark.parametrize("is_bigendian", [0, 1])
def test_16_bit_images_honour_is_bigendian(is_bigendian):
    vals = np.array([[1, 258], [4096, 65535]])
    raw = vals.astype(">u2" if is_bigendian else "<u2").tobytes()
    for enc in ("mono16", "16UC1"):
        out = image_to_array(_ns_image(2, 2, enc, 4, raw, is_bigendian))
        assert out.tolist() == vals.tolist()


def test_rgba8_drops_alpha_and_8uc3_is_taken_as_is():
    rgba = np.array([[[1, 2, 3, 255], [4, 5, 6, 0]]], np.uint8)
    assert image_to_array(_ns_image(1, 2, "rgba8", 8, rgba.tobytes())).tolist() == [[[1, 2, 3], [4, 5, 6]]]
    assert image_to_array(_ns_image(1, 1, "8UC3", 3, bytes([7, 8, 9]))).tolist() == [[[7, 8, 9]]]
    assert image_to_array(_ns_image(1, 2, "8UC1", 2, bytes([7, 8]))).tolist() == [[7, 8]]


# =========================================================================== CameraInfo
KITTI_P2 = [721.5377, 0.0, 609.5593, 44.85728, 0.0, 721.5377, 172.854, 0.2163791, 0.0, 0.0, 1.0, 0.002745884]


def _camera_info(p=KITTI_P2, width=1242, height=375):
    from sensor_msgs.msg import CameraInfo

    msg = CameraInfo(width=width, height=height)
    msg.p = [float(v) for v in p]
    msg.k = [float(v) for v in (p[0:3] + p[4:7] + p[8:11])]
    return msg


def test_camera_info_gives_p_3x4_float64_and_size():
    p, size = camera_info_to_arrays(_camera_info())
    assert p.shape == (3, 4) and p.dtype == np.float64
    np.testing.assert_array_equal(p, np.array(KITTI_P2).reshape(3, 4))
    assert size == (1242, 375) and all(type(v) is int for v in size)


def test_duck_typed_camera_info_with_integer_p_is_float64():
    msg = NS(p=[700, 0, 600, 0, 0, 700, 170, 0, 0, 0, 1, 0], width=640, height=480)
    p, size = camera_info_to_arrays(msg)
    assert p.dtype == np.float64 and p[0, 0] == 700.0 and size == (640, 480)
    # A nested 3x4 P works too.
    p2, _ = camera_info_to_arrays(NS(p=np.reshape(KITTI_P2, (3, 4)).tolist(), width=1, height=1))
    np.testing.assert_array_equal(p2, np.reshape(KITTI_P2, (3, 4)))


def test_small_positive_focal_lengths_and_one_pixel_sizes_are_usable():
    p = list(KITTI_P2)
    p[0], p[5] = 0.5, 0.5
    out, size = camera_info_to_arrays(_camera_info(p, width=1, height=1))
    assert out[0, 0] == 0.5 and out[1, 1] == 0.5 and size == (1, 1)


def test_p_must_have_12_numeric_values():
    with pytest.raises(CameraInfoError, match=r"^camera_info p needs 12 values \(3x4\), got 9$"):
        camera_info_to_arrays(NS(p=[1.0] * 9, width=10, height=10))
    with pytest.raises(CameraInfoError, match=r"^camera_info p needs 12 values \(3x4\), got 13$"):
        camera_info_to_arrays(NS(p=[1.0] * 13, width=10, height=10))
    with pytest.raises(CameraInfoError, match=r"^camera_info p is not numeric: .+"):
        camera_info_to_arrays(NS(p=["fx"] * 12, width=10, height=10))


def _p_with(**idx):
    p = np.array(KITTI_P2).reshape(3, 4)
    for key, v in idx.items():
        p[int(key[1]), int(key[2])] = v
    return p.reshape(-1).tolist()


@pytest.mark.parametrize("p, width, height, shown", [
    (_p_with(p00=0.0), 1242, 375, "P[0,0]=0.0, P[1,1]=721.5377, 1242x375"),
    (_p_with(p00=-5.0), 1242, 375, "P[0,0]=-5.0, P[1,1]=721.5377, 1242x375"),
    (_p_with(p11=0.0), 1242, 375, "P[0,0]=721.5377, P[1,1]=0.0, 1242x375"),
    (_p_with(p11=-1.0), 1242, 375, "P[0,0]=721.5377, P[1,1]=-1.0, 1242x375"),
    (_p_with(p03=float("nan")), 1242, 375, "P[0,0]=721.5377, P[1,1]=721.5377, 1242x375"),
    (_p_with(p22=float("inf")), 1242, 375, "P[0,0]=721.5377, P[1,1]=721.5377, 1242x375"),
    (KITTI_P2, 0, 375, "P[0,0]=721.5377, P[1,1]=721.5377, 0x375"),
    (KITTI_P2, 1242, 0, "P[0,0]=721.5377, P[1,1]=721.5377, 1242x0"),
    ([0.0] * 12, 0, 0, "P[0,0]=0.0, P[1,1]=0.0, 0x0"),  # what an uncalibrated driver sends
])
def test_unusable_camera_info_is_refused_with_the_values(p, width, height, shown):
    with pytest.raises(CameraInfoError) as ei:
        camera_info_to_arrays(_camera_info(p, width, height))
    assert str(ei.value) == f"camera_info has no usable P / size ({shown})"


def test_negative_size_is_refused():
    with pytest.raises(CameraInfoError, match="no usable P / size"):
        camera_info_to_arrays(NS(p=KITTI_P2, width=-1, height=375))
    with pytest.raises(CameraInfoError, match="no usable P / size"):
        camera_info_to_arrays(NS(p=KITTI_P2, width=1242, height=-1))


# =========================================================================== stamp_to_ns
def test_stamp_to_ns_is_sec_times_1e9_plus_nanosec():
    from builtin_interfaces.msg import Time

    assert stamp_to_ns(Time(sec=3, nanosec=5)) == 3_000_000_005
    assert stamp_to_ns(Time(sec=1_700_000_000, nanosec=999_999_999)) == 1_700_000_000_999_999_999
    out = stamp_to_ns(NS(sec=2, nanosec=1))
    assert out == 2_000_000_001 and type(out) is int
    assert stamp_to_ns(NS(sec=0, nanosec=7)) == 7

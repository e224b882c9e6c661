"""SqueezeDet architecture against thesis Tables 3.4/3.5, anchors (k-means) and box transforms."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from squeeze_perception import registry
from squeeze_perception.detection.anchors import kmeans_anchors, shape_iou
from squeeze_perception.detection.loss import encode_deltas
from squeeze_perception.detection.models import SQUEEZEDET_LAYERS, grid_geometry, transform_boxes
from squeeze_perception.offline.detection.stats import THESIS_TABLE_3_4, model_stats


def test_registry_has_all_variants_with_thesis_input_sizes():
    names = registry.model_names("detection")
    assert {"squeezedet", "squeezedet_plus", "squeezedet_0.75x", "squeezedet_1.5x"} <= set(names)
    assert registry.get_model("squeezedet").input_shape == (3, 375, 1242)
    assert registry.get_model("squeezedet_0.75x").input_shape == (3, 281, 932)
    assert registry.get_model("squeezedet_1.5x").input_shape == (3, 562, 1863)


def test_squeezedet_output_is_76x22_grid_of_9_anchors_with_k_5_plus_c_channels():
    torch.manual_seed(0)
    model = registry.get_model("squeezedet").build().eval()
    assert (model.geometry.width, model.geometry.height) == (76, 22)  # Table 3.5, maxpool5 / ConvDet
    assert model.convdet.out_channels == 9 * (5 + 3) == 72
    assert model.convdet.kernel_size == (3, 3)
    x = torch.randn(1, 3, 375, 1242)
    with torch.no_grad():
        deltas, conf, cls = model.forward_raw(x)
        out = model(x)
    assert deltas.shape == (1, 15048, 4) and conf.shape == (1, 15048) and cls.shape == (1, 15048, 3)
    assert out.shape == (1, 76 * 22 * 9, 8)  # the thesis's 15,048 boxes per image
    assert torch.all((out[..., 4] >= 0) & (out[..., 4] <= 1))
    torch.testing.assert_close(out[..., 5:].sum(-1), torch.ones(1, 15048))
    assert torch.all(out[..., 2] >= out[..., 0]) and torch.all(out[..., 3] >= out[..., 1])


def test_intermediate_activation_sizes_follow_table_3_5():
    sizes = {}
    model = registry.get_model("squeezedet").build().eval()
    hooks = [m.register_forward_hook(lambda mod, i, o, n=name: sizes.__setitem__(n, tuple(o.shape[1:])))
             for name, m in zip(model.layer_names, model.features)]
    with torch.no_grad():
        model.to("meta")(torch.zeros(1, 3, 375, 1242, device="meta"))
    for h in hooks:
        h.remove()
    # (channels, height, width) of Table 3.5's "activation dimension" column (W x H x C there).
    assert sizes["conv1"] == (64, 187, 620)
    assert sizes["maxpool1"] == (64, 93, 309)
    assert sizes["fire3"] == (128, 93, 309)
    assert sizes["maxpool3"] == (128, 46, 154)
    assert sizes["maxpool5"] == (256, 22, 76)
    assert sizes["fire9"] == (512, 22, 76)
    assert sizes["fire11"] == (768, 22, 76)


@pytest.mark.parametrize("name", ["squeezedet", "squeezedet_plus", "squeezedet_0.75x", "squeezedet_1.5x"])
def test_size_and_flops_match_thesis_table_3_4(name):
    s = model_stats(name)
    t = THESIS_TABLE_3_4[name]
    assert s.size_mb == pytest.approx(t["size_mb"], rel=0.02)
    assert s.gflops == pytest.approx(t["gflops"], rel=0.03)
    assert s.activation_mb == pytest.approx(t["activation_mb"], rel=0.03)


def test_convdet_parameter_count_formula():
    model = registry.get_model("squeezedet").build()
    n = sum(p.numel() for p in model.convdet.parameters())
    assert n == 3 * 3 * 768 * 9 * (5 + 3) + 72  # F_w F_h Ch_f K (5 + C) + biases (Table 3.1)


def test_grid_geometry_tracks_valid_convolutions():
    g = grid_geometry(SQUEEZEDET_LAYERS, 1242, 375)
    assert (g.width, g.height, g.stride) == (76, 22, 16)
    # conv1 k3/s2 -> centre 1; pool -> 2*1+1=3 px ... -> 15 px after the third pool.
    assert g.offset == 15.0
    c = g.centres()
    assert c.shape == (76 * 22, 2) and tuple(c[0]) == (15.0, 15.0) and tuple(c[1]) == (31.0, 15.0)
    assert tuple(c[76]) == (15.0, 31.0)  # row-major


def test_anchor_layout_matches_output_layout():
    model = registry.get_model("squeezedet_0.75x").build()
    anchors = model.anchors()
    assert anchors.shape == (57 * 16 * 9, 4)
    # anchor index (row * W + col) * K + k
    row, col, k = 3, 5, 7
    a = anchors[(row * 57 + col) * 9 + k]
    assert a[0] == 15 + 16 * col and a[1] == 15 + 16 * row
    torch.testing.assert_close(a[2:], model.anchor_shapes[k])


def test_anchor_shapes_travel_in_the_state_dict():
    model = registry.get_model("squeezedet").build()
    new = np.arange(18, dtype=np.float32).reshape(9, 2) + 10
    model.set_anchor_shapes(new)
    other = registry.get_model("squeezedet").build()
    other.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(other.anchor_shapes.numpy(), new)
    with pytest.raises(ValueError):
        model.set_anchor_shapes(np.ones((4, 2)))


def test_transform_inverts_encoding_eq_3_1_and_3_3():
    anchors = np.array([[100.0, 50.0, 40.0, 20.0], [10.0, 10.0, 8.0, 16.0]])
    gt = np.array([[90.0, 35.0, 130.0, 71.0], [0.0, 4.0, 30.0, 14.0]])
    deltas = encode_deltas(anchors, gt)
    # hand check of eq. 3.3 for the first box: centre (110, 53), size 40 x 36
    np.testing.assert_allclose(deltas[0], [10 / 40, 3 / 20, 0.0, np.log(36 / 20)])
    back = transform_boxes(torch.tensor(anchors), torch.tensor(deltas)).numpy()
    np.testing.assert_allclose(back, gt, atol=1e-9)


def test_kmeans_recovers_three_shape_clusters():
    rng = np.random.default_rng(1)
    truth = np.array([[12.0, 30.0], [60.0, 30.0], [120.0, 110.0]])
    shapes = np.concatenate([t * rng.uniform(0.95, 1.05, size=(40, 2)) for t in truth])
    centroids, mean_iou = kmeans_anchors(shapes, k=3, seed=0)
    np.testing.assert_allclose(centroids, truth, rtol=0.05)  # sorted by area like truth
    assert mean_iou > 0.9
    assert shape_iou(np.array([[10.0, 10.0]]), np.array([[20.0, 5.0]]))[0, 0] == pytest.approx(50 / 150)
    with pytest.raises(ValueError):
        kmeans_anchors(shapes[:2], k=3)


def test_onnxruntime_export_matches_torch_including_decoding(tmp_path):
    from squeeze_perception.backends import OnnxRuntimeBackend, TorchBackend
    from squeeze_perception.offline.detection.bench import measure_peak_flops

    spec = registry.get_model("squeezedet_0.75x")
    torch.manual_seed(0)
    model = spec.build()
    model.set_anchor_shapes(np.linspace(10, 200, 18, dtype=np.float32).reshape(9, 2))
    path = tmp_path / "w.pt"
    torch.save({"state_dict": model.state_dict(), "model": spec.name, "meta": {}}, path)
    x = np.random.default_rng(0).normal(size=(1, *spec.input_shape)).astype(np.float32)
    ref = TorchBackend(spec, weights=path).infer(x)
    ort = OnnxRuntimeBackend(spec, weights=path).infer(x)  # exports w.onnx beside the weights
    assert (tmp_path / "w.onnx").exists()
    np.testing.assert_allclose(ort, ref, rtol=1e-3, atol=1e-3)
    assert measure_peak_flops(n=128, repeats=2) > 0
    from squeeze_perception.offline.detection.bench import ort_matmul_runner

    (c,) = ort_matmul_runner(n=32, threads=1)()
    rng = np.random.default_rng(0)  # the runner's inputs, drawn the same way
    a, b = rng.standard_normal((32, 32), dtype=np.float32), rng.standard_normal((32, 32), dtype=np.float32)
    np.testing.assert_allclose(c, a @ b, rtol=1e-4, atol=1e-4)

"""Letterbox preprocessing, crop/flip augmentation, and a two-step training smoke run (resumable)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from squeeze_perception.backends import load_state_dict
from squeeze_perception.detection.data import PIXEL_MEAN, augment, letterbox, list_samples, training_boxes
from squeeze_perception.kitti.labels import read_labels
from squeeze_perception.offline.detection.train import DetTrainConfig, input_anchors, train


def test_letterbox_kitti_1224x370_scales_then_pads_and_maps_back():
    img = np.full((370, 1224, 3), 200, np.uint8)
    canvas, lb = letterbox(img, 1242, 375)
    assert canvas.shape == (375, 1242, 3)
    assert lb.scale == pytest.approx(375 / 370)
    assert (canvas[:, 1241:] == PIXEL_MEAN.round().astype(np.uint8)).all()  # 1224 * 1.0135 = 1240.5 -> 1241
    assert (canvas[:, :1241] == 200).all()
    box_model = np.array([[101.35, 50.68, 202.7, 101.35]], np.float32)
    np.testing.assert_allclose(lb.to_original(box_model), [[100, 50, 200, 100]], atol=0.01)
    np.testing.assert_allclose(lb.to_original(np.array([[-5, -5, 5000, 5000]], np.float32)), [[0, 0, 1224, 370]])


def test_letterbox_identity_for_model_sized_image_and_mono():
    img = np.random.default_rng(0).integers(0, 255, (375, 1242, 3), dtype=np.uint8)
    canvas, lb = letterbox(img, 1242, 375)
    assert lb.scale == 1.0 and np.array_equal(canvas, img)
    canvas, _ = letterbox(np.zeros((375, 1242), np.uint8), 1242, 375)
    assert canvas.shape == (375, 1242, 3)


def test_augment_flip_and_crop_move_boxes_with_the_pixels():
    rng = np.random.default_rng(3)
    img = np.zeros((100, 200, 3), np.uint8)
    img[20:40, 10:50] = 255  # one bright box
    boxes = np.array([[10, 20, 50, 40]], np.float32)
    for _ in range(20):
        out, b, kept = augment(img, boxes, rng, 200, 100, max_shift=(30, 10))
        if len(b):
            x1, y1, x2, y2 = np.round(b[0]).astype(int)
            assert (out[y1:y2, x1:x2] == 255).all()  # the box still frames the bright pixels
            assert kept.tolist() == [0]
    # a window that shows less than half of the box drops it
    out, b, kept = augment(img, boxes, np.random.default_rng(0), 30, 100, max_shift=(0, 0), flip=False)
    assert out.shape == (100, 30, 3)


def _tiny_split(root, n_images=2, size=(200, 120)):
    (root / "image_2").mkdir(parents=True)
    (root / "label_2").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n_images):
        img = np.full((size[1], size[0], 3), 80, np.uint8)
        lines = []
        for k in range(5):
            w, h = rng.uniform(15, 60), rng.uniform(15, 50)
            x, y = rng.uniform(0, size[0] - w), rng.uniform(0, size[1] - h)
            img[int(y):int(y + h), int(x):int(x + w)] = (200, 40 * k, 40)
            kind = ("Car", "Pedestrian", "Cyclist", "Car", "DontCare")[k]
            lines.append(f"{kind} 0.00 0 0.00 {x:.2f} {y:.2f} {x + w:.2f} {y + h:.2f} 1.5 1.6 3.9 1 1.5 20 0")
        Image.fromarray(img).save(root / "image_2" / f"{i:06d}.png")
        (root / "label_2" / f"{i:06d}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_training_smoke_two_steps_then_resume(tmp_path):
    split = _tiny_split(tmp_path / "training", n_images=3)
    samples = list_samples(split)
    boxes, classes = training_boxes(read_labels(samples[0].label_path))
    assert len(boxes) == 4 and set(classes.tolist()) == {1, 2, 3}  # DontCare not trained
    out = tmp_path / "sq.pt"
    cfg = DetTrainConfig(arch="squeezedet", data=str(split), out=str(out), steps=2, batch_size=2,
                         crop_width=160, crop_height=96, max_shift=(20, 10), threads=1, checkpoint_every=1,
                         log_every=1)
    result = train(cfg, progress=False)
    assert result["steps"] == 2 and np.isfinite(result["final_loss"])
    ck = torch.load(out, map_location="cpu", weights_only=True)
    assert ck["model"] == "squeezedet" and ck["meta"]["steps"] == 2
    shapes = np.asarray(ck["meta"]["anchors"]["shapes"])
    assert shapes.shape == (9, 2)
    # the k-means anchors (training boxes letterboxed x375/120) are stored in the state_dict too
    np.testing.assert_allclose(ck["state_dict"]["anchor_shapes"].numpy(), shapes, atol=0.06)
    assert (shapes > 15 * 375 / 120 * 0.9).all()
    assert load_state_dict(out)["convdet.weight"].shape == (72, 768, 3, 3)
    log = [json.loads(line) for line in (tmp_path / "sq.log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(np.isfinite(r["loss"]) for r in log)
    before = ck["state_dict"]["convdet.weight"].clone()
    cfg.steps, cfg.resume = 3, True
    result = train(cfg, progress=False)
    assert result["steps"] == 3
    after = torch.load(out, map_location="cpu", weights_only=True)["state_dict"]["convdet.weight"]
    assert not torch.equal(before, after)  # the resumed step updated the weights
    # a second phase from these weights with another optimiser keeps the anchors
    cfg2 = DetTrainConfig(arch="squeezedet", data=str(split), out=str(tmp_path / "phase2.pt"), steps=1,
                          batch_size=1, crop_width=160, crop_height=96, threads=1, optimizer="adam", lr=1e-4,
                          init_weights=str(out))
    assert train(cfg2, progress=False)["steps"] == 1
    ck2 = torch.load(tmp_path / "phase2.pt", map_location="cpu", weights_only=True)
    np.testing.assert_array_equal(ck2["state_dict"]["anchor_shapes"].numpy(),
                                  ck["state_dict"]["anchor_shapes"].numpy())
    assert ck2["meta"]["anchors"]["init_steps"] == 3


def test_input_anchors_follow_crop_geometry():
    from squeeze_perception import registry

    model = registry.get_model("squeezedet").build()
    a = input_anchors(model, 160, 96)
    # 160 -> 79 -> 39 -> 19 -> 9 columns; 96 -> 47 -> 23 -> 11 -> 5 rows
    assert a.shape == (9 * 5 * 9, 4)
    assert tuple(a[9][:2]) == (31.0, 15.0)


def test_plot_training_log_and_cli_stats(tmp_path, capsys):
    from squeeze_perception.offline.detection.cli import main
    from squeeze_perception.offline.detection.train import plot_training_log

    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "loss": 10 / s, "bbox": 1 / s, "conf": 8 / s, "class": 1 / s}) + "\n"
                           for s in range(1, 12)))
    plot_training_log(log, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 1000
    assert main(["stats", "--models", "squeezedet", "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "76x22" in out and "15048" in out
    rows = json.loads((tmp_path / "s.json").read_text())
    assert rows[0]["params"] == 2082120 and rows[0]["thesis"]["gflops"] == 9.7


def test_plot_compare_puts_runs_side_by_side_and_refuses_an_empty_log(tmp_path, capsys):
    from squeeze_perception.offline.detection.cli import main

    for name, scale in (("fp32", 10.0), ("bf16", 11.0)):
        lines = [json.dumps({"step": s, "loss": scale / s}) for s in range(1, 30)]
        lines += [json.dumps({"step": s, "eval": {"car_moderate_ap40": 3.0 * s, "map40_moderate": s}})
                  for s in (10, 20)]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "compare.png"
    assert main(["plot-compare", f"fp32={tmp_path / 'fp32.jsonl'}", str(tmp_path / "bf16.jsonl"),
                 "--out", str(out)]) == 0
    assert out.stat().st_size > 1000 and "wrote" in capsys.readouterr().out
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="no records"):
        main(["plot-compare", str(tmp_path / "empty.jsonl"), "--out", str(out)])


def test_seeded_batchnorm_keeps_plain_weights_function_in_training_mode():
    """Plain (folded) weights loaded into a batch-norm network: after seeding, the network in
    training mode (batch statistics) computes what the plain network computes, while unseeded
    fresh BNs re-normalise every layer and change the output."""
    from squeeze_perception.detection.models import fold_batchnorm, seed_batchnorm_as_identity
    from squeeze_perception.offline.detection.train import build_training_module
    from squeeze_perception.registry import get_model

    torch.manual_seed(0)
    spec = get_model("squeezedet", task="detection")
    plain = build_training_module(spec, batchnorm=False, dropout=0.0).eval()
    with torch.no_grad():  # a plain net whose activations are far from zero-mean / unit-variance
        for p in plain.parameters():
            if p.ndim == 1:
                p.add_(0.3)
    batch = torch.randn(2, 3, 96, 160)
    with torch.no_grad():
        reference_features, reference = plain.features(batch), plain.forward_raw(batch)[1]
    bn_net = build_training_module(spec, batchnorm=True, dropout=0.0)
    bn_net.load_state_dict(plain.state_dict(), strict=False)
    bn_net.train()
    with torch.no_grad():
        unseeded = bn_net.forward_raw(batch)[1]
    assert seed_batchnorm_as_identity(bn_net, [batch]) > 10
    assert bn_net.training  # left in the mode it was in
    with torch.no_grad():
        seeded_features, seeded = bn_net.features(batch), bn_net.forward_raw(batch)[1]
    # fp32 rounding through 14 layers: the features agree to 1e-3 of their scale; ConvDet's
    # 768-channel sums of large, cancelling terms amplify that, still 20x below the unseeded gap.
    feature_scale = reference_features.abs().max()
    assert (seeded_features - reference_features).abs().max() < 1e-3 * feature_scale
    assert (seeded - reference).abs().max() < 0.05 * (unseeded - reference).abs().max()
    # and folding the seeded BNs back gives the plain weights again
    folded = fold_batchnorm(bn_net.eval())
    torch.testing.assert_close(folded["convdet.weight"], plain.state_dict()["convdet.weight"], atol=1e-4, rtol=1e-3)


def test_det_overfit_command_runs_and_ranks_frames_by_moderate_cars(tmp_path):
    """The documented full-size overfit command must at least start, train and score (here one
    step on tiny frames, so it reports FAIL with exit code 1), taking the densest frames first."""
    import json as _json

    from squeeze_perception.offline.detection.cli import main as det_main
    from squeeze_perception.offline.detection.train import moderate_count, select_overfit_frames

    split = _tiny_split(tmp_path / "training", n_images=4)
    sparse = split / "label_2" / "000000.txt"  # drop its cars: it must be ranked last
    sparse.write_text("".join(l + "\n" for l in sparse.read_text().splitlines() if not l.startswith("Car")))
    ranked = select_overfit_frames(split, 4)
    counts = [moderate_count(s.labels()) for s in ranked]
    assert counts == sorted(counts, reverse=True) and counts[0] > 0 == counts[-1] and ranked[-1].name == "000000"
    code = det_main(["overfit", "--split", str(split), "--frames", "3", "--steps", "1", "--batch-size", "1",
                     "--threads", "1", "--eval-every", "0", "--out-dir", str(tmp_path / "of")])
    result = _json.loads((tmp_path / "of" / "overfit_result.json").read_text())
    assert code == (0 if result["passed"] else 1)
    assert result["steps"] == 1 and result["moderate_cars"] == sum(counts[:3]) and "000000" not in result["frames"]


def test_photometric_on_the_device_matches_the_loader_version():
    """Training on an accelerator applies the loader's photometric draw with torch: the same
    tone curve and saturation (to a grey level), noise of the drawn strength, a blur that
    smooths like PIL's."""
    from dataclasses import replace

    from squeeze_perception.detection.data import (PhotometricDraw, apply_photometric, apply_photometric_torch,
                                                   draw_photometric, normalise, normalise_torch)

    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    img[:, :45] = (200, 120, 30)  # a flat half, so the blur comparison sees an edge and a plateau
    for seed in range(6):
        draw = replace(draw_photometric(np.random.default_rng(seed), 1.0), noise_sigma=0.0, blur_sigma=0.0)
        cpu = apply_photometric(img, draw, np.random.default_rng(0))
        dev = apply_photometric_torch(torch.from_numpy(img)[None], [draw])[0].numpy()
        assert np.abs(cpu.astype(int) - dev.astype(int)).max() <= 1
    noisy = PhotometricDraw((1.0, 1.0, 1.0), 1.0, 1.0, 1.0, noise_sigma=3.0, blur_sigma=0.0)
    flat = np.full((80, 80, 3), 128, np.uint8)
    out = apply_photometric_torch(torch.from_numpy(flat)[None], [noisy], torch.Generator().manual_seed(0))[0]
    assert abs(float(out.float().std()) - 3.0) < 0.3
    blurred = replace(noisy, noise_sigma=0.0, blur_sigma=1.0)
    cpu = apply_photometric(img, blurred, np.random.default_rng(0)).astype(int)
    dev = apply_photometric_torch(torch.from_numpy(img)[None], [blurred])[0].numpy().astype(int)
    assert np.abs(cpu - dev)[2:-2, 2:-2].mean() < 1.5  # PIL's box approximation vs a true Gaussian
    assert apply_photometric_torch(torch.from_numpy(img)[None], [None])[0].numpy().tolist() == img.tolist()
    np.testing.assert_allclose(normalise_torch(torch.from_numpy(img)[None])[0].numpy(), normalise(img), atol=1e-5)


def test_batch_stream_is_the_same_from_a_thread_or_loader_processes_and_after_resume(tmp_path):
    """Batch k comes from a generator seeded by (seed, k): the batches do not depend on how many
    processes load them, and a run resumed at step k continues the same stream."""
    from squeeze_perception.offline.detection.train import BatchStream, _batches

    split = _tiny_split(tmp_path / "training", n_images=4)
    anchors = np.tile(np.array([[80, 48, 30, 30]], np.float32), (12, 1))
    anchors[:, 0] += np.arange(12) * 5
    cfg = DetTrainConfig(steps=4, batch_size=2, seed=7, max_shift=(20, 10), photometric=1.0, positive_iou=0.3)
    for defer in (False, True):
        stream = BatchStream(list_samples(split), cfg, (200, 120), anchors, (160, 96), defer)
        by_thread = list(_batches(stream, 0, 0))
        by_processes = list(_batches(stream, 0, 2))
        resumed = list(_batches(stream, 2, 0))
        assert len(by_thread) == len(by_processes) == 4 and len(resumed) == 2
        for a, b in zip(by_thread, by_processes):
            np.testing.assert_array_equal(a[0], np.asarray(b[0]))
            assert [t.anchor_index.tolist() for t in a[1]] == [t.anchor_index.tolist() for t in b[1]]
            assert a[2] == b[2]
        np.testing.assert_array_equal(resumed[0][0], by_thread[2][0])
        assert by_thread[0][0].dtype == (np.uint8 if defer else np.float32)
        assert not np.array_equal(by_thread[0][0], by_thread[1][0])


def test_normalise_is_the_per_channel_standardisation():
    from squeeze_perception.detection.data import PIXEL_STD, normalise

    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    img[0, 0] = (0, 128, 255)
    expected = ((img.astype(np.float64) - PIXEL_MEAN) / PIXEL_STD).transpose(2, 0, 1)
    out = normalise(img)
    assert out.shape == (3, 37, 53) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, expected, atol=2e-6)
    # a letterboxed pad pixel (the rounded mean colour) is near 0 in every channel
    assert np.abs(normalise(np.full((2, 2, 3), PIXEL_MEAN.round(), np.uint8))).max() < 0.01


def test_preprocess_of_a_model_sized_frame_equals_the_letterboxed_path():
    from squeeze_perception.detection.data import normalise, preprocess

    img = np.random.default_rng(5).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    batch, lb = preprocess(img, 64, 48)
    canvas, lb_ref = letterbox(img, 64, 48)
    assert lb == lb_ref and np.array_equal(batch[0], normalise(canvas))
    other, lb_other = preprocess(img, 80, 48)  # another size still goes through the letterbox
    assert other.shape == (1, 3, 48, 80) and lb_other.scale == 1.0


def test_perfect_detector_ceiling_counts_the_boxes_nms_must_suppress(tmp_path):
    """The overfit check's ceiling: the true boxes as detections through the decoder's NMS. A car
    hidden behind a taller one by more than the NMS overlap is lost, and the ceiling drops."""
    from squeeze_perception.kitti.labels import read_labels
    from squeeze_perception.offline.detection.train import perfect_detector_ap

    def frame(lines):
        path = tmp_path / f"{len(list(tmp_path.iterdir())):06d}.txt"
        path.write_text("".join(f"Car 0.00 0 0.0 {u0} {v0} {u1} {v1} 1.5 1.6 3.9 0 1.6 20 0\n"
                                for u0, v0, u1, v1 in lines))
        return type("Sample", (), {"labels": lambda self, p=path: read_labels(p)})()

    apart = [frame([(100 + 60 * i, 150, 150 + 60 * i, 200) for i in range(5)]) for _ in range(10)]
    clean = perfect_detector_ap(apart)
    assert clean["suppressed"] == 0
    assert clean["per_class"]["car"]["moderate"]["ap"] == pytest.approx(100.0)
    # frame 0 now also holds a car mostly behind the first one (IoU 0.56 > 0.4), slightly shorter
    hidden = [frame([(100 + 60 * i, 150, 150 + 60 * i, 200) for i in range(5)] + [(120, 152, 150, 199)])] + apart[1:]
    ceiling = perfect_detector_ap(hidden)
    assert ceiling["suppressed"] == 1
    assert ceiling["per_class"]["car"]["moderate"]["ap"] < 100.0
    assert perfect_detector_ap(hidden, nms_iou=0.7)["suppressed"] == 0


def test_real_bn_mix_changes_batchnorm_statistics_but_not_what_the_loss_sees(tmp_path, monkeypatch):
    """`det train --real-bn-mix N --real-bn-images DIR`: N unlabelled real crops join each forward
    pass (batch norm sees them: its statistics differ from the same run without them), the loss
    gets the synthetic images only, and the synthetic batches are the same with and without."""
    from squeeze_perception.detection import loss as loss_module

    split = _tiny_split(tmp_path / "training", n_images=3)
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    for i in range(2):
        Image.fromarray(np.full((120, 200, 3), 240 - 30 * i, np.uint8)).save(real_dir / f"{i}.png")
    loss_inputs = []

    def recording_loss(deltas, conf, cls, anchors, targets):
        loss_inputs.append((deltas.shape[0], len(targets), sum(len(t.labels) for t in targets)))
        return real_loss(deltas, conf, cls, anchors, targets)

    real_loss = loss_module.squeezedet_loss
    monkeypatch.setattr(loss_module, "squeezedet_loss", recording_loss)  # train() imports it when called

    def first_bn_mean(mix: int, name: str):
        cfg = DetTrainConfig(arch="squeezedet", data=str(split), out=str(tmp_path / f"{name}.pt"), steps=2,
                             batch_size=2, crop_width=160, crop_height=96, max_shift=(20, 10), threads=1, lr=1e-9,
                             real_bn_mix=mix, real_bn_images=[str(real_dir)] if mix else [])
        train(cfg, progress=False)
        state = torch.load(tmp_path / f"{name}.ckpt", map_location="cpu", weights_only=False)["state_dict"]
        return next(v for k, v in state.items() if k.endswith("running_mean"))

    plain, mixed = first_bn_mean(0, "plain"), first_bn_mean(3, "mixed")
    assert [n for n, _, _ in loss_inputs] == [2, 2, 2, 2]  # never the 3 real crops
    assert loss_inputs[:2] == loss_inputs[2:]  # the same synthetic batches (their objects) in both runs
    assert not torch.allclose(plain, mixed)
    with pytest.raises(ValueError, match="real-bn-mix"):
        train(DetTrainConfig(arch="squeezedet", data=str(split), out=str(tmp_path / "bad.pt"), steps=1, batch_size=1,
                             crop_width=160, crop_height=96, real_bn_mix=2), progress=False)


def test_adabn_moves_batchnorm_statistics_to_the_target_images_and_mix_zero_keeps_the_source(tmp_path):
    """`det adapt` (AdaBN): every batch-norm layer's running statistics become those of the
    unlabelled target images (here uniformly bright frames); mix 0 leaves the source statistics."""
    from torch import nn

    from squeeze_perception.detection.data import normalise
    from squeeze_perception.offline.detection.adapt import adapt_batchnorm, list_images

    class Tiny(nn.Module):
        input_width, input_height = 256, 128

        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(3)

        def features(self, x):
            return self.bn(x)

    for i in range(2):
        Image.fromarray(np.full((128, 256, 3), 230, np.uint8)).save(tmp_path / f"{i}.png")
    images = list_images([tmp_path])
    target = torch.from_numpy(normalise(np.full((128, 256, 3), 230, np.uint8))).mean(dim=(1, 2))
    kept = Tiny()
    adapt_batchnorm(kept, images, passes=2, mix=0.0)
    assert torch.allclose(kept.bn.running_mean, torch.zeros(3)) and torch.allclose(kept.bn.running_var, torch.ones(3))
    adapted = Tiny()
    info = adapt_batchnorm(adapted, images, passes=2, batch_size=2)
    # Crops shifted beyond the frame (up to 60 x 20 px) are padded with the mean colour (0 after
    # normalising): the mean lies between 0 and the bright frames' value, nearer the latter.
    assert info["bn_layers"] == 1 and info["batches"] == 2
    assert torch.all(adapted.bn.running_mean > 0.5 * target) and torch.all(adapted.bn.running_mean <= target + 1e-5)
    half = Tiny()
    adapt_batchnorm(half, images, passes=2, batch_size=2, mix=0.5)  # the same crops (seed 0), blended with the source's 0
    assert torch.allclose(half.bn.running_mean, 0.5 * adapted.bn.running_mean, atol=1e-6)

"""Style alignment (offline/detection/style.py): histogram specification on luminance or channels,
moment matching, its use in training batches (`--style-images`) and in evaluation (`--align-images`)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from squeeze_perception.offline.detection.style import (apply_lut, fit_lut, histogram_lut, histograms, luma,
                                                         match_to)
from squeeze_perception.offline.detection.train import load_batch, style_histograms

from test_detection_train import _tiny_split


def _image(seed=0, low=40, high=120, shape=(60, 90)):
    rng = np.random.default_rng(seed)
    img = rng.integers(low, high, (*shape, 3)).astype(np.uint8)
    img[..., 0] = np.clip(img[..., 0].astype(int) + 30, 0, 255)  # a reddish cast, to check hues survive
    return img


def test_a_histogram_matched_onto_itself_is_the_identity_on_its_levels():
    img = _image()
    for method in ("luma", "channels"):
        h = histograms([img], method)
        lut = histogram_lut(h, h)
        used = h > 0
        assert np.array_equal(lut[used], np.broadcast_to(np.arange(256), h.shape)[used])
    assert np.array_equal(apply_lut(img, histogram_lut(histograms([img], "channels"),
                                                       histograms([img], "channels"))), img)


def test_histogram_lut_is_monotone_and_lands_on_the_target_distribution():
    dark, bright = _image(0, 10, 90), _image(1, 120, 250)
    lut = histogram_lut(histograms([dark], "channels"), histograms([bright], "channels"))
    assert (np.diff(lut.astype(int), axis=1) >= 0).all()
    out = apply_lut(dark, lut)
    for c in range(3):  # quantiles of the matched image follow the target's to a couple of levels
        q = [10, 50, 90]
        np.testing.assert_allclose(np.percentile(out[..., c], q), np.percentile(bright[..., c], q), atol=3)


def test_luma_matching_moves_brightness_and_keeps_hue():
    dark, bright = _image(0, 20, 80), _image(1, 90, 150)
    out = match_to(dark, histograms([bright], "luma"), "luma")
    assert abs(float(luma(out).mean()) - float(luma(bright).mean())) < 3
    # a per-pixel gain keeps the colour ratios (channels matched independently would not)
    ratio_in = dark[..., 0].astype(float) / np.maximum(dark[..., 1], 1)
    ratio_out = out[..., 0].astype(float) / np.maximum(out[..., 1], 1)
    unclipped = out.max(axis=2) < 255
    np.testing.assert_allclose(ratio_out[unclipped], ratio_in[unclipped], rtol=0.06, atol=0.02)


def test_moments_give_the_target_mean_and_std():
    src, tgt = _image(0, 30, 90), _image(1, 60, 200)
    out = apply_lut(src, fit_lut(histograms([src], "moments"), histograms([tgt], "moments"), "moments"))
    for c in range(3):
        assert out[..., c].mean() == pytest.approx(tgt[..., c].mean(), abs=1.5)
        assert out[..., c].std() == pytest.approx(tgt[..., c].std(), abs=1.5)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="uint8"):
        histograms([np.zeros((4, 4, 3), np.float32)])
    with pytest.raises(ValueError, match="method"):
        fit_lut(np.ones((1, 256)), np.ones((1, 256)), "fourier")
    with pytest.raises(ValueError, match="empty"):
        histogram_lut(np.zeros((1, 256)), np.ones((1, 256)))
    with pytest.raises(ValueError, match="shape"):
        apply_lut(_image(), np.zeros((2, 256), np.uint8))


def test_training_batches_take_the_style_images_tone_deterministically(tmp_path):
    split = _tiny_split(tmp_path / "training", n_images=2)
    style_dir = tmp_path / "real"
    style_dir.mkdir()
    camera = _image(5, 120, 250, shape=(80, 120))  # a much brighter "camera" than the frames' grey 80
    Image.fromarray(camera).save(style_dir / "a.png")
    hists = style_histograms([style_dir])
    assert hists.shape == (1, 1, 256)
    from squeeze_perception.detection.data import list_samples

    samples = list_samples(split)
    anchors = np.array([[x, y, 30.0, 30.0] for x in range(8, 200, 16) for y in range(8, 120, 16)], np.float32)

    def batch(style, seed=0):
        return load_batch(samples, [0, 1], (200, 120), anchors, 200, 120, np.random.default_rng(seed), (0, 0),
                          flip=False, style_hists=style, style_probability=1.0, defer_photometric=True)[0]

    plain, styled = batch(None), batch(hists)
    assert plain.shape == styled.shape and not np.array_equal(plain, styled)
    target = float(luma(camera).mean())
    # the synthetic frames take on the camera's tone
    assert abs(float(luma(styled[0]).mean()) - target) < 0.5 * abs(float(luma(plain[0]).mean()) - target)
    assert np.array_equal(styled, batch(hists))  # same seed, same batch


def test_eval_alignment_table_maps_the_camera_onto_the_training_images(tmp_path):
    from squeeze_perception.offline.detection.cli import build_parser, test_time_alignment

    train, camera = tmp_path / "train" / "image_2", tmp_path / "camera"
    train.mkdir(parents=True)
    camera.mkdir()
    for k in range(2):
        Image.fromarray(_image(k, 100, 160)).save(train / f"{k:06d}.png")
        Image.fromarray(_image(10 + k, 10, 60)).save(camera / f"{k}.png")
    lut = test_time_alignment([str(camera)], str(train), "luma")
    assert lut.shape == (1, 256)
    dark = _image(10, 10, 60)
    aligned = apply_lut(dark, lut)
    assert abs(float(luma(aligned).mean()) - float(luma(_image(0, 100, 160)).mean())) < 5
    args = build_parser().parse_args(["eval", "--align-images", str(camera), "--align-method", "moments"])
    assert args.align_images == [str(camera)] and args.align_method == "moments"

"""Tiny smoke runs of training (resumable, weights loadable) and the adaptation steps:
progressive domain calibration re-normalises every batch-norm layer on the real data."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from squeeze_perception.backends import load_state_dict
from squeeze_perception.offline.segmentation.adapt import batchnorm_forward_order, progressive_domain_calibration
from squeeze_perception.offline.segmentation.bench import count_macs, crf_macs
from squeeze_perception.offline.segmentation.train import SegTrainConfig, apply_rendered_intensity, train
from squeeze_perception.segmentation.models import build_squeezeseg, build_squeezesegv2

torch.set_num_threads(1)


def _write_grids(folder, n=2, width=512):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        g = np.zeros((64, width, 6), np.float32)
        g[..., 0] = rng.uniform(2, 40, (64, width))
        g[..., 1] = rng.normal(0, 5, (64, width))
        g[..., 2] = rng.normal(-1, 0.5, (64, width))
        g[..., 3] = rng.uniform(0, 1, (64, width))
        g[..., 4] = np.linalg.norm(g[..., :3], axis=-1)
        g[..., 5] = rng.integers(0, 4, (64, width))
        g[:, :40] = 0
        np.save(folder / f"{i:06d}.npy", g)
    return folder


def test_training_smoke_run_saves_loadable_weights_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("SQUEEZE_PERCEPTION_MODELS", str(tmp_path / "models"))
    data = _write_grids(tmp_path / "grids")
    cfg = SegTrainConfig(out=str(tmp_path / "models" / "tiny_v2.pt"), arch="squeezesegv2", data=str(data), steps=2,
                         batch_size=1, work_dir=str(tmp_path / "work"), log_every=1, crf=True)
    path = train(cfg, progress=False)
    state = torch.load(path, weights_only=False)
    assert state["model"] == "tiny_v2" and state["meta"]["steps"] == 2 and state["meta"]["loss"] == "focal"
    build_squeezesegv2().load_state_dict(load_state_dict(path))  # strict load
    cfg.steps = 3  # resume from the checkpoint: one more step only
    train(cfg, progress=False)
    assert torch.load(path, weights_only=False)["meta"]["steps"] == 3
    log = (tmp_path / "work" / "tiny_v2" / "train.log").read_text().splitlines()
    assert len(log) == 3


def test_training_data_may_join_several_folders_in_the_order_given(tmp_path, monkeypatch):
    from squeeze_perception.offline.segmentation.train import training_files
    from squeeze_perception.segmentation.data import SegDataError

    monkeypatch.setenv("SQUEEZE_PERCEPTION_MODELS", str(tmp_path / "models"))
    first, second = _write_grids(tmp_path / "a", n=2), _write_grids(tmp_path / "b", n=1)
    files = training_files(f"{first}, {second}")
    assert files == [first / "000000.npy", first / "000001.npy", second / "000000.npy"]
    assert training_files(f"{second},{first}")[0] == second / "000000.npy"
    with pytest.raises(SegDataError, match="no lidar_2d"):
        training_files(f"{first},{tmp_path / 'empty'}")
    with pytest.raises(SegDataError, match="no training data"):
        training_files(" , ")
    cfg = SegTrainConfig(out=str(tmp_path / "models" / "joined.pt"), arch="squeezesegv2", data=f"{first},{second}",
                         steps=1, batch_size=1, work_dir=str(tmp_path / "work"), log_every=1, crf=False)
    state = torch.load(train(cfg, progress=False), weights_only=False)
    assert state["meta"]["train_files"] == 3


def test_training_logits_in_channels_last_equal_fp32_and_bf16_stays_close_with_crf_in_fp32():
    from squeeze_perception.offline.segmentation.train import segment_logits

    torch.manual_seed(0)
    model = build_squeezesegv2().eval()
    x = torch.rand(1, 6, 64, 64) * 20 + 1
    x[:, 5] = 1
    x[:, 4, :8] = 0  # empty cells: the CRF mask
    with torch.no_grad():
        ref = model.segment(x, crf=True)
        same = segment_logits(model, x, True, "fp32", False)
        model.to(memory_format=torch.channels_last)
        last = segment_logits(model, x, True, "fp32", True)
        half = segment_logits(model, x, True, "bf16", True)
    assert torch.equal(same, ref)
    assert torch.allclose(last, ref, atol=1e-4)
    assert half.dtype == torch.float32 and last.is_contiguous() and half.is_contiguous()
    # bf16 keeps 8 mantissa bits in the CNN only: the labels barely move.
    assert (half.argmax(1) == ref.argmax(1)).float().mean() > 0.97
    with pytest.raises(ValueError, match="precision"):
        train(SegTrainConfig(out="x.pt", precision="fp16"), progress=False)


def test_train_bench_times_every_variant_and_reports_the_loss_change():
    from squeeze_perception.offline.segmentation.bench import (SEG_TRAIN_VARIANTS, format_train_throughput,
                                                               train_throughput)

    r = train_throughput("squeezeseg", batch_size=1, width=32, repeats=1, threads=1)
    assert [row["variant"] for row in r["rows"]] == list(SEG_TRAIN_VARIANTS)
    rows = {row["variant"]: row for row in r["rows"]}
    assert rows["fp32"]["loss_vs_fp32"] == 0.0 and rows["fp32"]["speedup_vs_fp32"] == 1.0
    assert abs(rows["channels_last"]["loss_vs_fp32"]) < 1e-3 and abs(rows["bf16"]["loss_vs_fp32"]) < 0.1
    assert all(row["ms_per_scan"] > 0 for row in r["rows"])
    assert "bf16+channels_last" in format_train_throughput(r)

def test_pdc_normalises_each_layer_input_on_real_data():
    torch.manual_seed(0)
    model = build_squeezesegv2()
    real = torch.rand(3, 6, 64, 32) * 30 + 2
    real[:, 5] = 1
    assert progressive_domain_calibration(model, real, batch_size=2, progress=False) == 48
    layers = batchnorm_forward_order(model, real[:1])
    stats = []
    hooks = [m.register_forward_pre_hook(
        lambda mod, inp: stats.append((((inp[0] - mod.running_mean.view(1, -1, 1, 1))
                                        / torch.sqrt(mod.running_var.view(1, -1, 1, 1) + mod.eps))
                                       .transpose(0, 1).reshape(mod.num_features, -1)))) for m in layers]
    with torch.no_grad():
        model(real)
    for h in hooks:
        h.remove()
    for s in stats:
        assert s.mean(1).abs().max() < 1e-3
        live = s.var(1) > 1e-6  # channels that are not constant on this data
        assert torch.allclose(s.var(1, unbiased=False)[live], torch.ones(int(live.sum())), atol=1e-2)


def test_rendered_intensity_replaces_only_the_intensity_channel():
    from squeeze_perception.segmentation.models import build_intensity_renderer

    x = torch.rand(1, 5, 64, 32) * 10 + 1
    x[:, :, :, :4] = 0
    out = apply_rendered_intensity(build_intensity_renderer().eval(), x)
    assert torch.equal(out[:, [0, 1, 2, 4]], x[:, [0, 1, 2, 4]])
    assert (out[:, 3, :, :4] == 0).all() and ((out[:, 3] >= 0) & (out[:, 3] <= 1)).all()


def test_mac_count_matches_a_hand_computed_convolution():
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.ConvTranspose2d(3, 4, (1, 4), (1, 2), (0, 1)))
    # conv: 8x8 out x 3 ch x (2 x 9); deconv: 8x8 in x 3 x 4 x 4.
    assert count_macs(net, torch.zeros(1, 2, 8, 8)) == 64 * 3 * 18 + 64 * 3 * 4 * 4
    assert crf_macs(4, 1, 1, (3, 5), 1) == (2 * 4 * 15 + 2 * 16) + 15 * 7
    assert count_macs(build_squeezeseg(), torch.zeros(1, 5, 64, 512)) > 1e9


def test_class_weights_option_reaches_the_loss_and_bad_values_are_refused(tmp_path, monkeypatch):
    """`seg train --class-weights`: the loss gets exactly the given weights (fractions allowed);
    the default stays the release's; a wrong count or a non-positive weight is refused by name."""
    from squeeze_perception.offline.segmentation import train as train_module
    from squeeze_perception.segmentation import constants as K

    assert np.allclose(train_module.parse_class_weights(""), K.CLASS_LOSS_WEIGHTS)
    assert np.allclose(train_module.parse_class_weights("1/15, 1, 4.5, 6.8"), [1 / 15, 1, 4.5, 6.8])
    with pytest.raises(ValueError, match="needs 4 values"):
        train_module.parse_class_weights("1,2,3")
    with pytest.raises(ValueError, match="'0' is not a positive number"):
        train_module.parse_class_weights("1,0,3,4")
    seen = []

    def recording_focal_loss(*args, class_weights=None, **kwargs):
        seen.append(class_weights.detach().cpu().numpy().copy())
        return real_focal_loss(*args, class_weights=class_weights, **kwargs)

    real_focal_loss = train_module.focal_loss
    monkeypatch.setattr(train_module, "focal_loss", recording_focal_loss)
    monkeypatch.setenv("SQUEEZE_PERCEPTION_MODELS", str(tmp_path / "models"))
    cfg = SegTrainConfig(out=str(tmp_path / "models" / "tiny_w.pt"), arch="squeezesegv2",
                         data=str(_write_grids(tmp_path / "grids", n=1)), steps=1, batch_size=1,
                         work_dir=str(tmp_path / "work"), crf=False, class_weights="0.5,1,2,3")
    train(cfg, progress=False)
    assert seen and np.allclose(seen[0], [0.5, 1, 2, 3])


def test_real_bn_mix_normalises_both_domains_and_the_loss_sees_only_synthetic_scans(tmp_path, monkeypatch):
    """`seg train --real-bn-mix N`: N unlabelled real grids join every batch's forward pass, so the
    batch-norm running statistics move towards the real scans' (here: far brighter and farther than
    the synthetic ones), while the loss gets the synthetic scans only. Without real grids it is refused."""
    from squeeze_perception.offline.segmentation import train as train_module

    monkeypatch.setenv("SQUEEZE_PERCEPTION_MODELS", str(tmp_path / "models"))
    data = _write_grids(tmp_path / "grids", n=2)
    real = np.zeros((3, 64, 512, 6), np.float32)
    real[..., 0] = 70.0
    real[..., 3] = 1.0
    real[..., 4] = 70.0
    real[..., 5] = 1.0
    np.save(tmp_path / "real.npy", real)
    loss_batches = []

    def recording_focal_loss(logits, *args, **kwargs):
        loss_batches.append(logits.shape[0])
        return real_focal_loss(logits, *args, **kwargs)

    real_focal_loss = train_module.focal_loss
    monkeypatch.setattr(train_module, "focal_loss", recording_focal_loss)

    def first_bn_mean(mix: int) -> torch.Tensor:
        cfg = SegTrainConfig(out=str(tmp_path / "models" / f"mix{mix}.pt"), arch="squeezesegv2", data=str(data),
                             steps=6, batch_size=1, lr=1e-9, work_dir=str(tmp_path / f"work{mix}"), crf=False,
                             real_grids=str(tmp_path / "real.npy"), real_bn_mix=mix, gca_lambda=0.0)
        return load_state_dict(train(cfg, progress=False))["conv1.1.running_mean"]

    plain, mixed = first_bn_mean(0), first_bn_mean(2)
    assert loss_batches == [1] * 12  # batch 1 in both runs: the two real grids never reach the loss
    model = build_squeezesegv2()
    model.load_state_dict(load_state_dict(tmp_path / "models" / "mix0.pt"))
    with torch.no_grad():  # what the first batch norm sees on the real grids alone
        x = torch.from_numpy(np.stack([train_module.to_input(g, 6) for g in real]))
        real_mean = model.conv1[0](model.normalise(x)).mean(dim=(0, 2, 3))
    # Six steps at batch-norm momentum 0.1 move the running mean 47 % of the way to what it sees:
    # two thirds real in the mixed run, nothing real in the plain one (lr 1e-9 keeps the weights).
    assert torch.linalg.norm(mixed - real_mean) < 0.85 * torch.linalg.norm(plain - real_mean)
    assert torch.nn.functional.cosine_similarity(mixed - plain, real_mean - plain, dim=0) > 0.9
    with pytest.raises(ValueError, match="real-bn-mix"):
        train(SegTrainConfig(out=str(tmp_path / "models" / "bad.pt"), arch="squeezesegv2", data=str(data), steps=1,
                             batch_size=1, work_dir=str(tmp_path / "bad"), crf=False, real_bn_mix=2), progress=False)


@pytest.mark.parametrize("mix", [0, 2])
def test_gca_training_aligns_against_real_crops_of_the_synthetic_width(tmp_path, monkeypatch, mix):
    """+GCA: the geodesic correlation loss is computed against real grids cut to the synthetic
    crops' width, from a separate real batch or, with --real-bn-mix, from the mixed batch's real grids."""
    import json

    from squeeze_perception.offline.segmentation import train as train_module

    monkeypatch.setenv("SQUEEZE_PERCEPTION_MODELS", str(tmp_path / "models"))
    real = np.zeros((3, 64, 512, 6), np.float32)
    real[..., 0] = np.random.default_rng(1).uniform(3, 40, (3, 64, 512))
    real[..., 3] = 0.3
    real[..., 4] = real[..., 0]
    np.save(tmp_path / "real.npy", real)
    widths = []

    def recording_gca(synthetic, real_feats):
        widths.append(real_feats.shape)
        return real_gca(synthetic, real_feats)

    real_gca = train_module.geodesic_correlation_loss
    monkeypatch.setattr(train_module, "geodesic_correlation_loss", recording_gca)
    seen_widths = []
    real_flatten = train_module.flatten_valid
    monkeypatch.setattr(train_module, "flatten_valid", lambda logits, x: (seen_widths.append(x.shape[3]),
                                                                          real_flatten(logits, x))[1])
    cfg = SegTrainConfig(out=str(tmp_path / "models" / "gca.pt"), arch="squeezesegv2",
                         data=str(_write_grids(tmp_path / "grids", n=2)), steps=2, batch_size=2, crop_width=128,
                         work_dir=str(tmp_path / "work"), log_every=1, crf=False, real_grids=str(tmp_path / "real.npy"),
                         gca_lambda=10.0, real_bn_mix=mix)
    train(cfg, progress=False)
    assert len(widths) == 2 and set(seen_widths) == {128}  # synthetic and real features both 128 wide
    log = [json.loads(line) for line in (tmp_path / "work" / "gca" / "train.log").read_text().splitlines()]
    assert len(log) == 2 and all(r["gca"] > 0 for r in log)

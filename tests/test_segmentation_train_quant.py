"""`seg train --arch diracdeltaseg`: progressive quantization (thesis 7.4) in the segmentation
training loop. Tiny runs on 64x32 synthetic grids: the saved model is at the schedule's last
precision with the shared scale set, its float stage is saved beside it, a resumed run continues
in the stage it was in, and the file runs through the registry on torch and on the emulated
Synetgy board with the same labels; `seg eval` takes w4a4 and fp32 by name."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from squeeze_perception import registry
from squeeze_perception.accelerator.quant import precision, shared_scale
from squeeze_perception.backends import TorchBackend, load_state_dict
from squeeze_perception.offline.segmentation import train as train_mod
from squeeze_perception.offline.segmentation.train import (QuantStage, SegTrainConfig, build_arch,
                                                           default_quant_schedule, parse_quant_schedule, train)
from squeeze_perception.registry import ModelSpec

WIDTH = 32  # four width halvings: a multiple of 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


@pytest.fixture()
def models(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    monkeypatch.setenv("SQUEEZE_PERCEPTION_MODELS", str(folder))
    return folder


def _write_grids(folder, n=4, width=WIDTH, seed=0):
    """lidar_2d grids (64, width, 6) whose labels follow the points (cars: near and left)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        g = np.zeros((64, width, 6), np.float32)
        g[..., 0] = rng.uniform(2, 40, (64, width))
        g[..., 1] = rng.normal(0, 5, (64, width))
        g[..., 2] = rng.normal(-1, 0.5, (64, width))
        g[..., 3] = rng.uniform(0, 1, (64, width))
        g[..., 4] = np.linalg.norm(g[..., :3], axis=-1)
        g[..., 5] = np.where(g[..., 0] < 12, 1, 0) + np.where(g[..., 1] > 6, 2, 0)
        g[:, : width // 8] = 0  # empty columns: the mask channel and the CRF see them
        np.save(folder / f"{i:06d}.npy", g)
    return folder


def _cfg(tmp_path, name, schedule, **kw):
    return SegTrainConfig(out=str(tmp_path / "models" / f"{name}.pt"), arch="diracdeltaseg",
                          data=str(_write_grids(tmp_path / "grids")), batch_size=2, work_dir=str(tmp_path / "work"),
                          log_every=1, checkpoint_every=1, quant_schedule=schedule, **kw)


class _Killed(Exception):
    pass


def _log(tmp_path, name):
    return [json.loads(line) for line in (tmp_path / "work" / name / "train.log").read_text().splitlines()]


def test_schedule_syntax_and_default():
    assert parse_quant_schedule("32/32:600, 8/8:200,4/4:200@3e-4") == [
        QuantStage(32, 32, 600), QuantStage(8, 8, 200), QuantStage(4, 4, 200, 3e-4)]
    assert [s.label for s in parse_quant_schedule("32/32:1,8/4:1,4/4:1")] == ["fp32", "w8a4", "w4a4"]
    assert [(s.wbits, s.abits, s.steps) for s in default_quant_schedule(1000)] == [
        (32, 32, 600), (8, 8, 200), (4, 4, 200)]
    for bad, why in (("32/32", "WBITS/ABITS"), ("4:10", "WBITS/ABITS"), ("16/16:5", "2-8 or 32"),
                     ("4/4:0", "steps must be"), ("4/4:5,8/8:5", "raises the precision"), ("", "empty")):
        with pytest.raises(ValueError, match=why):
            parse_quant_schedule(bad)
    with pytest.raises(ValueError, match="quantizable architecture"):
        train_mod.quant_stages(SegTrainConfig(out="x.pt", arch="squeezesegv2", quant_schedule="4/4:1"))
    assert train_mod.model_in_channels(build_arch("diracdeltaseg")) == 6  # the SqueezeSegV2 grid, mask included
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            train_mod.training_device("cuda")


def test_two_stage_run_saves_w4a4_and_its_fp32_stage(tmp_path, models):
    out = train(_cfg(tmp_path, "dds", "32/32:2,4/4:2"), progress=False)
    assert out == models / "dds.pt"
    ckpt = torch.load(out, weights_only=False)
    model = build_arch("diracdeltaseg")
    model.load_state_dict(load_state_dict(out))  # strict: precision buffers and the CRF included
    assert precision(model) == (4, 4) and shared_scale(model) > 0
    quant = ckpt["meta"]["quant"]
    assert quant["precision"] == "w4a4" and quant["schedule"] == "32/32:2,4/4:2"
    assert [(s["stage"], s["steps"], s["stopped_by"]) for s in quant["stages"]] == [
        ("fp32", 2, "steps"), ("w4a4", 2, "steps")]
    assert quant["stages"][0]["s"] is None and quant["stages"][1]["s"] == pytest.approx(shared_scale(model))
    assert ckpt["meta"]["loss"] == "focal" and ckpt["meta"]["steps"] == 4
    assert all(v.device.type == "cpu" for v in ckpt["state_dict"].values())
    # the float stage, beside it, at fp32
    assert quant["fp32_weights"] == str(models / "dds_fp32.pt")
    fp32 = build_arch("diracdeltaseg")
    fp32.load_state_dict(load_state_dict(models / "dds_fp32.pt"))
    assert precision(fp32) == (32, 32) and shared_scale(fp32) is None
    assert torch.load(models / "dds_fp32.pt", weights_only=False)["meta"]["steps"] == 2
    assert [r["stage"] for r in _log(tmp_path, "dds")] == ["fp32", "fp32", "w4a4", "w4a4"]


def test_resume_continues_in_the_stage_it_was_in(tmp_path, models, monkeypatch):
    cfg = _cfg(tmp_path, "dds", "32/32:2,8/8:1,4/4:3")
    calls = {"n": 0}
    real_loss = train_mod.focal_loss

    def dies_at_step_five(*args, **kwargs):  # the run is killed during step 5 (2nd step of w4a4)
        calls["n"] += 1
        if calls["n"] == 5:
            raise _Killed
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_mod, "focal_loss", dies_at_step_five)
    with pytest.raises(_Killed):
        train(cfg, progress=False)
    state = torch.load(tmp_path / "work" / "dds" / "checkpoint.pt", weights_only=False)
    assert (state["stage"], state["stage_step"], state["step"]) == (2, 1, 4)
    assert state["optimizer"] is not None and all(
        v.device.type == "cpu" for s in state["optimizer"]["state"].values() for v in s.values() if torch.is_tensor(v))
    s_before = float(state["state_dict"]["body.conv1.s"])
    fp32_bytes = (models / "dds_fp32.pt").read_bytes()
    assert not (models / "dds.pt").exists()

    monkeypatch.setattr(train_mod, "focal_loss", real_loss)
    with pytest.raises(ValueError, match="quant schedule"):  # another schedule cannot resume it
        train(_cfg(tmp_path, "dds", "32/32:2,4/4:4"), progress=False)
    out = train(cfg, progress=False)
    meta = torch.load(out, weights_only=False)["meta"]
    assert meta["steps"] == 6 and meta["quant"]["precision"] == "w4a4"
    assert [(s["stage"], s["steps"]) for s in meta["quant"]["stages"]] == [("fp32", 2), ("w8a8", 1), ("w4a4", 3)]
    model = build_arch("diracdeltaseg")
    model.load_state_dict(load_state_dict(out))
    assert shared_scale(model) == pytest.approx(s_before)  # s kept, not re-derived on resume
    assert (models / "dds_fp32.pt").read_bytes() == fp32_bytes  # the float stage was not re-run
    log = _log(tmp_path, "dds")
    assert [(r["step"], r["stage"]) for r in log] == [(1, "fp32"), (2, "fp32"), (3, "w8a8"), (4, "w4a4"),
                                                      (5, "w4a4"), (6, "w4a4")]


def test_minutes_are_shared_so_a_cut_run_still_ends_quantized(tmp_path, models):
    # a budget spent before the first step (max_minutes 0 would mean no budget)
    out = train(_cfg(tmp_path, "dds", "32/32:1000,4/4:1000", max_minutes=1e-9), progress=False)
    meta = torch.load(out, weights_only=False)["meta"]
    assert meta["quant"]["precision"] == "w4a4" and meta["steps"] == 0
    assert [s["stopped_by"] for s in meta["quant"]["stages"]] == ["minutes", "minutes"]
    assert (models / "dds_fp32.pt").exists()


def test_saved_model_runs_alike_on_torch_and_synetgy_through_the_registry(tmp_path, models):
    spec = registry.register_model(ModelSpec(
        "tiny_dds", "segmentation", "squeeze_perception.accelerator.models:build_diracdeltaseg", "tiny_dds.pt",
        (6, 64, WIDTH), ("unknown", "car", "pedestrian", "cyclist")))
    try:
        train(_cfg(tmp_path, "tiny_dds", "32/32:2,4/4:2", loader_workers=1), progress=False)
        grids = np.stack([np.load(p) for p in sorted((tmp_path / "grids").glob("*.npy"))[:2]])
        from squeeze_perception.segmentation.data import to_input

        x = np.stack([to_input(g, 6) for g in grids])
        reference = TorchBackend(spec).infer(x)  # the fake-quantized torch model
        emulated = registry.get_backend("synetgy").create(spec, device="local").infer(x)
        np.testing.assert_array_equal(emulated, reference)
        assert (emulated.argmax(1) == reference.argmax(1)).all()
        # the float stage is refused by the board, with the reason
        from squeeze_perception.backends import ModelLoadError

        with pytest.raises(ModelLoadError, match="float precision"):
            registry.get_backend("synetgy").create(spec, weights=str(models / "tiny_dds_fp32.pt"), device="local")
    finally:
        registry.MODELS.pop("tiny_dds", None)


def test_seg_eval_reports_w4a4_against_its_fp32_by_name(tmp_path, models):
    from squeeze_perception.offline.segmentation.cli import main

    assert registry.get_model("diracdeltaseg_fp32").weights == "diracdeltaseg_fp32.pt"
    assert main(["train", "--arch", "diracdeltaseg", "--name", "diracdeltaseg", "--quant-schedule", "32/32:1,4/4:1",
                 "--data", str(_write_grids(tmp_path / "grids")), "--batch-size", "1",
                 "--work-dir", str(tmp_path / "work")]) == 0
    assert {p.name for p in models.glob("*.pt")} == {"diracdeltaseg.pt", "diracdeltaseg_fp32.pt"}
    synth = tmp_path / "synth"
    _write_grids(synth / "lidar_2d" / "test", n=1, width=512, seed=1)  # the network's full input
    assert main(["eval", "--models", "diracdeltaseg,diracdeltaseg_fp32", "--datasets", "synth_lidar_2d",
                 "--synth", str(synth), "--backend", "torch", "--out", str(tmp_path / "eval.json")]) == 0
    results = json.loads((tmp_path / "eval.json").read_text())
    # each model's row, and the same grids after the pipeline's ground stage (what the node publishes)
    assert set(results) == {"diracdeltaseg", "diracdeltaseg_fp32", "diracdeltaseg + ground removal",
                            "diracdeltaseg_fp32 + ground removal"}
    assert all(r["synth_lidar_2d"]["frames"] == 1 for r in results.values())

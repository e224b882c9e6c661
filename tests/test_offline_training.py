"""One TrainConfig and one training loop for every model (issue #13, offline/training.py): a tiny
run killed after a checkpoint and resumed ends in the same state as the same run left alone
(weights, optimiser, step: the checkpoint carries every RNG state), for the detector and the
segmenter; both CLIs take the shared flag names and keep their older spellings."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import squeeze_perception.detection.loss as det_loss
from squeeze_perception.offline.detection import cli as det_cli
from squeeze_perception.offline.detection import train as det_train
from squeeze_perception.offline.segmentation import cli as seg_cli
from squeeze_perception.offline.segmentation import train as seg_train
from squeeze_perception.offline.training import TrainConfig, load_checkpoint
# the tiny data sets of the models' own training tests (prepend import mode puts tests/ on sys.path)
from test_detection_train import _tiny_split  # noqa: E402
from test_segmentation_train_quant import _write_grids  # noqa: E402

torch.set_num_threads(1)


class _Killed(Exception):
    pass


def _dies_at_call(monkeypatch, module, name: str, call: int) -> None:
    """module.name raises on its `call`-th call: the run is killed in the middle of that step."""
    real, calls = getattr(module, name), [0]

    def dying(*args, **kwargs):
        calls[0] += 1
        if calls[0] == call:
            raise _Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, dying)


def _assert_same_state(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for key, value in a["optimizer"]["state"].items():
        for name, tensor in value.items():
            other = b["optimizer"]["state"][key][name]
            assert torch.equal(tensor, other) if torch.is_tensor(tensor) else tensor == other, (key, name)


def test_detector_killed_and_resumed_ends_where_the_uninterrupted_run_ends(tmp_path, monkeypatch):
    split = _tiny_split(tmp_path / "training", n_images=3)

    def cfg(run: str, **kw) -> det_train.DetTrainConfig:
        # fp32 and NCHW: bitwise-reproducible CPU kernels; the model's dropout draws from torch's RNG
        return det_train.DetTrainConfig(arch="squeezedet", data=str(split), out=str(tmp_path / run / "sq.pt"),
                                        steps=4, batch_size=2, crop_width=160, crop_height=96, max_shift=(20, 10),
                                        threads=1, checkpoint_every=2, log_every=1, seed=3, precision="fp32",
                                        channels_last=False, **kw)

    det_train.train(cfg("straight"), progress=False)
    with monkeypatch.context() as m:
        _dies_at_call(m, det_loss, "squeezedet_loss", 4)  # during step 4; the checkpoint holds step 2
        with pytest.raises(_Killed):
            det_train.train(cfg("killed"), progress=False)
    assert load_checkpoint(tmp_path / "killed" / "sq.ckpt")["step"] == 2
    result = det_train.train(cfg("killed", resume=True), progress=False)
    assert result["steps"] == 4 and result["stopped_by"] == "steps"
    _assert_same_state(load_checkpoint(tmp_path / "straight" / "sq.ckpt"),
                       load_checkpoint(tmp_path / "killed" / "sq.ckpt"))
    straight, resumed = (torch.load(tmp_path / run / "sq.pt", weights_only=True) for run in ("straight", "killed"))
    assert all(torch.equal(v, resumed["state_dict"][k]) for k, v in straight["state_dict"].items())


def test_segmenter_killed_and_resumed_ends_where_the_uninterrupted_run_ends(tmp_path, monkeypatch):
    grids = _write_grids(tmp_path / "grids", n=6)

    def cfg(run: str) -> seg_train.SegTrainConfig:
        return seg_train.SegTrainConfig(arch="squeezesegv2", data=str(grids), out=str(tmp_path / run / "seg.pt"),
                                        work_dir=str(tmp_path / run / "work"), steps=4, batch_size=2,
                                        checkpoint_every=2, log_every=1, seed=3)

    seg_train.train(cfg("straight"), progress=False)
    with monkeypatch.context() as m:
        _dies_at_call(m, seg_train, "focal_loss", 4)
        with pytest.raises(_Killed):
            seg_train.train(cfg("killed"), progress=False)
    ckpt = tmp_path / "killed" / "work" / "seg" / "checkpoint.pt"
    assert load_checkpoint(ckpt)["step"] == 2
    seg_train.train(cfg("killed"), progress=False)  # the segmenter resumes by default
    _assert_same_state(load_checkpoint(tmp_path / "straight" / "work" / "seg" / "checkpoint.pt"), load_checkpoint(ckpt))
    straight, resumed = (torch.load(tmp_path / run / "seg.pt", weights_only=False) for run in ("straight", "killed"))
    assert straight["meta"]["steps"] == resumed["meta"]["steps"] == 4
    assert all(torch.equal(v, resumed["state_dict"][k]) for k, v in straight["state_dict"].items())


def test_a_segmentation_checkpoint_from_before_the_shared_format_still_loads(tmp_path):
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(net.parameters())
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "sched": {"last_epoch": 3}, "step": 3}, path)
    state = load_checkpoint(path)
    assert state["step"] == 3 and state["scheduler"] == {"last_epoch": 3}
    assert state["state_dict"].keys() == net.state_dict().keys() and "state" in state["optimizer"]


def _captured(monkeypatch, module) -> list:
    configs: list = []
    monkeypatch.setattr(module, "train", lambda cfg, progress=True: configs.append(cfg) or {})
    return configs


def _shared(cfg: TrainConfig) -> dict:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainConfig)}


SHARED_FLAGS = ["--max-minutes", "5", "--checkpoint-every", "7", "--log-every", "3", "--seed", "4",
                "--init-weights", "w.pt", "--threads", "1", "--precision", "fp32", "--device", "cpu",
                "--loader-workers", "0", "--steps", "9", "--batch-size", "2", "--lr", "0.5", "--optimizer", "sgd"]


def test_both_clis_take_the_shared_names_and_keep_their_old_spellings(tmp_path, monkeypatch):
    monkeypatch.setenv("SQUEEZE_PERCEPTION_MODELS", str(tmp_path))
    det = _captured(monkeypatch, det_train)
    base = ["train", *SHARED_FLAGS]
    assert det_cli.main([*base, "--arch", "squeezedet_0.75x", "--data", "D", "--out", "o.pt", "--resume",
                         "--no-channels-last", "--crop-width", "160", "--crop-height", "96"]) == 0
    # the detector's older spellings: --model, --train-dir, --crop W H
    assert det_cli.main([*base, "--model", "squeezedet_0.75x", "--train-dir", "D", "--out", "o.pt", "--resume",
                         "--no-channels-last", "--crop", "160", "96"]) == 0
    assert det[0] == det[1]
    assert (det[0].arch, det[0].data, det[0].max_minutes, det[0].checkpoint_every, det[0].log_every) == (
        "squeezedet_0.75x", "D", 5.0, 7, 3)
    assert det[0].resume and not det[0].channels_last and (det[0].crop_width, det[0].crop_height) == (160, 96)

    seg = _captured(monkeypatch, seg_train)
    assert seg_cli.main([*base, "--arch", "squeezesegv2", "--data", "D", "--out", str(tmp_path / "n.pt"),
                         "--no-resume", "--channels-last", "--crop-width", "64"]) == 0
    # the segmenter's older spellings: --name, --minutes, --init
    old = [a for a in base if a not in ("--max-minutes", "5", "--init-weights", "w.pt")]
    assert seg_cli.main([*old, "--minutes", "5", "--init", "w.pt", "--arch", "squeezesegv2", "--data", "D",
                         "--name", "n", "--no-resume", "--channels-last", "--crop-width", "64"]) == 0
    assert seg[0] == seg[1] and seg[0].name == "n" and seg[0].init_weights == "w.pt"
    assert not seg[0].resume and seg[0].channels_last

    # one set of names: the shared part of both configs reads alike, setting by setting
    assert isinstance(det[0], TrainConfig) and isinstance(seg[0], TrainConfig)
    same = {k for k, v in _shared(det[0]).items() if _shared(seg[0])[k] == v}
    assert {"max_minutes", "checkpoint_every", "log_every", "seed", "init_weights", "threads", "precision",
            "device", "loader_workers", "steps", "batch_size", "lr", "optimizer", "data"} <= same


def test_running_mean_places_each_window_at_its_last_step_and_caps_the_window(tmp_path):
    from squeeze_perception.offline.training import read_log, running_mean

    steps, means = running_mean([10, 20, 30, 40], [4.0, 2.0, 6.0, 8.0], 2)
    assert steps.tolist() == [20, 30, 40] and means.tolist() == [3.0, 4.0, 7.0]
    steps, means = running_mean([1, 2], [1.0, 3.0], 9)  # fewer values than the window: one mean of all
    assert steps.tolist() == [2] and means.tolist() == [2.0]
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1, "loss": 2.0}\n\n{"step": 2, "loss": 1.0}\n')
    assert read_log(log) == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}]


def test_run_steps_stops_when_the_evaluation_reaches_its_target_and_checkpoints_there(tmp_path):
    """after_step returning True ends the run "by target" with a checkpoint at that step (the
    overfit check trains until AP >= 90); falsy returns run every step, as before."""
    from squeeze_perception.offline.training import Progress, TimeBudget, run_steps

    cfg = TrainConfig(checkpoint_every=100, log_every=100)
    saves = []

    def run(target_at):
        saves.clear()
        bar = Progress("t", 20, 0, tmp_path / f"log{target_at}.jsonl", fresh=True, enabled=False)
        try:
            return run_steps(lambda d: {"step": d + 1, "loss": 1.0}, done=0, until=20, budget=TimeBudget(), progress=bar,
                             cfg=cfg, save=saves.append, after_step=lambda rec, ending: rec["step"] == target_at)
        finally:
            bar.close()

    stopped = run(7)
    assert (stopped.done, stopped.stopped_by, stopped.last["step"]) == (7, "target", 7)
    assert saves == [True]  # one checkpoint, at the step that reached the target
    full = run(0)
    assert (full.done, full.stopped_by) == (20, "steps") and saves == [True]

"""`squeeze-perception bench models` (offline/bench_models.py) on tiny registered models: a row
for every backend, refusals listed with their reason, the torch row's change against fp32 exactly
0 (and a quantized model measured against its `_fp32` sibling), strict JSON, every backend timed
in every round, and "n/a (no data: <path>)" without evaluation data. No speed is asserted."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from squeeze_perception import registry
from squeeze_perception.offline import bench_models as bm
from squeeze_perception.offline.graphbench.cli import main as bench_main
from squeeze_perception.registry import ModelSpec

SEG_BUILD = "squeeze_perception.accelerator.models:build_diracdeltaseg"
SEG_SHAPE = (6, 64, 512)  # the grid the segmentation pipeline feeds (it refuses any other on load)
CLASSES = ("unknown", "car", "pedestrian", "cyclist")
DET_W, DET_H = 373, 113  # SqueezeDet at 0.3x (as tests/test_detection_overfit.py)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


class TinyFloatSeg(torch.nn.Module):
    """tiny_dd's float reference in the tests: two convolutions on the 6-channel grid, and the
    recurrent CRF the segmentation pipeline loads from the checkpoint ('crf.' keys). (A float
    DiracDeltaSeg would do too; its ONNX export takes ~10 s here.)"""

    def __init__(self):
        super().__init__()
        from squeeze_perception.segmentation.crf import RecurrentCRF

        self.conv1 = torch.nn.Conv2d(6, 8, 3, padding=1)
        self.head = torch.nn.Conv2d(8, 4, 1)
        self.crf = RecurrentCRF(4)

    def forward(self, x):
        return self.head(torch.relu(self.conv1(x / 10.0)))


def _strict(text: str):
    def refuse(constant):
        raise ValueError(f"non-strict JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def _grid(seed: int) -> np.ndarray:
    """A (64, 16, 6) lidar_2d grid: ground rows, a car block (label 1), dropped returns."""
    rng = np.random.default_rng(seed)
    h, w = SEG_SHAPE[1:]
    g = np.zeros((h, w, 6), np.float32)
    rows = np.arange(h)[:, None]
    g[..., 4] = np.where(rows > 30, 40.0 / np.maximum(rows - 29, 1), 0.0) + rng.normal(0, 0.05, (h, w))
    g[..., 4] *= rows > 30
    g[..., 0] = g[..., 4] * 0.99
    g[..., 1] = (np.arange(w)[None] - w / 2) * 0.05 * g[..., 4]
    g[..., 2] = -1.73
    g[..., 3] = rng.uniform(0.1, 0.5, (h, w))
    g[28:50, 4:12, 0] = 10 + seed
    g[28:50, 4:12, 4] = 10.2 + seed
    g[28:50, 4:12, 5] = 1
    g[rng.uniform(size=(h, w)) < 0.1] = 0
    return g


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    """tiny_dd (w4a4) and its float sibling tiny_dd_fp32, 3 grids, every backend, through the CLI."""
    from squeeze_perception.accelerator.quant import set_precision

    tmp = tmp_path_factory.mktemp("bench_models")
    models, grids = tmp / "models", tmp / "grids"
    models.mkdir()
    grids.mkdir()
    for i in range(3):
        np.save(grids / f"{i:06d}.npy", _grid(i))
    specs = [ModelSpec("tiny_dd", "segmentation", SEG_BUILD, "tiny_dd.pt", SEG_SHAPE, CLASSES,
                       builder_kwargs={"widths": (8, 16, 32, 64)}),
             ModelSpec("tiny_dd_fp32", "segmentation", f"{__name__}:TinyFloatSeg", "tiny_dd_fp32.pt", SEG_SHAPE,
                       CLASSES)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SQUEEZE_PERCEPTION_MODELS", str(models))
        for spec, bits in zip(specs, ((4, 4), None)):
            registry.register_model(spec)
            torch.manual_seed(0)
            module = spec.build()
            if bits:
                set_precision(module, *bits)
            torch.save({"state_dict": module.state_dict(), "model": spec.name, "meta": {}}, models / spec.weights)
        out = tmp / "report.json"
        n = torch.get_num_threads()
        try:
            rc = bench_main(["models", "--models", "tiny_dd,tiny_dd_fp32,tiny_missing", "--repeats", "3",
                             "--warmup", "1", "--threads", "1", "--seg-dir", str(grids), "--seg-grids", "3",
                             "--peak-n", "64", "--json", str(out)])
        finally:
            torch.set_num_threads(n)
            for spec in specs:
                registry.MODELS.pop(spec.name, None)
    return rc, out.read_text()


def _rows(report: dict, model: str) -> dict:
    return {r["backend"]: r for r in report["rows"] if r["model"] == model}


def test_every_backend_has_a_row_and_refusals_say_why(seg_run, capsys):
    rc, text = seg_run
    assert rc == 0
    report = _strict(text)
    backends = registry.backend_names()
    assert {"torch", "onnxruntime", "onnxruntime-int8", "synetgy"} <= set(backends)
    for model in ("tiny_dd", "tiny_dd_fp32"):
        rows = _rows(report, model)
        # every backend but `auto`, which only picks one of the others (run when named)
        assert set(rows) == set(backends) - {"auto"}, model
        for r in rows.values():
            assert r["status"] in ("ok", "refused", "failed")
            assert (r["status"] == "ok") == (not r["reason"]), r
        int8 = rows["onnxruntime-int8"]
        assert int8["status"] == "refused" and "int8 model file" in int8["reason"] and "not found" in int8["reason"]
    fp32_synetgy = _rows(report, "tiny_dd_fp32")["synetgy"]
    assert fp32_synetgy["status"] == "refused" and "float precision" in fp32_synetgy["reason"]
    assert all(_rows(report, "tiny_dd")[b]["status"] == "ok" for b in ("torch", "onnxruntime", "synetgy"))
    assert [r["backend"] for r in report["rows"]][0] == "torch"  # the reference first
    # a model named but without weights is reported, not run
    assert "tiny_missing" in report["skipped_models"]


def test_measured_rows_have_latency_fps_energy_and_metric(seg_run):
    report = _strict(seg_run[1])
    for model in ("tiny_dd", "tiny_dd_fp32"):
        for r in _rows(report, model).values():
            if r["status"] != "ok":
                continue
            assert r["latency_ms"]["count"] == 3 and r["latency_ms"]["p50"] > 0
            assert r["fps"] == pytest.approx(1e3 / r["latency_ms"]["p50"])
            assert r["host_wall_ms"]["count"] == 3
            assert r["metric"] is not None and r["eval_frames"] == 3
            assert r["metric_name"].startswith("mean IoU")
    assert report["models"]["tiny_dd"]["macs"] > 0  # from the compiled Synetgy program (QConv is not counted)
    synetgy = _rows(report, "tiny_dd")["synetgy"]
    assert synetgy["status"] == "ok" and synetgy["emulated"]
    assert synetgy["energy_method"] == "emulated" and synetgy["energy_mj_per_frame"] > 0
    assert synetgy["ratio_to_bound"] is None  # no compute bound for an emulated device
    torch_row = _rows(report, "tiny_dd_fp32")["torch"]
    assert not torch_row["emulated"] and torch_row["energy_method"] in ("model", "RAPL")
    assert torch_row["energy_mj_per_frame"] > 0 and torch_row["ratio_to_bound"] > 0


def test_change_against_fp32(seg_run):
    report = _strict(seg_run[1])
    fp32 = _rows(report, "tiny_dd_fp32")
    assert fp32["torch"]["reference"] == "tiny_dd_fp32/torch"
    assert fp32["torch"]["change_vs_fp32"] == 0.0  # the reference against itself: exactly 0
    quant = _rows(report, "tiny_dd")
    assert report["models"]["tiny_dd"]["reference"] == "tiny_dd_fp32/torch"  # its own fp32 sibling
    for r in quant.values():
        if r["status"] == "ok":
            assert r["reference_metric"] == fp32["torch"]["metric"]
            assert r["change_vs_fp32"] == pytest.approx(r["metric"] - fp32["torch"]["metric"])
    # the integer emulation is the fake-quantized torch model bit for bit: same accuracy
    assert quant["synetgy"]["metric"] == quant["torch"]["metric"]
    # the float model's rows are measured against its own torch row
    assert all(r["reference"] == "tiny_dd_fp32/torch" for r in fp32.values() if r["status"] == "ok")


def test_every_round_times_every_loaded_backend(seg_run):
    report = _strict(seg_run[1])
    for model, info in report["models"].items():
        loaded = {b for b, r in _rows(report, model).items() if r["status"] == "ok"}
        assert len(info["rounds"]) == 3
        for order in info["rounds"]:
            assert sorted(order) == sorted(loaded)  # each backend once per round
        if len(loaded) > 1:  # rotated: not always the same backend first
            assert len({order[0] for order in info["rounds"]}) > 1


def test_report_records_the_machine_and_the_table_lists_refusals(seg_run):
    report = _strict(seg_run[1])
    assert len(report["load_average_before"]) == 3 and len(report["load_average_after"]) == 3
    assert report["host"]["threads"] == 1 and report["host"]["cpu_count"]
    assert "commit" in report["git"]
    table = bm.render_table(report)
    assert table.splitlines()[0].startswith("| model | backend | latency ms (mean / p50 / p99)")
    assert "| tiny_dd_fp32 | synetgy | refused: " in table
    assert "(emulated)" in table and "(vs tiny_dd_fp32/torch)" in table


def test_without_data_the_accuracy_is_na_with_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("SQUEEZE_PERCEPTION_MODELS", str(tmp_path))
    spec = registry.register_model(ModelSpec("tiny_nodata", "segmentation", SEG_BUILD, "tiny_nodata.pt", SEG_SHAPE,
                                             CLASSES, builder_kwargs={"widths": (8, 16, 32, 64)}))
    try:
        torch.save({"state_dict": spec.build().state_dict()}, tmp_path / "tiny_nodata.pt")
        missing = tmp_path / "no_grids"
        report = bm.ModelsBench(bm.BenchConfig(models=["tiny_nodata"], backends=["torch"], repeats=1, warmup=0,
                                               threads=1, seg_dir=missing, peak_n=0)).run()
    finally:
        registry.MODELS.pop("tiny_nodata", None)
    row = report["rows"][0]
    assert row["status"] == "ok" and row["metric"] is None and row["change_vs_fp32"] is None
    assert row["latency_ms"]["count"] == 1  # timed on synthetic input
    assert f"n/a (no data: {missing})" in bm.render_table(report)
    _strict(bm.to_json(report))


def test_detection_rows(tmp_path, monkeypatch):
    """A SqueezeDet at 0.3x input on two labelled frames: car AP(mod) on torch, change 0; int8 and
    synetgy refused with their reasons."""
    monkeypatch.setenv("SQUEEZE_PERCEPTION_MODELS", str(tmp_path))
    base = registry.get_model("squeezedet")
    spec = registry.register_model(ModelSpec("tiny_det", "detection", base.builder, "tiny_det.pt", (3, DET_H, DET_W),
                                             base.classes, builder_kwargs={"variant": "squeezedet", "scale": 0.3}))
    split = tmp_path / "split"
    (split / "image_2").mkdir(parents=True)
    (split / "label_2").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (DET_H, DET_W, 3), dtype=np.uint8)).save(split / "image_2" / f"{i:06d}.png")
        (split / "label_2" / f"{i:06d}.txt").write_text("Car 0.00 0 0.00 40.00 30.00 110.00 80.00 1.5 1.6 3.9 1 1.5 20 0\n")
    try:
        torch.manual_seed(0)
        torch.save({"state_dict": spec.build().state_dict()}, tmp_path / "tiny_det.pt")
        report = bm.ModelsBench(bm.BenchConfig(models=["tiny_det"], backends=["torch", "onnxruntime-int8", "synetgy"],
                                               repeats=2, warmup=0, threads=1, det_dir=split, det_frames=2,
                                               peak_n=0)).run()
    finally:
        registry.MODELS.pop("tiny_det", None)
    rows = _rows(report, "tiny_det")
    assert set(rows) == {"torch", "onnxruntime-int8", "synetgy"}
    assert rows["torch"]["status"] == "ok" and rows["torch"]["eval_frames"] == 2
    assert rows["torch"]["metric_name"].startswith("car AP(mod)") and rows["torch"]["metric"] is not None
    assert rows["torch"]["change_vs_fp32"] == 0.0
    assert rows["onnxruntime-int8"]["status"] == "refused" and "not found" in rows["onnxruntime-int8"]["reason"]
    assert rows["synetgy"]["status"] == "refused" and rows["synetgy"]["reason"]
    assert report["models"]["tiny_det"]["rounds"] == [["torch"], ["torch"]]
    _strict(bm.to_json(report))

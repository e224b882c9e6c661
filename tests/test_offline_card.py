"""`squeeze-perception offline card`: a Markdown model card per manifest, written from it by
offline/manifest.py `model_card` (architecture, input, classes, sha256, metrics, params/FLOPs,
latency per backend, how it was made, the command), beside the manifest or in --out-dir; a
card that was not written from a manifest is kept unless --force."""
from __future__ import annotations

import json

import pytest

from squeeze_perception import model_manifests
# the tiny nets of the registry tests (prepend import mode puts tests/ on sys.path)
from test_registry_manifest import BUILDER, _save  # noqa: E402


@pytest.fixture()
def models(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv("SQUEEZE_PERCEPTION_MODELS", str(folder))
    _save(folder, "tiny_searched", extra={"searched_for": "onnxruntime"})
    _save(folder, "tiny_mp", act_quant={"layers.0.expand": [4, 3.0, True], "layers.0.depthwise": [4, 6.0, False],
                                        "layers.1.project": [2, 6.0, False], "decoder.ups.0.0": [8, 3.0, True]},
          extra={"bits": ["w4a4", "w2a4"], "compression": 6.1, "cost": "size"})
    yield folder
    model_manifests.register_manifest_models(tmp_path / "none")


def test_offline_card_writes_a_card_per_manifest_and_keeps_hand_written_ones(models, tmp_path, capsys):
    from squeeze_perception.offline.cli import main

    folder = models
    manifest = json.loads((folder / "tiny_mp.manifest.json").read_text())
    assert main(["card", str(folder / "tiny_mp.pt"), str(folder / "tiny_searched.manifest.json")]) == 0
    card = (folder / "tiny_mp.md").read_text()
    for part in ("# tiny_mp", "input [5, 64, 512] (x, y, z, intensity, range)", "classes unknown, car, pedestrian",
                 f"`{BUILDER}`", f"sha256 `{manifest['weights']['sha256']}`", "| mIoU | 0.2500 |",
                 f"| params | {manifest['params']:,} |", f"| FLOPs (2 x MACs) | {manifest['flops']:,} |",
                 "| onnxruntime | 1.500 |", "| synetgy | 3.250 |", "Produced by: `pytest`",
                 "Bits per convolution (weights/activations): w4a4 w2a4", "quantized at inference (PACT on 4",
                 "Compression against 32 bits (size cost): 6.1000x"):
        assert part in card, part
    assert "Searched for the latency target `onnxruntime`" in (folder / "tiny_searched.md").read_text()
    assert main(["card", str(folder / "tiny_mp.pt")]) == 0  # its own card is rewritten
    hand = tmp_path / "cards"
    hand.mkdir()
    (hand / "tiny_mp.md").write_text("# tiny_mp\n\nWritten by hand.\n")
    assert main(["card", str(folder / "tiny_mp.pt"), "--out-dir", str(hand)]) == 1
    assert "not written from a manifest" in capsys.readouterr().err
    assert (hand / "tiny_mp.md").read_text() == "# tiny_mp\n\nWritten by hand.\n"
    assert main(["card", str(folder / "tiny_mp.pt"), "--out-dir", str(hand), "--force"]) == 0
    assert (hand / "tiny_mp.md").read_text().startswith("# tiny_mp\n\nTask: segmentation")
    assert main(["card", str(folder / "missing.pt")]) == 1
    assert "no card from" in capsys.readouterr().err


def test_card_latency_times_the_model_per_backend_into_its_manifest(models, capsys):
    from squeeze_perception.backends import load_state_dict
    from squeeze_perception.offline.cli import main

    folder = models
    before = json.loads((folder / "tiny_mp.manifest.json").read_text())
    assert main(["card", str(folder / "tiny_mp.manifest.json"), "--latency", "torch", "onnxruntime", "no-such-backend",
                 "--frames", "2"]) == 1  # a backend that cannot run it is said, the others recorded
    assert "not timed on no-such-backend" in capsys.readouterr().err
    after = json.loads((folder / "tiny_mp.manifest.json").read_text())
    assert set(after["latency_ms"]) == {"onnxruntime", "synetgy", "torch"}
    assert after["latency_ms"]["synetgy"] == 3.25 and after["latency_ms"]["torch"] > 0
    assert after["latency_ms"]["onnxruntime"] != before["latency_ms"]["onnxruntime"]  # measured replaces recorded
    assert after["weights"] == before["weights"] and after["latency_measured"]["frames"] == 2
    load_state_dict(folder / "tiny_mp.pt")  # still matches its manifest
    assert "Timed by `offline card --latency` on onnxruntime, torch: 2 calls" in (folder / "tiny_mp.md").read_text()

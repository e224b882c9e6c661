"""Model nodes load a model with its first inference done (`Detector.warm_up`,
`SegmentationPipeline.warm_up`), so the first sensor frame does not pay the backend's lazy
set-up; an emulated accelerator is never sent a warm-up frame."""
from __future__ import annotations

import numpy as np
import pytest

from squeeze_perception.detection.inference import Detector
from squeeze_perception.segmentation.pipeline import SegmentationPipeline


def _count_calls(backend):
    calls = []
    original = backend.infer

    def infer(batch):
        calls.append(np.asarray(batch).shape)
        return original(batch)

    backend.infer = infer
    return calls


def test_detector_warm_up_runs_one_blank_inference_of_the_model_input():
    det = Detector("squeezedet", "onnxruntime", num_threads=1)
    calls = _count_calls(det.backend)
    ms = det.warm_up()
    assert ms is not None and ms > 0
    assert calls == [(1, 3, det.input_height, det.input_width)]
    # the detector still works afterwards, on a real-size frame
    assert det.predict(np.zeros((375, 1242, 3), np.uint8)).raw.shape[0] == 15048


def test_pipeline_warm_up_segments_a_synthetic_fan_through_every_stage():
    pl = SegmentationPipeline("squeezesegv2", backend="onnxruntime", num_threads=1)
    seen = []
    original = pl.process
    pl.process = lambda pts: seen.append(pts) or original(pts)
    ms = pl.warm_up()
    assert ms is not None and ms > 0 and len(seen) == 1
    fan = seen[0]
    assert fan.shape == (64 * 512, 4) and fan.dtype == np.float32 and np.isfinite(fan).all()
    assert original(fan).in_fov > 0.9 * len(fan)  # the fan lies in the front view: the network runs


@pytest.mark.parametrize("make", [lambda: Detector("squeezedet", "onnxruntime", num_threads=1),
                                  lambda: SegmentationPipeline("squeezesegv2", backend="onnxruntime", num_threads=1)])
def test_an_emulated_backend_is_not_sent_a_warm_up_frame(make):
    model = make()
    model.meter.emulated = True

    def refuse(batch):
        raise AssertionError("an emulated accelerator must not get a warm-up frame")

    model.backend.infer = refuse
    assert model.warm_up() is None

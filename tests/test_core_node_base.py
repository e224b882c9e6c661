"""PerceptionNode behaviour in-process: runtime parameter refusal and bad input that never kills the node."""
from __future__ import annotations

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.parameter import Parameter

from squeeze_perception import interfaces as itf
from squeeze_perception.msgs_conv import array_to_cloud, array_to_image


@pytest.fixture()
def node(ros):
    from squeeze_perception.nodes.passthrough_node import PassthroughNode

    n = PassthroughNode()
    yield n
    n.destroy_node()


def test_bad_runtime_parameter_is_refused_with_reason(node):
    result = node.set_parameters([Parameter("max_points", value=0)])[0]
    assert not result.successful and "out of range" in result.reason  # rclpy's descriptor check
    assert node.p["max_points"] == 300000
    result = node.set_parameters([Parameter("drop_nan_points", value="yes")])[0]
    assert not result.successful and "must be a bool" in result.reason
    assert node.set_parameters([Parameter("max_points", value=1000)])[0].successful
    assert node.p["max_points"] == 1000


def _cloud(n=10):
    arr = np.zeros(n, itf.POINT_DTYPE)
    arr["x"] = np.arange(n)
    return array_to_cloud(arr, frame_id="velo_link")


def test_bad_clouds_are_counted_and_reported_node_survives(node):
    sent = []
    node._diag_pub.publish = sent.append  # capture diagnostics without a subscriber
    bad = _cloud()
    bad.fields = bad.fields[:3]
    node.on_points(bad)
    stats = node.stats["points"]
    assert stats.errors == 1 and stats.frames_dropped == 1 and "intensity" in stats.last_error
    assert sent and sent[-1].status[0].level == DiagnosticStatus.ERROR
    assert "lacks required field" in sent[-1].status[0].message
    node.on_points(_cloud())  # a good cloud afterwards still works
    assert stats.frames_out == 1


def test_nan_points_removed_and_reported_not_dropped(node):
    out = []
    node.points_pub.publish = out.append
    arr = np.zeros(5, itf.POINT_DTYPE)
    arr["x"] = [0, np.nan, 2, 3, np.inf]
    msg = array_to_cloud(arr)
    node.on_points(msg)
    assert out and out[-1].width == 3
    assert node.stats["points"].frames_dropped == 0 and node.stats["points"].errors == 1


def test_unknown_image_encoding_reported(node):
    msg = array_to_image(np.zeros((4, 4, 3), np.uint8))
    msg.encoding = "bayer_rggb8"
    node.on_image(msg)
    assert "unsupported image encoding 'bayer_rggb8'" in node.stats["image"].last_error


# ---------------------------------------------------------------- ModelSlot (ROS-free)
class _Log:
    def __init__(self):
        self.lines = []

    def __getattr__(self, level):  # info / warning / error / debug
        return lambda msg: self.lines.append((level, msg))

    def at(self, level):
        return [m for lv, m in self.lines if lv == level]


class _Backend:
    def __init__(self):
        self.closed = 0

    def close(self):
        self.closed += 1


class _Model:
    def __init__(self, params):
        self.params = dict(params)
        self.backend = _Backend()


def _slot(fail_on=(), reload_keys=("model", "backend", "weights", "num_threads")):
    from squeeze_perception.node_base import ModelSlot

    built = []

    def build(params):
        if params["model"] in fail_on:
            raise RuntimeError(f"weights for '{params['model']}' are corrupt")
        built.append(_Model(params))
        return built[-1]

    log = _Log()
    return ModelSlot(reload_keys, build, log), built, log


PARAMS = {"model": "a", "backend": "cpu", "weights": "", "num_threads": 0, "top_k": 64}


def test_model_slot_load_keeps_the_model_or_none_and_the_reason():
    slot, built, log = _slot()
    assert slot.load(PARAMS) is True
    assert slot.current is built[0] and slot.error is None and built[0].params == PARAMS
    assert log.at("info") == ["loaded model 'a' on backend 'cpu'"] and not log.at("error")
    slot, built, log = _slot(fail_on={"a"})
    assert slot.load(PARAMS) is False
    assert slot.current is None and slot.error == "weights for 'a' are corrupt" and not built
    [line] = log.at("error")  # one clear line: what, why, and that the node keeps running
    assert line.startswith("model 'a' on backend 'cpu' not loaded: weights for 'a' are corrupt")
    assert "keeps running" in line and "'model', 'backend', 'weights', 'num_threads'" in line


def test_model_slot_change_of_other_keys_builds_nothing():
    slot, built, log = _slot()
    slot.load(PARAMS)
    first = slot.current
    assert slot.prepare(PARAMS, {"top_k": 10}) is None
    assert slot.commit() is False
    assert slot.current is first and len(built) == 1 and first.backend.closed == 0
    assert [m for m in log.at("info") if m.startswith("switched")] == []


def test_model_slot_switch_builds_from_merged_params_then_commit_swaps_and_closes_the_previous():
    slot, built, log = _slot()
    slot.load(PARAMS)
    first = slot.current
    assert slot.prepare({**PARAMS, "top_k": 8}, {"num_threads": 2}) is None
    assert slot.current is first and first.backend.closed == 0  # nothing swapped before commit
    assert built[1].params == {**PARAMS, "top_k": 8, "num_threads": 2}
    assert slot.commit() is True
    assert slot.current is built[1] and slot.error is None
    assert first.backend.closed == 1 and built[1].backend.closed == 0
    assert log.at("info")[-1] == "switched to model 'a' on backend 'cpu'"
    assert slot.prepare(PARAMS, {"model": "b", "backend": "gpu"}) is None and slot.commit()
    assert log.at("info")[-1] == "switched to model 'b' on backend 'gpu'"
    assert built[1].backend.closed == 1 and slot.commit() is False  # committed once only


def test_model_slot_failing_build_refuses_with_the_reason_and_keeps_the_old_model():
    slot, built, log = _slot(fail_on={"bad"})
    slot.load(PARAMS)
    first = slot.current
    reason = slot.prepare(PARAMS, {"model": "bad"})
    assert reason == "cannot load model 'bad' on backend 'cpu': weights for 'bad' are corrupt"
    assert slot.commit() is False
    assert slot.current is first and first.backend.closed == 0 and slot.error is None


def test_model_slot_recovers_from_a_failed_start_up_load():
    slot, built, log = _slot(fail_on={"a", "bad"})
    slot.load(PARAMS)
    assert slot.prepare(PARAMS, {"model": "bad"}).endswith("weights for 'bad' are corrupt")
    assert slot.error == "weights for 'bad' are corrupt"  # no model: error says why, latest attempt
    assert slot.prepare(PARAMS, {"model": "c"}) is None and slot.commit()
    assert slot.current is built[0] and slot.error is None


def test_model_slot_never_swaps_in_a_candidate_whose_change_was_refused_later():
    slot, built, log = _slot()
    slot.load(PARAMS)
    first = slot.current
    assert slot.prepare(PARAMS, {"weights": "w.pt"}) is None  # ... and another check refused the change
    assert slot.prepare(PARAMS, {"top_k": 1}) is None
    assert built[1].backend.closed == 1 and slot.commit() is False and slot.current is first


def test_model_slot_says_what_a_choosing_backend_resolved_to_once_per_load():
    """`auto` picks its backend at load time: the load / switch line names the choice and why."""
    import types

    from squeeze_perception.node_base import ModelSlot, backend_choice

    def build(params):
        if params["backend"] != "auto":
            return _Model(params)
        return types.SimpleNamespace(backend=types.SimpleNamespace(
            resolved_backend="onnxruntime-int8", reason="int8 graph models/a.int8.onnx"))

    log = _Log()
    slot = ModelSlot(("model", "backend"), build, log)
    assert slot.load({"model": "a", "backend": "auto"})
    assert log.at("info") == ["loaded model 'a' on backend 'auto': onnxruntime-int8 (int8 graph models/a.int8.onnx)"]
    assert backend_choice(slot.current, "auto") == ("onnxruntime-int8", "int8 graph models/a.int8.onnx")
    assert slot.prepare({"model": "a", "backend": "auto"}, {"backend": "cpu"}) is None and slot.commit()
    assert log.at("info")[-1] == "switched to model 'a' on backend 'cpu'"  # a plain backend: no choice to tell
    assert backend_choice(slot.current, "cpu") == ("cpu", None)
    assert slot.prepare({"model": "a", "backend": "cpu"}, {"backend": "auto"}) is None and slot.commit()
    assert log.at("info")[-1] == "switched to model 'a' on backend 'auto': onnxruntime-int8 (int8 graph models/a.int8.onnx)"
    assert len(log.at("info")) == 3


def test_close_backend_and_a_failing_close():
    import types

    from squeeze_perception.node_base import ModelSlot, close_backend

    calls = []
    close_backend(types.SimpleNamespace(close=lambda: calls.append("own")))
    close_backend(types.SimpleNamespace(backend=types.SimpleNamespace(close=lambda: calls.append("backend"))))
    close_backend(types.SimpleNamespace(backend=object()))  # a backend without close: nothing to do
    close_backend(None)
    assert calls == ["own", "backend"]

    def broken_close():
        raise OSError("link gone")

    log = _Log()
    slot = ModelSlot(("model",), lambda p: types.SimpleNamespace(backend=types.SimpleNamespace(close=broken_close)),
                     log)
    slot.load({"model": "a"})
    assert slot.prepare({"model": "a"}, {"model": "b"}) is None and slot.commit()  # switched all the same
    assert "link gone" in log.at("warning")[0]


def test_model_slot_warms_a_model_up_before_it_serves_and_refuses_one_that_cannot_run():
    from squeeze_perception.node_base import ModelSlot

    class Warm(_Model):
        def __init__(self, params):
            super().__init__(params)
            self.warmed = 0

        def warm_up(self):
            if self.params["model"] == "broken":
                raise RuntimeError("first inference failed: shape mismatch")
            self.warmed += 1
            return 12.3

    built, log = [], _Log()
    slot = ModelSlot(("model",), lambda p: built.append(Warm(p)) or built[-1], log)
    assert slot.load(PARAMS) and slot.current.warmed == 1 and slot.warm_up_ms == 12.3
    assert "warmed up, first inference 12 ms" in log.at("info")[-1]
    assert slot.prepare(PARAMS, {"model": "b"}) is None and built[-1].warmed == 1  # warm before the switch
    assert slot.commit() and slot.current is built[-1] and "warmed up" in log.at("info")[-1]
    reason = slot.prepare(PARAMS, {"model": "broken"})
    assert "first inference failed" in reason and slot.current.params["model"] == "b"
    assert built[-1].backend.closed == 1  # the refused candidate is closed, not leaked
    plain = _slot()[0]
    assert plain.load(PARAMS) and plain.warm_up_ms is None  # a model without warm_up: nothing extra

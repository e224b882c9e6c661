"""ParamSpec accepts every value rclpy hands a node, bounds are inclusive, and the parameter
defaults have one source: the ParamSpec lists in the nodes (config/*.yaml must agree).

rclpy delivers double / integer arrays set at runtime (`ros2 param set`, the parameter
service) as `array.array`, overrides as lists; Python callers pass tuples, numpy scalars and
numpy arrays (rclpy accepts numpy float scalars, which subclass float).
"""
from __future__ import annotations

import array
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from squeeze_perception.node_base import ParamSpec, plain_value

REPO = Path(__file__).resolve().parents[1]

DOUBLES = ParamSpec("process_noise", [0.1, 0.1, 1.0, 1.0], "")
INTS = ParamSpec("sizes", [1, 2, 3], "")
BOOLS = ParamSpec("flags", [True, False], "")
STRINGS = ParamSpec("names", ["a", "b"], "")
RATE = ParamSpec("rate", 1.0, "", min=0.01, max=100.0)
TOP_K = ParamSpec("top_k", 64, "", min=1, max=1000)
FLAG = ParamSpec("annotate", True, "")
NAME = ParamSpec("model", "squeezedet", "")


def _ok(spec: ParamSpec, value):
    got, reason = spec.validate(value)
    assert reason is None, reason
    return got


def _refused(spec: ParamSpec, value) -> str:
    _, reason = spec.validate(value)
    assert reason is not None and spec.name in reason
    return reason


# ------------------------------------------------------------------ one test per delivered type
def test_array_of_doubles_from_ros2_param_set():
    got = _ok(DOUBLES, array.array("d", [0.1, 0.1, 1.0, 1.0, 4.0, 4.0]))
    assert got == [0.1, 0.1, 1.0, 1.0, 4.0, 4.0] and type(got) is list
    assert all(type(v) is float for v in got)


def test_array_of_integers_from_ros2_param_set():
    got = _ok(INTS, array.array("q", [4, 5]))
    assert got == [4, 5] and all(type(v) is int for v in got)


def test_integer_array_into_a_double_list_becomes_floats():
    # `ros2 param set /tracker_node car.process_noise "[1, 1, 2, 2, 4, 4]"` arrives as array('q')
    got = _ok(DOUBLES, array.array("q", [1, 1, 2, 2]))
    assert got == [1.0, 1.0, 2.0, 2.0] and all(type(v) is float for v in got)


def test_tuple():
    got = _ok(DOUBLES, (0.5, 0.5, 2.0, 2.0))
    assert got == [0.5, 0.5, 2.0, 2.0] and type(got) is list
    assert _ok(STRINGS, ("x", "y")) == ["x", "y"]


def test_plain_list_of_bools_and_strings():
    assert _ok(BOOLS, [False, True]) == [False, True]
    assert _ok(STRINGS, ["car", "pedestrian"]) == ["car", "pedestrian"]


def test_numpy_array():
    got = _ok(DOUBLES, np.array([1.0, 2.0, 3.0], dtype=np.float32))
    assert type(got) is list and all(type(v) is float for v in got)
    assert _ok(INTS, np.arange(3, dtype=np.int32)) == [0, 1, 2]


@pytest.mark.parametrize("value, expected", [
    (np.float64(2.5), 2.5), (np.float32(0.5), 0.5), (np.int64(3), 3.0), (np.int32(7), 7.0),
])
def test_numpy_scalars_for_a_double(value, expected):
    got = _ok(RATE, value)
    assert got == expected and type(got) is float


@pytest.mark.parametrize("value", [np.int64(10), np.int32(10), np.uint16(10)])
def test_numpy_integer_scalars_for_an_integer(value):
    got = _ok(TOP_K, value)
    assert got == 10 and type(got) is int


def test_numpy_bool_and_string_scalars():
    got = _ok(FLAG, np.bool_(False))
    assert got is False
    got = _ok(NAME, np.str_("squeezedet_plus"))
    assert got == "squeezedet_plus" and type(got) is str


def test_wrong_entries_are_refused_with_their_position():
    assert "entry 1" in _refused(DOUBLES, [0.1, "x", 1.0, 1.0])
    assert "entry 0" in _refused(DOUBLES, [True, 1.0, 1.0, 1.0])      # a bool is not a number here
    assert "entry 0 must be an integer" in _refused(INTS, array.array("d", [1.0, 2.0, 3.5]))
    _refused(DOUBLES, "0.1, 0.1")                                       # a string is not a list
    _refused(TOP_K, np.float64(2.5))
    _refused(TOP_K, np.bool_(True))


def test_plain_value_leaves_plain_values_alone():
    for v in (1, 1.5, True, "s", [1, 2], b"x"):
        assert plain_value(v) == v and type(plain_value(v)) is type(v)


# ------------------------------------------------------------------ inclusive bounds
@pytest.mark.parametrize("spec, low, high, below, above", [
    (RATE, 0.01, 100.0, math.nextafter(0.01, 0.0), math.nextafter(100.0, math.inf)),
    (ParamSpec("x", 0.5, "", min=0.0, max=1.0), 0.0, 1.0, -1e-12, 1.0 + 1e-12),
    (TOP_K, 1, 1000, 0, 1001),
    (ParamSpec("n", 0, "", min=0, max=256), 0, 256, -1, 257),
])
def test_bounds_are_inclusive(spec, low, high, below, above):
    assert _ok(spec, low) == low
    assert _ok(spec, high) == high
    assert "below the minimum" in _refused(spec, below)
    assert "above the maximum" in _refused(spec, above)


def test_integer_at_a_double_bound_and_non_finite_values():
    assert _ok(ParamSpec("x", 0.5, "", min=0.0, max=1.0), 1) == 1.0
    assert _ok(ParamSpec("x", 0.5, "", min=0.0, max=1.0), np.int64(0)) == 0.0
    assert "finite" in _refused(RATE, float("nan"))
    assert "finite" in _refused(RATE, np.float64("inf"))


def test_descriptor_ranges_match_the_spec_bounds():
    d = RATE.descriptor()
    assert (d.floating_point_range[0].from_value, d.floating_point_range[0].to_value) == (0.01, 100.0)
    d = TOP_K.descriptor()
    assert (d.integer_range[0].from_value, d.integer_range[0].to_value) == (1, 1000)


# ------------------------------------------------------------------ through rclpy itself
def test_list_parameters_set_at_runtime_through_the_parameter_service(ros, monkeypatch):
    """What `ros2 param set /tracker_node car.process_noise "[...]"` does: a SetParameters
    request to the node's service, whose values rclpy hands the callback as array.array."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    from squeeze_perception.nodes.tracker_node import TrackerNode

    seen_types = []
    validate = ParamSpec.validate

    def spy(self, value):
        seen_types.append(type(value))
        return validate(self, value)

    monkeypatch.setattr(ParamSpec, "validate", spy)
    node = TrackerNode()
    seen_types.clear()
    client_node = Node("param_setter")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(client_node)
    try:
        client = AsyncParameterClient(client_node, node.get_fully_qualified_name())
        assert client.wait_for_services(timeout_sec=10.0)
        values = {
            "car.process_noise": [0.2, 0.2, 1.5, 1.5, 5.0, 5.0],
            "pedestrian.measurement_std": [0.2, 0.2],
            "camera_p": [700.0, 0.0, 600.0, 40.0, 0.0, 700.0, 170.0, 0.2, 0.0, 0.0, 1.0, 0.003],
            "velo_to_cam": np.eye(4).reshape(-1).tolist(),
        }
        future = client.set_parameters([Parameter(k, value=v) for k, v in values.items()])
        executor.spin_until_future_complete(future, timeout_sec=10.0)
        results = future.result().results
        assert all(r.successful for r in results), [r.reason for r in results]
        assert array.array in seen_types  # really exercised the array.array path
        for k, v in values.items():
            assert node.p[k] == pytest.approx(v) and type(node.p[k]) is list
        assert node.pipeline.tracker.config.for_class(1).process_noise == pytest.approx(values["car.process_noise"])
        # a wrong value through the same path is refused with a reason, not a type error
        future = client.set_parameters([Parameter("car.measurement_std", value=[0.1, 0.2, 0.3])])
        executor.spin_until_future_complete(future, timeout_sec=10.0)
        result = future.result().results[0]
        assert not result.successful and "2 numbers" in result.reason
    finally:
        executor.shutdown()
        client_node.destroy_node()
        node.destroy_node()
        assert rclpy.ok()


# ------------------------------------------------------------------ one source of defaults
NODE_CONFIGS = {
    "squeezedet_node": "squeezedet.yaml",
    "squeezeseg_node": "squeezeseg.yaml",
    "tracker_node": "tracker.yaml",
    "bag_player_node": "bag_player.yaml",
    "passthrough_node": "passthrough.yaml",
}


def _specs(node: str) -> dict[str, ParamSpec]:
    import importlib

    return {s.name: s for s in importlib.import_module(f"squeeze_perception.nodes.{node}").PARAMS}


def _flatten(params: dict, prefix: str = "") -> dict:
    """Nested sections as rcl reads them: car: {gate_m: 4.0} -> car.gate_m."""
    out = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("node", sorted(NODE_CONFIGS))
def test_config_yaml_repeats_the_param_spec_defaults(node):
    """`ros2 run` without a params file gets the ParamSpec defaults; config/<node>.yaml (what the
    launch file passes) must say the same, parameter for parameter."""
    specs = _specs(node)
    data = yaml.safe_load((REPO / "config" / NODE_CONFIGS[node]).read_text())
    assert list(data) == [node]
    params = _flatten(data[node]["ros__parameters"])
    assert not set(params) - set(specs), f"config/{NODE_CONFIGS[node]} sets unknown parameters"
    assert not set(specs) - set(params), f"config/{NODE_CONFIGS[node]} misses parameters"
    for name, value in params.items():
        got, reason = specs[name].validate(value)
        assert reason is None, reason
        assert got == specs[name].default, f"{name}: config {value!r} != code default {specs[name].default!r}"


def test_model_nodes_default_to_auto_like_config_and_readme():
    """`auto`: the int8 graph where the model has one, else fp32 onnxruntime (backends/auto.py)."""
    for node in ("squeezedet_node", "squeezeseg_node"):
        assert _specs(node)["backend"].default == "auto"
    readme = (REPO / "README.md").read_text()
    assert "`auto` (the default of both model nodes" in readme and "det_backend:=onnxruntime " in readme


def _doc_defaults() -> dict[str, dict[str, str]]:
    """{node: {parameter: default text}} from the parameter tables of docs/interfaces.md."""
    out: dict[str, dict[str, str]] = {}
    node = None
    for line in (REPO / "docs" / "interfaces.md").read_text().splitlines():
        if line.startswith("## "):
            node = line[3:].strip() if line[3:].strip() in NODE_CONFIGS else None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if node is None or len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = [n.strip().strip("`") for n in cells[0].split(" / ")]
        values = [v.strip().strip("`") for v in cells[1].split(" / ")]
        if len(names) == len(values) and all(v and "`" not in v and " " not in v for v in values):
            out.setdefault(node, {}).update(zip(names, values))
    return out


def test_docs_interfaces_parameter_tables_match_the_code_defaults():
    docs = _doc_defaults()
    checked = 0
    for node, table in docs.items():
        specs = _specs(node)
        for name, text in table.items():
            if name not in specs:
                continue
            value = "" if text == '""' else yaml.safe_load(text)
            got, reason = specs[name].validate(value)
            assert reason is None and got == specs[name].default, \
                f"docs/interfaces.md {node}.{name} = {text}, code default {specs[name].default!r}"
            checked += 1
    assert checked >= 30  # the tables were found (detector, segmenter, player, tracker, passthrough)


def test_launch_argument_defaults_fall_back_to_the_specs_without_config(tmp_path, monkeypatch):
    """With no config/ at all (a broken install), the launch arguments still default to the
    nodes' own defaults, never to a second copy in the launch file."""
    from squeeze_perception.launch_runner.runner import load_launch_description, plan_launch

    monkeypatch.setenv("SQUEEZE_PERCEPTION_ROOT", str(tmp_path))
    plan = plan_launch(load_launch_description(REPO / "launch" / "vehicle.launch.py"),
                       {"tracker": "false", "bag": "x"}, tmp_path)
    by_name = {p.name: p for p in plan.processes}
    det, seg = (_params_of(by_name[n].cmd) for n in ("squeezedet_node", "squeezeseg_node"))
    assert det["backend"] == _specs("squeezedet_node")["backend"].default == "auto"
    assert seg["backend"] == "auto" and seg["model"] == _specs("squeezeseg_node")["model"].default
    assert _params_of(by_name["bag_player_node"].cmd)["rate"] == _specs("bag_player_node")["rate"].default


def _params_of(cmd: list[str]) -> dict:
    merged: dict = {}
    args = cmd[cmd.index("--ros-args") + 1:]
    for i, a in enumerate(args):
        if a == "--params-file":
            for section in yaml.safe_load(Path(args[i + 1]).read_text()).values():
                merged.update(section["ros__parameters"])
    return merged

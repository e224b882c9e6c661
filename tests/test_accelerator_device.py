"""The shared emulated board (accelerator/device.py) and the client's device / CPU decision
(device_client.DeviceLink), ROS-free with an explicit clock: queueing, batching of requests of
one model, release of each result at its batch's emulated finish, and the statistics."""
from __future__ import annotations

import math

import pytest

from squeeze_perception.accelerator.device import DeviceQueue, DeviceRequest
from squeeze_perception.accelerator.device_client import DeviceLink
from squeeze_perception.accelerator.hardware import HWConfig, OpCost, Timing

HW = HWConfig()


def fake_timing(model: str, frames: int) -> Timing:
    """A board where a batch of n frames takes 10 + 5 n ms, the fabric busy 2 ms a frame,
    1 GOP a frame; model 'b' twice as slow. Unknown models raise KeyError as the real one does."""
    if model not in ("a", "b"):
        raise KeyError(model)
    k = 2 if model == "b" else 1
    return Timing(frames, [OpCost("conv", "conv", "fpga", 1e9 * frames, busy_s=0.002 * frames,
                                  call_s=k * (0.010 + 0.005 * frames) - 0.002 * frames)], HW)


def req(i, arrived, model="a", client="c", frames=1):
    return DeviceRequest(client, i, model, frames, arrived)


def test_a_lone_request_is_released_after_its_emulated_latency():
    q = DeviceQueue(fake_timing)
    assert q.submit(req(1, 1.0)) is None
    assert q.poll(1.0) == []
    assert q.poll(1.0149) == []
    (done,) = q.poll(1.015)
    assert done.finished_s == pytest.approx(1.015) and done.latency_ms == pytest.approx(15.0)
    assert done.batch_frames == 1
    assert done.energy_mj == pytest.approx(fake_timing("a", 1).energy_j * 1e3)


def test_requests_waiting_together_share_one_batch_up_to_max_batch():
    q = DeviceQueue(fake_timing, max_batch=3)
    q.submit(req(1, 0.0, client="det"))
    assert q.poll(0.0) == []  # batch of 1 runs 0 .. 15 ms
    for i, (t, client) in enumerate([(0.001, "seg"), (0.002, "det"), (0.003, "seg"), (0.004, "det")], 2):
        q.submit(req(i, t, client=client))
    first = q.poll(0.015)
    assert [d.request.request_id for d in first] == [1]
    # the next batch starts at 15 ms with the three oldest waiting (max_batch 3): 10 + 15 ms
    assert q.next_event_s() == pytest.approx(0.040)
    second = q.poll(0.040)
    assert [d.request.request_id for d in second] == [2, 3, 4]
    assert {d.batch_frames for d in second} == {3}
    assert all(d.started_s == pytest.approx(0.015) for d in second)
    assert second[0].latency_ms == pytest.approx(39.0)  # 14 ms queued + 25 ms on the board
    assert sum(d.energy_mj for d in second) == pytest.approx(fake_timing("a", 3).energy_j * 1e3)
    (last,) = q.poll(0.055)  # the fifth alone: 40 .. 55 ms
    assert last.request.request_id == 5 and last.started_s == pytest.approx(0.040)


def test_release_times_do_not_depend_on_how_late_poll_runs():
    early, late = DeviceQueue(fake_timing), DeviceQueue(fake_timing)
    for q in (early, late):
        for i, t in enumerate([0.0, 0.003, 0.030]):
            q.submit(req(i, t))
    got_early = []
    for k in range(0, 200):
        got_early += early.poll(k * 0.001)
    got_late = late.poll(1.0)
    assert [(d.request.request_id, round(d.finished_s, 9)) for d in got_early] == \
           [(d.request.request_id, round(d.finished_s, 9)) for d in got_late]


def test_other_models_wait_for_their_own_batch_and_unknown_ones_are_refused():
    q = DeviceQueue(fake_timing, max_batch=4)
    q.submit(req(1, 0.0, "a"))
    q.submit(req(2, 0.0, "b"))
    q.submit(req(3, 0.0, "a"))
    assert "not loaded" in q.submit(req(4, 0.0, "zzz"))
    done = q.poll(0.020)  # a + a together (20 ms); b waits
    assert [d.request.request_id for d in done] == [1, 3]
    assert q.next_event_s() == pytest.approx(0.050)  # b started at once, alone: 2 x 15 ms
    (b,) = q.poll(1.0)
    assert b.request.model == "b" and b.started_s == pytest.approx(0.020)
    assert q.refused_total == 1


def test_a_full_queue_refuses():
    q = DeviceQueue(fake_timing, max_queue=2)
    assert q.submit(req(1, 0.0)) is None and q.submit(req(2, 0.0)) is None
    assert "queue full" in q.submit(req(3, 0.0))


def test_statistics_over_the_window():
    q = DeviceQueue(fake_timing, max_batch=1, window_s=1.0, start_s=0.0)
    for i in range(10):  # one frame every 100 ms: 15 ms on the board each
        q.submit(req(i, i * 0.1))
        q.poll(i * 0.1)
    q.poll(1.0)
    s = q.stats(1.0)
    assert s.fps == pytest.approx(10.0)
    assert s.occupancy == pytest.approx(0.15)
    assert s.fpga_utilisation == pytest.approx(0.02)
    assert s.gops == pytest.approx(10.0)  # 1 GOP a frame, 10 frames a second
    busy_j = 10 * fake_timing("a", 1).energy_j
    assert s.power_w == pytest.approx(busy_j + HW.p_idle_w * 0.85)
    assert s.energy_mj_per_frame == pytest.approx(busy_j * 100)
    assert s.frames_total == 10 and s.queue_depth == 0
    assert math.isnan(DeviceQueue(fake_timing).stats(1.0).energy_mj_per_frame)


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_link_falls_back_when_the_heartbeat_stops_and_returns_when_it_is_back():
    clock, said = Clock(), []
    link = DeviceLink(stale_s=0.3, log=said.append, clock=clock)
    assert link.choose() == "cpu"  # no node seen yet
    link.frame_done("cpu")
    link.heartbeat()
    assert link.choose() == "device" and len(said) == 1
    link.frame_done("device")
    clock.t = 0.31  # node killed at 0: no heartbeat since
    assert link.choose() == "cpu" and "lost" in said[-1]
    assert link.choose() == "cpu" and len(said) == 2  # said once
    link.frame_done("cpu")
    clock.t = 5.0
    link.heartbeat()
    assert link.choose() == "device" and "is up" in said[-1]
    c = link.counters
    assert (c.frames_cpu, c.frames_device, c.to_cpu, c.to_device) == (2, 1, 1, 2)


def test_link_a_lost_request_needs_a_newer_heartbeat():
    clock, said = Clock(), []
    link = DeviceLink(stale_s=0.3, log=said.append, clock=clock)
    link.heartbeat()
    assert link.choose() == "device"
    clock.t = 0.1  # a stalled node: heartbeat still fresh, but the request was not answered
    link.request_lost("request not answered within 0.9 s")
    assert link.choose() == "cpu" and link.counters.frames_lost == 1
    link.heartbeat()  # a new heartbeat: it is back
    assert link.choose() == "device"

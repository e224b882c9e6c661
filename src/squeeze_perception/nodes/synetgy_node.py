"""synetgy_node: the one emulated Synetgy board (Ultra96, thesis 7.5) that model nodes with
`backend:=synetgy` share.

Requests (std_msgs/String JSON `{"client", "id", "model", "frames"}`) on /synetgy/requests
join one queue; the board runs them a batch at a time (same model, up to `max_batch` frames)
and each reply (`{"client", "id", "latency_ms", "device_ms", "queued_ms", "batch_frames",
"energy_mj", ...}` on /synetgy/replies) is published when its batch has finished in emulated
time. The queue and cost model are accelerator/device.py (ROS-free); the client side, which
emulates its frames' outputs itself and falls back to the CPU without this node, is
accelerator/device_client.py. Why time and not tensors cross the wire: device.py.

Publishes a heartbeat with the statistics (/synetgy/status, JSON, every `status_period_s`;
clients treat 0.5 s without it as the node gone), and once a second ~/utilisation,
~/fpga_utilisation, ~/queue_depth, ~/gops, ~/fps, ~/power_w, ~/energy_mj_per_frame
(std_msgs/Float32) plus the usual /diagnostics and ~/telemetry.
"""
from __future__ import annotations

import json
import math
import threading
import time

from std_msgs.msg import Float32, String

from ..accelerator.device import DeviceQueue, DeviceRequest, ModelTimings
from ..accelerator.device_client import TOPIC_REPLIES, TOPIC_REQUESTS, TOPIC_STATUS
from ..node_base import RESULT_QOS, ParamSpec, PerceptionNode, run_node
from ..registry import model_names

STAGE = "device"
METRICS = ("utilisation", "fpga_utilisation", "queue_depth", "gops", "fps", "power_w", "energy_mj_per_frame")

PARAMS = [
    ParamSpec("models", ["diracdeltaseg"], "Registry models compiled onto the board at start-up (a few s each); "
              "requests for others are refused and the client runs that frame on its CPU backend",
              check=lambda names: next((f"unknown model '{n}'" for n in names if n not in model_names()), None),
              read_only=True),
    ParamSpec("max_batch", 4, "Most frames the board runs as one batch (requests of one model waiting together)",
              min=1, max=64),
    ParamSpec("max_queue", 64, "Requests waiting beyond this are refused (the client falls back for that frame)",
              min=1, max=10000),
    ParamSpec("status_period_s", 0.05, "Heartbeat + statistics period on /synetgy/status (s)", min=0.01, max=0.25,
              read_only=True),
    ParamSpec("stats_window_s", 5.0, "Window of utilisation, GOP/s, fps and power (s)", min=0.5, max=600.0),
]


def _compile_for_timing(name: str):
    """The model's compiled program (timing only: untrained weights are fine)."""
    from ..backends.synetgy import SynetgyBackend
    from ..registry import get_model

    return SynetgyBackend(get_model(name), require_weights=False, device="local")


class SynetgyNode(PerceptionNode):
    def __init__(self, **kwargs):
        super().__init__("synetgy_node", PARAMS, stages=(STAGE,), **kwargs)
        self.hardware_id = "fpga-emulated (Ultra96 Synetgy)"
        self.timings = ModelTimings(_compile_for_timing)
        for name in self.p["models"]:
            t0 = time.perf_counter()
            self.timings.load(name)
            self.get_logger().info(f"{name} compiled for the board in {time.perf_counter() - t0:.1f} s "
                                   f"(batch 1: {self.timings(name, 1).latency_s * 1e3:.2f} ms emulated)")
        self.queue = DeviceQueue(self.timings, self.p["max_batch"], self.p["max_queue"],
                                 self.p["stats_window_s"], start_s=time.monotonic())
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self.reply_pub = self.advertise(String, TOPIC_REPLIES, self._reliable())
        self.status_pub = self.advertise(String, TOPIC_STATUS, self._reliable())
        self.metric_pubs = {m: self.advertise(Float32, f"~/{m}") for m in METRICS}
        self.create_subscription(String, TOPIC_REQUESTS, self.on_request, self._reliable())
        self.create_timer(self.p["status_period_s"], self.publish_status, clock=self.steady_clock)
        # Releases happen at emulated finish times, not on a polling timer: a thread sleeps until
        # the running batch ends or a request arrives.
        self._worker = threading.Thread(target=self._run_board, name="synetgy_board", daemon=True)
        self._worker.start()
        self.get_logger().info(f"board ready: models {list(self.timings.loaded)}, max_batch {self.p['max_batch']}")

    @staticmethod
    def _reliable():
        from rclpy.qos import QoSProfile

        return QoSProfile(reliability=RESULT_QOS.reliability, history=RESULT_QOS.history, depth=100,
                          durability=RESULT_QOS.durability)

    def on_parameters_changed(self, changes: dict) -> None:
        with self._lock:
            self.queue.max_batch = self.p["max_batch"]
            self.queue.max_queue = self.p["max_queue"]
            self.queue.window_s = self.p["stats_window_s"]

    # ------------------------------------------------------------------ requests
    def on_request(self, msg: String) -> None:
        with self.frame(STAGE) as ctx:
            try:
                body = json.loads(msg.data)
                request = DeviceRequest(str(body["client"]), int(body["id"]), str(body["model"]),
                                        int(body.get("frames", 1)), time.monotonic())
            except (ValueError, KeyError, TypeError) as exc:
                self.report_error(STAGE, f"malformed request {msg.data[:80]!r}: {exc!r}")
                return
            with self._lock:
                reason = self.queue.submit(request)
                self._lock.notify()
            if reason:  # the client times out on it and runs the frame on its CPU
                self.report_error(STAGE, f"refused: {reason}")
                return
            ctx.published += 1  # a reply will follow

    def _run_board(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                released = self.queue.poll(time.monotonic())
                due = self.queue.next_event_s()
                if not released:
                    timeout = 0.1 if due is None else max(0.0, min(0.1, due - time.monotonic()))
                    self._lock.wait(timeout)
                    continue
            for done in released:
                st = self.stats[STAGE]
                st.add_latency(done.latency_ms)
                st.add_inference(done.device_ms)
                st.add_energy(done.energy_mj)
                try:
                    self.reply_pub.publish(String(data=json.dumps(done.as_reply())))
                except Exception:  # noqa: BLE001 - shutting down: the publisher is gone
                    return

    # ------------------------------------------------------------------ statistics
    def _device_stats(self) -> dict:
        with self._lock:
            s = self.queue.stats(time.monotonic()).as_dict()
        s["utilisation"] = s.pop("occupancy")
        return s

    def publish_status(self) -> None:
        if not self.context.ok():
            return
        s = self._device_stats()
        s.update(models=list(self.timings.loaded), max_batch=self.p["max_batch"])
        try:
            self.status_pub.publish(String(data=json.dumps(
                {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in s.items()})))
        except Exception:  # noqa: BLE001 - shutdown race
            pass

    def publish_telemetry(self) -> None:
        if self.context.ok():
            s = self._device_stats()
            st = self.stats[STAGE]
            st.info.update({f"board_{k}": f"{float(s[k]):.3f}" for k in METRICS})
            st.info["inference_latency"] = "emulated"
            st.info["energy_source"] = "backend"
            for m in METRICS:
                try:
                    self.metric_pubs[m].publish(Float32(data=float(s[m])))
                except Exception:  # noqa: BLE001 - shutdown race
                    pass
        super().publish_telemetry()

    def destroy_node(self):
        self._stop.set()
        with self._lock:
            self._lock.notify()
        self._worker.join(timeout=1.0)
        return super().destroy_node()


def main(args=None) -> int:
    return run_node(SynetgyNode, args)


if __name__ == "__main__":
    raise SystemExit(main())

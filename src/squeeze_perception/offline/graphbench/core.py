"""ROS-free core of `squeeze-perception bench graph`: per-topic latency statistics, dropped
frames, the rate search, per-process CPU and memory sampling, the bag hash and the report.

Terms (as ros2_benchmark uses them, adapted to a bag replay):
- a *frame* is one message of a sensor topic played from the bag, identified by its header
  stamp; its *sensor time* is when the monitor received it from the player (the moment it was
  published, plus the same delivery delay the outputs also have);
- the *latency* of an output message is the time it reached the monitor minus the sensor time
  of the frame with the same header stamp (the nodes copy the input stamp to their outputs);
- an output topic *dropped* a frame of its source topic when no message with that frame's
  stamp came out (within the run and its drain time);
- *jitter* is the standard deviation of the intervals between consecutive outputs of a topic
  (ros2_benchmark's definition), reported beside the input's own interval jitter.
"""
from __future__ import annotations

import hashlib
import math
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

DROP_LIMIT = 0.05  # the rate search's criterion: fewer than 5 % of frames dropped on every topic


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in 0..100; nan for no values."""
    v = sorted(values)
    if not v:
        return math.nan
    pos = (len(v) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def std(values: Sequence[float]) -> float:
    """Population standard deviation; nan for fewer than two values."""
    if len(values) < 2:
        return math.nan
    m = sum(values) / len(values)
    return math.sqrt(sum((x - m) ** 2 for x in values) / len(values))


def latency_summary(latencies_ms: Sequence[float]) -> dict:
    return {"count": len(latencies_ms), "p50_ms": percentile(latencies_ms, 50), "p95_ms": percentile(latencies_ms, 95),
            "p99_ms": percentile(latencies_ms, 99), "max_ms": max(latencies_ms) if latencies_ms else math.nan,
            "mean_ms": sum(latencies_ms) / len(latencies_ms) if latencies_ms else math.nan}


@dataclass
class Recording:
    """What the monitor saw in one run: per topic, (header stamp ns, receive time s) in arrival order."""
    inputs: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    outputs: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    def add(self, kind: str, topic: str, stamp_ns: int, t_s: float) -> None:
        getattr(self, kind).setdefault(topic, []).append((stamp_ns, t_s))


def topic_stats(rec: Recording, sources: dict[str, str]) -> dict:
    """Per output topic (sources: output topic -> the input topic its frames come from):
    latency p50/p95/p99/max, jitter, frames expected / published / dropped, duplicates."""
    sensor_time: dict[int, float] = {}
    for msgs in rec.inputs.values():
        for stamp, t in msgs:
            sensor_time.setdefault(stamp, t)  # the first publication of a stamp
    out = {}
    for topic, source in sources.items():
        frames = {s for s, _ in rec.inputs.get(source, [])}
        msgs = rec.outputs.get(topic, [])
        lat = []
        seen = set()
        duplicates = unmatched = stale = 0
        for stamp, t in msgs:
            if stamp in sensor_time and t < sensor_time[stamp]:
                stale += 1  # a late output of the previous play of the same bag (same stamps)
                continue
            if stamp in seen:
                duplicates += 1
                continue
            seen.add(stamp)
            if stamp in sensor_time:
                lat.append((t - sensor_time[stamp]) * 1e3)
            else:
                unmatched += 1
        times = [t for _, t in msgs]
        intervals = [(b - a) * 1e3 for a, b in zip(times, times[1:])]
        in_times = sorted(t for _, t in rec.inputs.get(source, []))
        in_intervals = [(b - a) * 1e3 for a, b in zip(in_times, in_times[1:])]
        dropped = len(frames - seen)
        out[topic] = {
            "source": source, "frames": len(frames), "published": len(seen), "dropped": dropped,
            "dropped_fraction": dropped / len(frames) if frames else 0.0,
            "duplicates": duplicates, "unmatched_stamps": unmatched, "stale_outputs": stale,
            "latency": latency_summary(lat),
            "latencies_ms": [round(v, 3) for v in lat],  # per frame, so plays can be pooled (pooled_topics)
            "jitter_ms": std(intervals), "mean_interval_ms": (sum(intervals) / len(intervals)) if intervals else math.nan,
            "input_jitter_ms": std(in_intervals),
        }
    return out


def pooled_topics(trials: list[dict]) -> dict:
    """Per output topic over several plays together: frames, dropped, and the latency
    percentiles of every frame of every play (a 12-frame play's p95 is its largest value but
    one; pooled, the p95 of 5 plays rests on 60 frames)."""
    out: dict[str, dict] = {}
    for trial in trials:
        for topic, s in trial["topics"].items():
            acc = out.setdefault(topic, {"plays": 0, "frames": 0, "dropped": 0, "latencies": []})
            acc["plays"] += 1
            acc["frames"] += s["frames"]
            acc["dropped"] += s["dropped"]
            acc["latencies"] += s.get("latencies_ms", [])
    return {topic: {"plays": a["plays"], "frames": a["frames"], "dropped": a["dropped"],
                    "latency": latency_summary(a["latencies"])} for topic, a in out.items()}


def worst_drop_fraction(stats: dict) -> float:
    return max((s["dropped_fraction"] for s in stats.values()), default=0.0)


@dataclass
class SearchStep:
    rate_hz: float
    drop_fraction: float
    passed: bool


def search_max_rate(trial: Callable[[float], float], start_hz: float, max_hz: float, growth: float = 2.0,
                    rel_tol: float = 0.1, limit: float = DROP_LIMIT, max_trials: int = 12) -> tuple[float | None, list[SearchStep]]:
    """Highest rate with trial(rate) (the worst topic's dropped fraction) < limit.

    Grows the rate by `growth` from start_hz while trials pass (up to max_hz), then bisects between
    the last pass and the first fail until they are within rel_tol of each other, or max_trials
    ran. When start_hz already fails, it shrinks by `growth` until one passes (None if none does
    above start_hz / growth**4). Returns (best passing rate or None, the trials in order)."""
    steps: list[SearchStep] = []

    def run(rate: float) -> bool:
        drop = float(trial(rate))
        ok = drop < limit
        steps.append(SearchStep(rate, drop, ok))
        return ok

    lo = hi = None
    rate = min(start_hz, max_hz)
    if run(rate):
        lo = rate
        while lo * (1.0 + rel_tol) < max_hz and len(steps) < max_trials:  # within tolerance of max: done
            rate = min(lo * growth, max_hz)
            if run(rate):
                lo = rate
            else:
                hi = rate
                break
    else:
        hi = rate
        for _ in range(4):
            if len(steps) >= max_trials:
                break
            rate = hi / growth
            if run(rate):
                lo = rate
                break
            hi = rate
    if lo is None:
        return None, steps
    while hi is not None and hi / lo - 1.0 > rel_tol and len(steps) < max_trials:
        mid = math.sqrt(lo * hi)
        if run(mid):
            lo = mid
        else:
            hi = mid
    return lo, steps


# ---------------------------------------------------------------- processes: CPU% and resident memory
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def read_proc(pid: int) -> tuple[float, int] | None:
    """(user + system CPU seconds, resident bytes) of a process from /proc; None when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/statm") as f:
            rss_pages = int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    # after the ')': state is field 3 of stat(5), utime 14 and stime 15 -> indices 11, 12 here
    return (int(fields[11]) + int(fields[12])) / CLK_TCK, rss_pages * PAGE


def sample_process(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, resident bytes) with psutil when installed, else /proc."""
    try:
        import psutil
    except ImportError:
        return read_proc(pid)
    try:
        p = psutil.Process(pid)
        with p.oneshot():
            t = p.cpu_times()
            return t.user + t.system, p.memory_info().rss
    except (psutil.Error, OSError):
        return None


@dataclass
class ProcessUsage:
    """CPU% and resident memory of one process from samples (monotonic time, CPU s, RSS bytes)."""
    name: str
    pid: int
    nodes: tuple[str, ...] = ()
    samples: list[tuple[float, float, int]] = field(default_factory=list)

    def sample(self, now: float | None = None) -> None:
        s = sample_process(self.pid)
        if s is not None:
            self.samples.append((time.monotonic() if now is None else now, s[0], s[1]))

    def summary(self, t_from: float | None = None) -> dict:
        """CPU% over the window from the last sample at or before t_from (the first frame) to the
        last sample; resident memory max and last over that window."""
        sel = self.samples
        if t_from is not None and sel:
            k = max([i for i, (t, _, _) in enumerate(sel) if t <= t_from], default=0)
            sel = sel[k:]
        wall = sel[-1][0] - sel[0][0] if len(sel) >= 2 else 0.0
        cpu = sel[-1][1] - sel[0][1] if len(sel) >= 2 else 0.0
        rss = [r for _, _, r in sel]
        return {"process": self.name, "pid": self.pid, "nodes": list(self.nodes),
                "cpu_percent": 100.0 * cpu / wall if wall > 0 else math.nan, "cpu_s": cpu, "wall_s": wall,
                "rss_max_mb": max(rss) / 2 ** 20 if rss else math.nan,
                "rss_last_mb": rss[-1] / 2 ** 20 if rss else math.nan, "samples": len(sel)}


# ---------------------------------------------------------------- provenance
def bag_hash(path: str | Path) -> str:
    """sha256 over the bag's files (a rosbag2 folder: every file, by relative name, sorted)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def git_revision(repo: str | Path) -> dict:
    """{'commit': sha or None, 'dirty': bool or None} of the source tree."""
    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
    try:
        rev = git("rev-parse", "HEAD")
        if rev.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return {"commit": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def frame_rate_hz(stamps_ns: Iterable[int]) -> float:
    """Mean frame rate of a stream of stamps (n - 1 intervals over the span)."""
    s = sorted(set(stamps_ns))
    if len(s) < 2 or s[-1] == s[0]:
        return math.nan
    return (len(s) - 1) / ((s[-1] - s[0]) * 1e-9)


def header_stamp_ns(cdr: bytes, first_is_sequence: bool = False) -> int | None:
    """Header stamp of a CDR message whose first field is std_msgs/Header (Image, PointCloud2,
    ...), or with first_is_sequence of a message starting with a sequence of such (MarkerArray;
    None when empty). Little or big endian by the encapsulation header."""
    if len(cdr) < 12:
        return None
    order = "little" if cdr[1] in (1, 3) else "big"
    off = 4
    if first_is_sequence:
        if int.from_bytes(cdr[4:8], order) == 0 or len(cdr) < 16:
            return None
        off = 8
    sec = int.from_bytes(cdr[off:off + 4], order, signed=True)
    nsec = int.from_bytes(cdr[off + 4:off + 8], order)
    return sec * 1_000_000_000 + nsec


def fmt(v: float, digits: int = 1) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def render(report: dict) -> str:
    """Plain-text tables of a report (one block per mode and trial)."""
    lines = [f"bag {report['config']['bag']} (sha256 {report['bag_sha256'][:12]}), git {report['git']['commit']}"
             f"{' (dirty)' if report['git']['dirty'] else ''}, load average {report.get('load_average')}"]
    for mode in report["modes"]:
        lines.append(f"\n== {mode['mode']} ==")
        if mode.get("search") is not None:
            s = mode["search"]
            lines.append("rate search: " + ", ".join(f"{t['rate_hz']:.2f} Hz drop {100 * t['drop_fraction']:.0f}%"
                                                      f" {'pass' if t['passed'] else 'fail'}" for t in s["trials"])
                         + f" -> max rate {fmt(s['max_rate_hz'], 2)} Hz")
        for trial in mode["trials"]:
            lines.append(f"-- {trial['label']}: input {fmt(trial['input_rate_hz'], 2)} Hz (player rate x{trial['player_rate']:.3g}),"
                         f" worst drop {100 * trial['worst_drop_fraction']:.0f}%")
            lines.append(f"   {'topic':40s} {'frames':>6s} {'pub':>4s} {'drop':>4s} {'p50':>7s} {'p95':>7s} {'p99':>7s}"
                         f" {'max':>7s} {'jitter':>7s}  (ms)")
            for topic, s in trial["topics"].items():
                la = s["latency"]
                lines.append(f"   {topic:40s} {s['frames']:6d} {s['published']:4d} {s['dropped']:4d} {fmt(la['p50_ms']):>7s}"
                             f" {fmt(la['p95_ms']):>7s} {fmt(la['p99_ms']):>7s} {fmt(la['max_ms']):>7s} {fmt(s['jitter_ms']):>7s}")
            for p in trial["processes"]:
                lines.append(f"   process {p['process']:28s} CPU {fmt(p['cpu_percent'])}%  RSS max {fmt(p['rss_max_mb'])} MB"
                             f"  nodes {','.join(p['nodes']) or '-'}")
        if mode.get("pooled"):
            lines.append(f"-- all {len(mode['trials'])} plays pooled")
            lines.append(f"   {'topic':40s} {'frames':>6s} {'drop':>4s} {'p50':>7s} {'p95':>7s} {'p99':>7s} {'max':>7s}  (ms)")
            for topic, s in mode["pooled"].items():
                la = s["latency"]
                lines.append(f"   {topic:40s} {s['frames']:6d} {s['dropped']:4d} {fmt(la['p50_ms']):>7s}"
                             f" {fmt(la['p95_ms']):>7s} {fmt(la['p99_ms']):>7s} {fmt(la['max_ms']):>7s}")
    return "\n".join(lines)

"""ROS-free core of `squeeze-perception soak` (the command: soak_cli.py): from resident-memory
samples and telemetry counter series of a long run, the per-node memory growth, throughput in
the first vs the second half, the pass/fail verdict and the summary table.

Definitions (docs/reliability.md, "Soak"):
- the *run* starts when every processing node has processed its first frame (model loading is
  not part of it) and lasts the requested time; its first `warmup_s` are the *warm-up*
  (allocator arenas, first-inference buffers, caches filling) and are not measured;
- *RSS at start* is the median of the resident-memory samples in the first `rss_window_s` after
  the warm-up, *RSS at end* the median of the last `rss_window_s` of the run (medians, so one
  transient allocation does not decide the verdict); *growth* = end / start - 1 in %;
  *peak* is the largest sample of the whole run, warm-up included;
- *throughput* of a stage is frames_processed per second (its telemetry counter) over the first
  and the second half of the measured window (warm-up end .. run end); a counter that falls
  back (a respawned node starts again at 0) adds its new value, not a negative step;
- the verdict fails when any process grew more than `max_rss_growth_pct`, or any processing
  node's primary stage ran its second half at less than `min_throughput_ratio` of its first
  half (or processed nothing), or a node restarted, or the packet check found traffic.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

# The stage whose frames_processed is a node's throughput (the one every input frame passes).
PRIMARY_STAGE = {"squeezedet_node": "detect", "squeezeseg_node": "points", "tracker_node": "tracking",
                 "passthrough_node": "points", "bag_player_node": "playback"}
# Nodes that only feed the graph: their throughput is reported, not judged. The player
# counts messages it published (frames_out, every topic), not frames_processed.
INPUT_NODES = ("bag_player_node",)
THROUGHPUT_COUNTER = {"bag_player_node": "frames_out"}


def throughput_counter(node: str) -> str:
    return THROUGHPUT_COUNTER.get(node, "frames_processed")


@dataclass(frozen=True)
class Thresholds:
    max_rss_growth_pct: float = 5.0
    min_throughput_ratio: float = 0.95


def default_warmup_s(run_s: float) -> float:
    """10 % of the run, at most 60 s: long enough for first-frame costs, short beside 30 min."""
    return min(60.0, 0.1 * run_s)


def window_median(samples: Sequence[tuple[float, float]], t0: float, t1: float) -> float:
    """Median value of the (time, value) samples with t0 <= time <= t1; nan when none."""
    values = [v for t, v in samples if t0 <= t <= t1]
    return statistics.median(values) if values else math.nan


def rss_summary(samples: Sequence[tuple[float, float]], run_start: float, warmup_end: float, run_end: float,
                window_s: float) -> dict:
    """Resident memory (samples: (time s, bytes)) at start / end of the measured window, growth
    and peak, in MB. Windows shorter than two samples fall back to the nearest sample."""
    def nearest(t):
        return min(samples, key=lambda s: abs(s[0] - t))[1] if samples else math.nan

    start = window_median(samples, warmup_end, min(run_end, warmup_end + window_s))
    end = window_median(samples, max(warmup_end, run_end - window_s), run_end)
    start = nearest(warmup_end) if math.isnan(start) else start
    end = nearest(run_end) if math.isnan(end) else end
    in_run = [v for t, v in samples if run_start <= t <= run_end] or [v for _, v in samples]
    growth = 100.0 * (end / start - 1.0) if start and not math.isnan(start) and not math.isnan(end) else math.nan
    mb = 2.0 ** 20
    return {"start_mb": start / mb, "end_mb": end / mb, "growth_pct": growth,
            "peak_mb": max(in_run) / mb if in_run else math.nan, "samples": len(samples)}


def _last_index_at_or_before(series: Sequence[tuple[float, float]], t: float) -> int | None:
    found = None
    for i, (ts, _) in enumerate(series):
        if ts <= t:
            found = i
        else:
            break
    return found


def counter_increase(series: Sequence[tuple[float, float]], i0: int, i1: int) -> float:
    """Increase of a cumulative counter from sample i0 to i1; a drop is a restart from 0 (the new
    value is what was counted since)."""
    total = 0.0
    for (_, a), (_, b) in zip(series[i0:i1], series[i0 + 1:i1 + 1]):
        total += b - a if b >= a else b
    return total


def increase_between(series: Sequence[tuple[float, float]], t0: float, t1: float) -> tuple[float, float]:
    """(counter increase, seconds) between the last samples at or before t0 and t1 (their own
    times as the interval, so the telemetry period does not bias a rate); (nan, nan) without
    two samples."""
    i0, i1 = _last_index_at_or_before(series, t0), _last_index_at_or_before(series, t1)
    if i0 is None:
        i0 = 0 if series and series[0][0] <= t1 else None
    if i0 is None or i1 is None or i1 <= i0:
        return math.nan, math.nan
    return counter_increase(series, i0, i1), series[i1][0] - series[i0][0]


def rate_between(series: Sequence[tuple[float, float]], t0: float, t1: float) -> float:
    """Counter increase per second between t0 and t1 (increase_between); nan when undefined."""
    frames, dt = increase_between(series, t0, t1)
    return frames / dt if dt and not math.isnan(dt) else math.nan


def throughput_halves(series: Sequence[tuple[float, float]], warmup_end: float, run_end: float) -> dict:
    """frames per second in the first and second half of warm-up end .. run end, their ratio,
    and the frames behind each rate (a ratio of 14 vs 12 frames is mostly counting noise)."""
    mid = 0.5 * (warmup_end + run_end)
    (n1, dt1), (n2, dt2) = increase_between(series, warmup_end, mid), increase_between(series, mid, run_end)
    first = n1 / dt1 if dt1 and not math.isnan(dt1) else math.nan
    second = n2 / dt2 if dt2 and not math.isnan(dt2) else math.nan
    ratio = second / first if first and not math.isnan(first) and not math.isnan(second) else math.nan
    return {"first_half_fps": first, "second_half_fps": second, "ratio": ratio,
            "first_half_frames": n1, "second_half_frames": n2}


def verdict(nodes: dict[str, dict], thresholds: Thresholds, packets: dict | None = None) -> list[str]:
    """Reasons the soak failed (empty: passed). `nodes`: name -> {"rss": rss_summary(...),
    "throughput": throughput_halves(...) or None, "restarts": int}; `packets`: the packet
    check's report (its "leaks" counts) when it ran."""
    failures = []
    for name, n in sorted(nodes.items()):
        growth = n.get("rss", {}).get("growth_pct", math.nan)
        if math.isnan(growth):
            failures.append(f"{name}: no resident-memory samples")
        elif growth > thresholds.max_rss_growth_pct:
            failures.append(f"{name}: RSS grew {growth:.1f}% (limit {thresholds.max_rss_growth_pct:g}%)")
        if n.get("restarts"):
            failures.append(f"{name}: restarted {n['restarts']} time(s)")
        tp = n.get("throughput")
        if tp is None or n.get("input_only"):
            continue
        ratio = tp.get("ratio", math.nan)
        if math.isnan(ratio):
            failures.append(f"{name}: no throughput to compare (first half {tp.get('first_half_fps')} fps, "
                            f"second half {tp.get('second_half_fps')} fps)")
        elif ratio < thresholds.min_throughput_ratio:
            failures.append(f"{name}: second-half throughput {100 * ratio:.1f}% of the first half "
                            f"(limit {100 * thresholds.min_throughput_ratio:g}%)")
    if packets is not None:
        if packets.get("error"):
            failures.append(f"packet check: {packets['error']}")
        for what, count in sorted(packets.get("leaks", {}).items()):
            if count:
                failures.append(f"packet check: {count} outgoing {what} frame(s) on non-loopback interfaces")
    return failures


def fmt(v, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def render(report: dict) -> str:
    """The end-of-run table: memory and throughput per node, the honest counters per stage, the
    packet counts and the verdict."""
    cfg = report["config"]
    lines = [f"soak: {fmt(report['run']['run_s'], 0)} s run ({fmt(report['run']['warmup_s'], 0)} s warm-up) of "
             f"{', '.join(cfg['nodes'])} on {cfg['bag']} (sha256 {report['bag_sha256'][:12]}) at "
             f"{fmt(cfg.get('rate_hz'))} Hz, git {report['git'].get('commit')}"
             f"{' (dirty)' if report['git'].get('dirty') else ''}, load average {report.get('load_average')}"]
    head = (f"{'node':18s} {'RSS start':>9s} {'end':>7s} {'growth':>7s} {'peak':>7s}  {'stage':9s} "
            f"{'fps 1st':>7s} {'fps 2nd':>7s} {'ratio':>6s} {'frames':>11s} {'restarts':>8s}")
    lines += ["", head + "   (MB, frames/s)", "-" * len(head)]
    for name, n in report["nodes"].items():
        r, tp = n["rss"], n.get("throughput") or {}
        lines.append(f"{name:18s} {fmt(r['start_mb']):>9s} {fmt(r['end_mb']):>7s} {fmt(r['growth_pct'], 2):>6s}%"
                     f" {fmt(r['peak_mb']):>7s}  {fmt(n.get('stage') or '-'):9s} {fmt(tp.get('first_half_fps'), 2):>7s}"
                     f" {fmt(tp.get('second_half_fps'), 2):>7s} {fmt(tp.get('ratio'), 3):>6s}"
                     f" {fmt(tp.get('first_half_frames'), 0) + '/' + fmt(tp.get('second_half_frames'), 0):>11s}"
                     f" {n.get('restarts', 0):8d}"
                     + ("  (input)" if n.get("input_only") else ""))
    lines += ["", f"{'node':18s} {'stage':12s} {'in':>7s} {'skipped':>7s} {'processed':>9s} {'out':>7s} {'failed':>6s}"
                  "   (final counters)"]
    for name, n in report["nodes"].items():
        for stage, c in (n.get("counters") or {}).items():
            lines.append(f"{name:18s} {stage:12s} {c.get('frames_in', 0):7d} {c.get('frames_skipped', 0):7d}"
                         f" {c.get('frames_processed', 0):9d} {c.get('frames_out', 0):7d} {c.get('frames_failed', 0):6d}")
    packets = report.get("packets")
    if packets is not None:
        lines += ["", "outgoing frames on the non-loopback interfaces "
                      f"{', '.join(packets.get('interfaces') or []) or '(none)'} "
                      f"(socket drops {packets.get('socket_drops', 0)}):"]
        if packets.get("error"):
            lines.append(f"  capture error: {packets['error']}")
        lines.append("  " + ", ".join(f"{k} {v}" for k, v in packets.get("leaks", {}).items())
                     + f"; unrelated (not the stack's ports) {packets.get('unrelated_total', 0)}"
                     + f", of which RTPS of other DDS domains {packets.get('rtps_other_domains', 0)}")
        for flow in packets.get("leak_flows", [])[:8]:
            lines.append(f"    {flow['frames']:6d} x {flow['kind']} {flow['key']}"
                         f" ({'a stack port' if flow['from_stack'] else 'not a port of the stack'})")
        for flow in packets.get("unrelated_flows", [])[:8]:
            lines.append(f"    {flow['frames']:6d} x {flow['key']}")
    failures = report["verdict"]["failures"]
    lines += ["", "verdict: " + ("PASS" if not failures else "FAIL")] + [f"  - {f}" for f in failures]
    return "\n".join(lines)

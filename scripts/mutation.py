#!/usr/bin/env python3
"""Mutation testing of the runtime cores with mutmut (`make mutation`; not part of CI).

Each group below mutates a few modules and runs only their fast unit tests (never the ROS
end-to-end tests). A group works in its own copy, out/mutation/<group>/ (src/, the listed
test files and a setup.cfg carrying the [mutmut] section), so the working tree is never
mutated and several groups can keep their results side by side. mutmut itself picks, per
mutated function, only the tests that call it.

    python scripts/mutation.py                 # every group, within MUTATION_BUDGET_S (3300 s)
    python scripts/mutation.py decode tracking # some groups
    python scripts/mutation.py --list

mutmut caches verdicts in out/mutation/<group>/mutants/: a rerun after a time-out continues
where it stopped (mutmut re-tests a mutant only when the function it mutates changed: after adding tests, reset
the survivors first, see docs/testing.md). Per group it writes
stats.json (counts per verdict), results.txt (every mutant and its verdict) and survivors.txt
(the diff of each surviving mutant); out/mutation/summary.md sums them up.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "out" / "mutation"
PKG = "src/squeeze_perception"

# group: (modules under src/squeeze_perception, test files under tests/, share of the time budget)
GROUPS: dict[str, tuple[list[str], list[str], float]] = {
    "decode": (["detection/decode.py"],
               ["test_detection_loss_decode.py", "test_mutation_survivors.py"], 0.05),
    "projection": (["kitti/projection.py"],
                   ["test_kitti_projection.py", "test_tracking_fusion.py"], 0.10),
    "crf": (["segmentation/crf.py"], ["test_segmentation_crf.py"], 0.15),
    "clustering": (["segmentation/clustering.py", "segmentation/boxfit.py"],
                   ["test_segmentation_clustering.py", "test_segmentation_dbscan_paths.py",
                    "test_segmentation_boxfit.py"], 0.20),
    "tracking": (["tracking/kalman.py", "tracking/association.py", "tracking/sync.py",
                  "tracking/tracker.py", "tracking/fusion.py"],
                 ["test_tracking_kalman.py", "test_tracking_association.py", "test_tracking_sync.py",
                  "test_tracking_tracker.py", "test_tracking_fusion.py", "test_mutation_survivors.py",
                  "test_tracking_fusion_contract.py", "test_tracking_tracker_contract.py",
                  "test_tracking_sync_contract.py", "test_tracking_kalman_contract.py"], 0.30),
    "msgs_conv": (["msgs_conv.py"], ["test_msgs_conv.py", "test_msgs_conv_contract.py"], 0.10),
    "node_base": (["node_base.py"], ["test_core_node_base.py", "test_core_telemetry_params.py",
                                     "test_core_node_base_contract.py", "test_core_node_base_run.py"], 0.10),
}
# rclpy starts DDS threads: fork those tests' workers from a clean fork server, not from
# the process that ran them.
FORKSERVER = {"node_base"}


def _mutmut_section(group: str, modules: list[str], tests: list[str]) -> str:
    lines = ["", "[mutmut]", "source_paths = src", "only_mutate ="]
    lines += [f"    {PKG}/{m}" for m in modules]
    lines += ["pytest_add_cli_args_test_selection ="] + [f"    tests/{t}" for t in tests]
    lines += ["pytest_add_cli_args =", "    -p", "    no:cacheprovider",
              "timeout_multiplier = 10.0", "timeout_constant = 5.0",
              "use_git_change_detection = false"]
    if group in FORKSERVER:
        lines.append("process_isolation = forkserver")
    return "\n".join(lines) + "\n"


def prepare(group: str) -> Path:
    modules, tests, _ = GROUPS[group]
    work = OUT / group
    work.mkdir(parents=True, exist_ok=True)
    src = work / "src"
    # mutmut re-copies a source file into mutants/ only when it changed, so refresh src/ in place
    shutil.copytree(REPO / "src", src, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (work / "tests").mkdir(exist_ok=True)
    shutil.copy2(REPO / "tests" / "conftest.py", work / "tests" / "conftest.py")
    present = []
    for t in tests:
        if (REPO / "tests" / t).exists():
            shutil.copy2(REPO / "tests" / t, work / "tests" / t)
            present.append(t)
        else:
            print(f"[{group}] warning: tests/{t} not found, skipped")
    cfg = (REPO / "setup.cfg").read_text()
    (work / "setup.cfg").write_text(cfg + _mutmut_section(group, modules, present))
    # tests/conftest.py looks for the real KITTI sample beside the repo: <mutants>/../shared
    shared = REPO.parent / "shared"
    if shared.exists() and not (work / "shared").exists():
        (work / "shared").symlink_to(shared)
    return work


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               SQUEEZE_PERCEPTION_ROOT=str(REPO), SQUEEZE_PERCEPTION_MODELS=str(REPO / "models"),
               PYTHONDONTWRITEBYTECODE="1")
    env.setdefault("ROS_DOMAIN_ID", str(60 + os.getpid() % 40))
    return env


def run_group(group: str, limit_s: float, max_children: int) -> dict:
    work = prepare(group)
    mutmut = Path(sys.executable).with_name("mutmut")
    cmd = [str(mutmut), "run", "--max-children", str(max_children)]
    print(f"[{group}] {' '.join(cmd)}  (cwd {work.relative_to(REPO)}, limit {limit_s:.0f} s)", flush=True)
    t0 = time.monotonic()
    with open(work / "run.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=work, env=_env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            proc.wait(timeout=limit_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            timed_out = True
    wall = time.monotonic() - t0
    return collect(group, wall, timed_out, proc.returncode)


def _mutant_diffs(group: str, names: list[str]) -> str:
    """Unified diff of each named mutant against the original function, read from the mutated
    copy mutmut wrote (cheaper than one `mutmut show` per mutant)."""
    work = OUT / group
    out = []
    for mod in GROUPS[group][0]:
        dotted = "squeeze_perception." + mod[:-3].replace("/", ".")
        wanted = [n for n in names if n.startswith(dotted + ".")]
        if not wanted:
            continue
        path = work / "mutants" / PKG / mod
        text = path.read_text()
        # slices of one line list: ast.get_source_segment re-splits the whole file per call,
        # which took minutes on the tracking group's mutated files
        lines = text.splitlines(keepends=True)
        funcs = {f.name: "".join(lines[f.lineno - 1:f.end_lineno]) for f in ast.walk(ast.parse(text))
                 if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}
        for name in wanted:
            fn = name[len(dotted) + 1:]
            orig = funcs.get(fn.rsplit("__mutmut_", 1)[0] + "__mutmut_orig", "")
            mutant = funcs.get(fn, "").replace(fn, fn.rsplit("__mutmut_", 1)[0] + "__mutmut_orig", 1)
            diff = difflib.unified_diff(orig.splitlines(), mutant.splitlines(),
                                        f"{mod} (original)", f"{mod} ({fn})", lineterm="", n=1)
            out.append(f"### {name}\n" + "\n".join(diff) + "\n")
    return "\n".join(out)


def collect(group: str, wall: float, timed_out: bool, rc: int | None) -> dict:
    work = OUT / group
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    res = subprocess.run([mutmut, "results", "--all", "true"], cwd=work, env=_env(),
                         capture_output=True, text=True)
    (work / "results.txt").write_text(res.stdout)
    verdicts: dict[str, str] = {}
    for line in res.stdout.splitlines():
        if ": " in line:
            name, verdict = line.strip().rsplit(": ", 1)
            verdicts[name] = verdict
    counts: dict[str, int] = {}
    for v in verdicts.values():
        counts[v] = counts.get(v, 0) + 1
    survivors = sorted(n for n, v in verdicts.items() if v == "survived")
    (work / "survivors.txt").write_text(_mutant_diffs(group, survivors))
    caught = counts.get("killed", 0) + counts.get("timeout", 0)
    checked = caught + counts.get("survived", 0) + counts.get("no tests", 0) + counts.get("suspicious", 0)
    summary = {"group": group, "modules": GROUPS[group][0], "tests": GROUPS[group][1],
               "wall_s": round(wall, 1), "timed_out": timed_out, "rc": rc, "total": len(verdicts),
               "counts": counts, "score": round(100.0 * caught / checked, 1) if checked else None,
               "survivors": survivors}
    (work / "stats.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def write_summary() -> None:
    rows = ["| group | modules | mutants | killed | timeout | survived | no tests | not checked | score (checked) | wall s |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for group in GROUPS:
        p = OUT / group / "stats.json"
        if not p.exists():
            rows.append(f"| {group} | {', '.join(GROUPS[group][0])} | not run | | | | | | | |")
            continue
        s = json.loads(p.read_text())
        c = s["counts"]
        rows.append(f"| {group} | {', '.join(s['modules'])} | {s['total']} | {c.get('killed', 0)} | "
                    f"{c.get('timeout', 0)} | {c.get('survived', 0)} | {c.get('no tests', 0)} | "
                    f"{c.get('not checked', 0)} | {s['score']} | {s['wall_s']} |")
    (OUT / "summary.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("groups", nargs="*", help=f"default: all of {', '.join(GROUPS)}")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--budget-s", type=float, default=float(os.environ.get("MUTATION_BUDGET_S", 3300)),
                    help="wall-clock budget for all selected groups, shared by their weights")
    ap.add_argument("--max-children", type=int, default=int(os.environ.get("MUTATION_JOBS", 2)))
    args = ap.parse_args()
    if args.list:
        for g, (mods, tests, w) in GROUPS.items():
            print(f"{g}: mutate {', '.join(mods)}; tests {', '.join(tests)}; budget share {w}")
        return 0
    groups = args.groups or list(GROUPS)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        ap.error(f"unknown group(s) {unknown}; --list shows them")
    total_w = sum(GROUPS[g][2] for g in groups)
    deadline = time.monotonic() + args.budget_s
    for i, g in enumerate(groups):
        left = deadline - time.monotonic()
        rest_w = sum(GROUPS[h][2] for h in groups[i:])
        limit = max(60.0, left * GROUPS[g][2] / rest_w) if total_w else left
        s = run_group(g, limit, args.max_children)
        print(f"[{g}] score {s['score']}% of checked  {s['counts']}  survivors {len(s['survivors'])}"
              f"{'  (stopped at its time limit: rerun to continue)' if s['timed_out'] else ''}", flush=True)
    write_summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())

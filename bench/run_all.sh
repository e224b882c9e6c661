#!/usr/bin/env bash
# Every benchmark of the project, one after the other (`make bench`). Each prints its numbers
# as ratios measured side by side in the same run; docs/*.md quote them with these commands.
set -euo pipefail
cd "$(dirname "$0")/.."
SP=.venv/bin/squeeze-perception
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
echo "== SqueezeDet: batch-1 latency (torch vs onnxruntime) and ratio to the compute bound"
$SP det bench
echo "== SqueezeSeg/V2: per-stage latency, compute-bound ratio, DBSCAN scikit-learn vs fast"
$SP seg bench
echo "== Tracker: per-frame latency vs number of objects"
$SP track bench
echo "== Synthetic world: LiDAR + camera frames per second"
$SP synth bench

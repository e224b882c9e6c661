# Two commands for a fresh machine (see README):  make run   and   make test
# Both create or reuse .venv with the pinned dependencies first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BAG ?=  # empty: vehicle.launch.py's default (bags/demo_drive if generated, else bags/kitti_real_4frames)
ARGS ?=
# Keep DDS discovery on loopback; never multicast out of the network card.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export RMW_IMPLEMENTATION ?= rmw_fastrtps_cpp

.PHONY: setup run test bench demo-drive clean mutation

setup: $(STAMP)

$(STAMP): requirements.txt requirements-pip-only.txt requirements-nodeps.txt setup.py
	@bash scripts/system_deps.sh
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# TrackEval's metadata pulls opencv-python and pycocotools, which its HOTA/CLEAR metrics never import.
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

run: $(STAMP)
	ROS_DOMAIN_ID=$${ROS_DOMAIN_ID:-$$(( $$$$ % 90 + 10 ))} \
	  $(VENV)/bin/squeeze-perception launch vehicle.launch.py $(if $(strip $(BAG)),bag:=$(strip $(BAG))) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q tests $(ARGS)

# Benchmarks (not part of the tests): each prints ratios measured side by side in one run.
bench: $(STAMP)
	bash bench/run_all.sh

# Mutation testing of the runtime cores with mutmut (requirements-dev.txt), not in CI: works in
# out/mutation/<group>/, bounded by MUTATION_BUDGET_S (default 3300 s); GROUPS="decode tracking"
# picks groups. Score and survivors: out/mutation/summary.md, docs/testing.md.
mutation: $(STAMP)
	$(PY) -m pip install -q -r requirements-dev.txt
	nice -n 19 $(PY) scripts/mutation.py $(GROUPS)

# The full 20 s synthetic demo drive (about 500 MB, ~10 min); `make run` uses it when present.
demo-drive: $(STAMP)
	$(VENV)/bin/squeeze-perception synth demo-bag --out bags/demo_drive

clean:
	rm -rf $(VENV) build install log *.egg-info src/*.egg-info

"""Offline tooling: what a vehicle never runs (architecture search, mixed-precision search,
application-specific distillation, model manifests, distributed training helpers).

Runtime modules (nodes, detection/segmentation/tracking cores, backends, registry) must not
import this package; tests/test_offline_runtime_imports.py checks it. Code here may import the
runtime (it trains and measures the very modules the nodes run).
"""

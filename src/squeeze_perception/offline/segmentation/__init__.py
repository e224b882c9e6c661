"""Offline segmentation: SqueezeSeg training, domain adaptation, evaluation, benchmarks, plots."""

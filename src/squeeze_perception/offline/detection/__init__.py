"""Offline detection: SqueezeDet training, evaluation, benchmarks, statistics, BN adaptation."""

"""Offline tracking: tracker evaluation (MOT metrics), synthetic scenarios, its CLI."""

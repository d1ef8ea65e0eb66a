"""Metric names and registries."""

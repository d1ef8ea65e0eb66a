"""berth: turn a Python predictor into a scalable, monitored web service."""

__version__ = "0.1.0"

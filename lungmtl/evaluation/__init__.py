"""evaluate(): metrics.json (overall, per source, patient and scan, CIs), predictions, report."""

from .run import evaluate

__all__ = ["evaluate"]

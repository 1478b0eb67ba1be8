"""Training: ``fit`` a run config into a run folder."""

from .loop import FitResult, fit

__all__ = ["FitResult", "fit"]

"""Training: ``fit`` a run config into a run folder."""

from .loop import FitResult, build_from_config, fit

__all__ = ["FitResult", "build_from_config", "fit"]

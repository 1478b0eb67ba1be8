"""Calibrated probabilities and a site's operating point (docs/calibration.md).

Modules: :mod:`.measures` (ECE, Brier, reliability), :mod:`.thresholds` (operating points),
:mod:`.model` (the :class:`Calibration` a
checkpoint or a site file carries), :mod:`.fit` (fitting it to labelled slices and scans),
:mod:`.run` (``lungmtl calibrate``: the model over local data, then the fit).
"""

from .measures import calibration_block, reliability_png
from .model import Calibration

__all__ = ["Calibration", "calibration_block", "reliability_png"]

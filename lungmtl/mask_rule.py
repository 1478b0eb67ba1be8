"""Which slices keep their infection map: the rule that reconciles the two heads.

The classifier and the segmentation head can disagree. v1 kept a map only where P(infected) >=
0.5 (a hard gate), which empties the outline of every infected slice the classifier misses;
no gate keeps spurious outlines on healthy slices. ``evidence`` keeps a map where either head
is confident: the classifier says infected, or the map's own outline is large and confident
enough. ``soft`` scales the map by P(infected). Figures: docs/results.md, "Model v2".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import InputError
from .forward import SliceProbabilities

KINDS = ("none", "gate", "evidence", "soft")
#: Map threshold that makes an outline (as everywhere in lungmtl).
MAP_THRESHOLD = 0.5


@dataclass(frozen=True)
class MaskRule:
    """A slice keeps its map when ``kind`` says so.

    - ``none``: always;
    - ``gate``: P(infected) >= ``gate``;
    - ``evidence``: P(infected) >= ``gate``, or the outline (map >= 0.5) covers at least
      ``min_area`` pixels of the model grid with a mean map probability >= ``min_conf`` there;
    - ``soft``: the map is multiplied by P(infected) before the 0.5 threshold, so it is stricter
      than ``gate`` at 0.5: no pixel survives on a slice with P < 0.5, and faint edges go on
      slices called infected (``keep`` says which slices are not dropped outright).
    """

    kind: str = "gate"
    gate: float = 0.5
    min_area: int = 0
    min_conf: float = 0.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InputError("mask rule", f"kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("gate", "min_conf"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
                raise InputError("mask rule", f"{name} must lie in [0, 1], got {v!r}")
        if (
            isinstance(self.min_area, bool)
            or not isinstance(self.min_area, int)
            or self.min_area < 0
        ):
            raise InputError(
                "mask rule", f"min_area must be an integer >= 0, got {self.min_area!r}"
            )

    def keep(self, pred: SliceProbabilities) -> np.ndarray:
        """(N,) bool: the slices whose map is not dropped outright (all for ``none`` and ``soft``;
        ``soft`` then scales the map, see :meth:`apply`)."""
        p = np.asarray(pred.p_infected)
        if self.kind in ("none", "soft"):
            return np.ones(len(p), bool)
        called = p >= self.gate
        if self.kind == "gate":
            return called
        outline = pred.seg_prob >= MAP_THRESHOLD
        area = outline.sum(axis=(1, 2))
        conf = (pred.seg_prob * outline).sum(axis=(1, 2)) / np.maximum(area, 1)
        return called | ((area >= max(self.min_area, 1)) & (conf >= self.min_conf))

    def apply(self, pred: SliceProbabilities) -> SliceProbabilities:
        """The maps after the rule (probabilities of dropped slices set to 0)."""
        if self.kind == "none":
            return pred
        if self.kind == "soft":
            scale = np.asarray(pred.p_infected, pred.seg_prob.dtype)[:, None, None]
            return pred._replace(seg_prob=pred.seg_prob * scale)
        keep = self.keep(pred).astype(pred.seg_prob.dtype)[:, None, None]
        return pred._replace(seg_prob=pred.seg_prob * keep)

    def describe(self) -> str:
        if self.kind == "none":
            return "every map kept"
        if self.kind == "soft":
            return "map x P(infected)"
        text = f"map kept where P(infected) >= {self.gate:g}"
        if self.kind == "evidence":
            text += f", or its outline >= {self.min_area} px at mean map P >= {self.min_conf:g}"
        return text

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MaskRule:
        unknown = set(d) - {"kind", "gate", "min_area", "min_conf"}
        if unknown:
            raise InputError("mask rule", f"unknown keys {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def of_checkpoint(cls, ck: dict) -> MaskRule:
        """The checkpoint's rule: ``mask_rule``, else v1's ``mask_gate`` (a hard gate), else
        none (a training run's checkpoint carries no rule)."""
        if ck.get("mask_rule"):
            return cls.from_dict(ck["mask_rule"])
        if ck.get("mask_gate") is not None:
            return cls("gate", float(ck["mask_gate"]))
        return cls("none")

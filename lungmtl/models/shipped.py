"""Trained models that ship inside the package, by name, checked against their sha256."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CheckpointError

#: Where the shipped weight files live (package data).
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


@dataclass(frozen=True)
class ShippedModel:
    """One shipped model: its file under ``lungmtl/weights``, checksum and headline figures
    (test split of ../shared/data, see docs/model-card.md and docs/model-card-v1.md)."""

    name: str
    file: str
    sha256: str
    description: str
    figures: dict[str, float] = field(default_factory=dict)


SHIPPED: dict[str, ShippedModel] = {}
#: The model ``predict`` and ``evaluate`` use when no ``--checkpoint`` is given.
DEFAULT: str | None = None

_verified: set[Path] = set()


def register(model: ShippedModel, *, default: bool = False) -> None:
    global DEFAULT
    SHIPPED[model.name] = model
    if default:
        DEFAULT = model.name


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def shipped_path(name: str, weights_dir: Path | None = None) -> Path:
    """The verified weight file of shipped model ``name``.

    Raises:
        CheckpointError: unknown name, missing file, or a checksum that does not match (a
            damaged or replaced file is never loaded).
    """
    if name not in SHIPPED:
        raise CheckpointError(name, f"no such shipped model; shipped: {sorted(SHIPPED)}")
    model = SHIPPED[name]
    path = (weights_dir or WEIGHTS_DIR) / model.file
    if not path.is_file():
        raise CheckpointError(path, f"the weights of shipped model {name!r} are missing")
    if path not in _verified:
        got = sha256(path)
        if got != model.sha256:
            raise CheckpointError(
                path,
                f"sha256 mismatch for shipped model {name!r}: expected {model.sha256}, got "
                f"{got}; the file is damaged or was replaced (reinstall lungmtl)",
            )
        _verified.add(path)
    return path


def default_checkpoint() -> str:
    """The name of the default shipped model, or an error saying to train or pass one."""
    if DEFAULT is None:
        raise CheckpointError("--checkpoint", "no shipped model in this install: pass a run")
    return DEFAULT


register(
    ShippedModel(
        name="covid-unet-cpu-v1",
        file="covid-unet-cpu-v1.pt",
        sha256="a220dbbbf95a3f4ed3e9c44bf104d6f19af0f06a73c7893f5a4452131ffba55d",
        description=(
            "U-Net x0.125 + CBAM, 128 px lung crop, 3 seeds x 40 epochs of "
            "configs/release-cpu.yaml, left-right test-time flip; research use only"
        ),
        figures={"test AUC": 0.949, "test Dice infected slices": 0.487, "test accuracy": 0.865},
    ),
)

register(
    ShippedModel(
        name="covid-unet-cpu-v2",
        file="covid-unet-cpu-v2.pt",
        sha256="b01cba06da2f87e5cb66a1a2f72fe57fb4c03847b1df20768fb0216f6f125f21",
        description=(
            "U-Net x0.125 + CBAM, 128 px lung crop, 3 seeds x 40 epochs of "
            "configs/release-cpu-v2.yaml (Tversky, hospital looks, healthy slices as empty masks), "
            "left-right test-time flip, soft mask rule; research use only"
        ),
        figures={"test AUC": 0.950, "test Dice infected slices": 0.491, "test accuracy": 0.881},
    ),
    default=True,
)

"""What ``lungmtl models`` lists: the shipped models with their test figures, and each
architecture with its parameter count."""

from __future__ import annotations

from .base import MODELS, create_model
from .multitask import count_parameters
from .shipped import DEFAULT, SHIPPED


def describe() -> str:
    """The listing as text, one model per line."""
    lines: list[str] = []

    lines.append("shipped models (--checkpoint NAME; figures: test split, docs/model-card.md):")
    for m in SHIPPED.values():
        figs = ", ".join(f"{k} {v:.3f}" for k, v in m.figures.items())
        mark = " (default)" if m.name == DEFAULT else ""
        lines.append(f"  {m.name}{mark}: {m.description}")
        if figs:
            lines.append(f"    {figs}")
    if not SHIPPED:
        lines.append("  none")
    lines.append("")

    lines.append(
        f"{'model':<10} {'attention':<10} {'parameters':>12}   (paper widths 64-128-256-512)"
    )
    for name in sorted(n for n, e in MODELS.items() if not e.external):
        for attention in ("cbam", None):
            n = count_parameters(create_model(name, attention=attention))
            lines.append(f"{name:<10} {attention or 'none':<10} {n:>12,}")
    for name, extra in sorted((n, e.extra) for n, e in MODELS.items() if e.external):
        try:
            n = count_parameters(create_model(name, attention=None))
            lines.append(f"{name:<10} {'none':<10} {n:>12,}   (ecosystem baseline)")
        except ImportError:
            hint = f"not installed: pip install 'lungmtl[{extra}]'"
            lines.append(f"{name:<10} {'none':<10} {'-':>12}   ({hint})")
    return "\n".join(lines)

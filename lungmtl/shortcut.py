"""Shortcut checks: can a slice's source be told from its pixels, and does accuracy survive within
a source? ``shortcut_report`` writes shortcut.md and .json; docs/results.md, "Shortcut check".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, confusion_matrix
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .data.cache import SliceCache, build_cache
from .data.resize import resize
from .data.sources import load_sources
from .errors import InputError
from .metrics import classification_metrics
from .presentation import fmt

#: The real-data sources that hold both infected and healthy slices.
MIXED_SOURCES = ("medseg-covid2", "covid-ct-md")


def slice_features(images: np.ndarray, size: int = 32, bins: int = 32) -> np.ndarray:
    """Per-slice features: a ``size`` x ``size`` thumbnail, an intensity histogram, quantiles.

    Args:
        images: (N, S, S) pre-processed slices on the [0, 1] scale.
        size: thumbnail side.
        bins: histogram bins over [0, 1].

    Returns:
        (N, size * size + bins + 5) float32 features.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise InputError("slice_features", f"expected (N, S, S) images, got {images.shape}")
    rows = []
    for im in images:
        thumb = resize(im, size).ravel()
        hist = np.histogram(np.clip(im, 0, 1), bins=bins, range=(0.0, 1.0))[0] / im.size
        stats = [im.mean(), im.std(), *np.quantile(im, [0.05, 0.5, 0.95])]
        rows.append(np.concatenate([thumb, hist, stats]))
    return np.asarray(rows, dtype=np.float32)


def _oof_predict(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int, seed: int):
    """Out-of-fold predictions of a logistic regression; whole patients (groups) per fold."""
    n_groups = len(np.unique(groups))
    folds = max(2, min(folds, n_groups))
    pred = np.empty(len(y), dtype=object)
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in cv.split(x, y, groups):
        clf = make_pipeline(
            StandardScaler(),
            LogisticRegression(max_iter=2000, C=0.1, class_weight="balanced"),
        )
        if len(np.unique(y[train])) < 2:  # a fold with one class: the answer is that class
            pred[test] = y[train][0]
            continue
        clf.fit(x[train], y[train])
        pred[test] = clf.predict(x[test])
    return pred, folds


def source_classifier_check(
    cache: SliceCache, *, size: int = 32, bins: int = 32, folds: int = 5, seed: int = 0
) -> dict:
    """How well the source of a slice is predicted from its pre-processed pixels alone.

    Patient-grouped cross-validation: every slice is predicted by a model that saw no slice of
    its patient. Chance is the majority source's share for accuracy and 1/K for balanced accuracy.

    Args:
        cache: pre-processed slices (``cache.table`` has ``source``, ``patient``, ``label``).
        size: thumbnail side of the features.
        bins: histogram bins of the features.
        folds: cross-validation folds (at most the number of patients).
        seed: fold shuffling seed.

    Returns:
        Dict: n_slices, n_sources, folds, accuracy, balanced_accuracy, chance_accuracy,
        chance_balanced, per_source {source: {n_slices, n_patients, recall}}, sources (order of
        the confusion matrix), confusion, label_from_source_accuracy, label_majority_accuracy.
    """
    table = cache.table.reset_index(drop=True)
    y = table["source"].astype(str).to_numpy()
    sources = sorted(set(y))
    if len(sources) < 2:
        raise InputError("shortcut", f"needs at least two sources, got {sources}")
    groups = (table["source"].astype(str) + "/" + table["patient"].astype(str)).to_numpy()
    x = slice_features(np.asarray(cache.images, dtype=np.float32), size, bins)
    pred, used = _oof_predict(x, y, groups, folds, seed)
    counts = table["source"].value_counts()
    infected = table["label"] == "infected"
    per_source = {
        s: {
            "n_slices": int(counts[s]),
            "n_patients": int(table.loc[table["source"] == s, "patient"].nunique()),
            "n_infected": int((infected & (table["source"] == s)).sum()),
            "recall": float(np.mean(pred[y == s] == s)),
        }
        for s in sources
    }
    # Knowing only the source: call every slice of a source by its majority label.
    by_source = table.assign(inf=infected).groupby("source")["inf"].agg(["sum", "count"])
    from_source = float(np.maximum(by_source["sum"], by_source["count"] - by_source["sum"]).sum())
    return {
        "n_slices": len(table),
        "n_sources": len(sources),
        "folds": used,
        "features": f"{size}x{size} thumbnail + {bins}-bin histogram + mean/std/quantiles",
        "accuracy": float(np.mean(pred == y)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred.astype(str))),
        "chance_accuracy": float(counts.max() / len(table)),
        "chance_balanced": 1.0 / len(sources),
        "per_source": per_source,
        "sources": sources,
        "confusion": confusion_matrix(y, pred.astype(str), labels=sources).tolist(),
        "label_from_source_accuracy": from_source / len(table),
        "label_majority_accuracy": float(max(infected.mean(), 1 - infected.mean())),
    }


def _predictions(eval_or_csv: str | Path) -> pd.DataFrame:
    p = Path(eval_or_csv)
    if p.is_dir():
        p = p / "predictions.csv"
    if not p.is_file():
        raise InputError(p, "no predictions.csv: run `lungmtl evaluate` first")
    frame = pd.read_csv(p)
    missing = {"source", "patient", "label", "p_infected"} - set(frame.columns)
    if missing:
        raise InputError(p, f"missing column(s) {sorted(missing)}")
    return frame


def _block(frame: pd.DataFrame) -> dict:
    y = (frame["label"] == "infected").astype(int).to_numpy()
    m = classification_metrics(y, frame["p_infected"].to_numpy())
    keys = ("n", "n_infected", "n_healthy", "accuracy", "sensitivity", "specificity", "auc")
    return {k: m.get(k) for k in keys}


def within_source_check(eval_or_csv: str | Path, sources: tuple[str, ...] = MIXED_SOURCES) -> dict:
    """Infected/healthy accuracy where the source cannot give the answer away.

    Args:
        eval_or_csv: an evaluation folder or its ``predictions.csv``.
        sources: sources to report by name (also when absent: reported as missing); every other
            source holding both classes is reported too.

    Returns:
        Dict: overall (all slices), mixed_pooled (slices of sources holding both classes),
        per_source {source: metrics + both_classes}, within_patient {patient: metrics} for
        patients holding both classes, missing (named sources absent from the evaluation).
    """
    frame = _predictions(eval_or_csv)
    out: dict = {"overall": _block(frame), "per_source": {}, "within_patient": {}}
    mixed = []
    for src, part in frame.groupby("source", sort=True):
        both = part["label"].nunique() == 2
        if both or src in sources:
            out["per_source"][src] = {**_block(part), "both_classes": bool(both)}
        if both:
            mixed.append(part)
            for patient, pp in part.groupby("patient", sort=True):
                if pp["label"].nunique() == 2:
                    out["within_patient"][str(patient)] = {"source": src, **_block(pp)}
    out["mixed_pooled"] = _block(pd.concat(mixed)) if mixed else None
    out["missing"] = [s for s in sources if s not in set(frame["source"])]
    return out


def _markdown(src: dict | None, within: dict | None, eval_dir: str | None) -> str:
    lines = ["# Shortcut check", ""]
    if src is not None:
        lines += [
            "## Can the source be told from the image?",
            "",
            f"A logistic regression on {src['features']} of the pre-processed slices predicts "
            f"the source of slices of unseen patients ({src['folds']}-fold cross-validation "
            f"grouped by patient, {src['n_slices']} slices, {src['n_sources']} sources) with "
            f"accuracy **{fmt(src['accuracy'], 100, 1)}%** "
            f"(chance {fmt(src['chance_accuracy'], 100, 1)}%) and "
            f"balanced accuracy **{fmt(src['balanced_accuracy'], 100, 1)}%** "
            f"(chance {fmt(src['chance_balanced'], 100, 1)}%).",
            "",
            f"Knowing only the source (calling each slice by its source's majority label) "
            "predicts infected/healthy with accuracy "
            f"**{fmt(src['label_from_source_accuracy'], 100, 1)}%**"
            f" (majority label overall: {fmt(src['label_majority_accuracy'], 100, 1)}%)."
            " The gap between"
            " the two is what a classifier can gain from telling sources apart, without looking"
            " at the lungs.",
            "",
            "| source | slices | patients | infected | recall of the source (%) |",
            "|---|---|---|---|---|",
        ]
        for s, b in src["per_source"].items():
            lines.append(
                f"| {s} | {b['n_slices']} | {b['n_patients']} | {b['n_infected']} "
                f"| {fmt(b['recall'], 100, 1)} |"
            )
        lines.append("")
    if within is not None:
        lines += [
            "## Does infected/healthy accuracy survive within a source?",
            "",
            f"From `{eval_dir}`. Rows marked *both* hold infected and healthy slices, so the source"
            " cannot give the answer away there; compare them with the overall row.",
            "",
            "| slices | n | infected | healthy | Acc (%) | Sens (%) | Spec (%) | AUC (%) |",
            "|---|---|---|---|---|---|---|---|",
        ]

        def row(name: str, b: dict | None) -> None:
            if b is None:
                return
            lines.append(
                f"| {name} | {b['n']} | {b['n_infected']} | {b['n_healthy']} "
                f"| {fmt(b['accuracy'], 100, 1)} | {fmt(b['sensitivity'], 100, 1)} "
                f"| {fmt(b['specificity'], 100, 1)} "
                f"| {fmt(b['auc'], 100, 1)} |"
            )

        row("all", within["overall"])
        row("sources holding both classes, pooled", within["mixed_pooled"])
        for s, b in within["per_source"].items():
            row(f"source {s}" + (" (both)" if b["both_classes"] else " (one class)"), b)
        for p, b in within["within_patient"].items():
            row(f"patient {p} ({b['source']}, within-patient)", b)
        if within["missing"]:
            lines += [
                "",
                f"Not in this evaluation: {', '.join(within['missing'])} (evaluate on a split or"
                " `--data` that holds them to check them).",
            ]
        lines.append("")
    return "\n".join(lines)


def shortcut_report(
    data: list[str] | None,
    out: str | Path,
    *,
    eval_dir: str | Path | None = None,
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    progress: bool = True,
) -> str:
    """Run the shortcut checks and write ``OUT/shortcut.md`` and ``OUT/shortcut.json``.

    Args:
        data: data folders whose sources to tell apart (``None``: skip that check).
        out: output folder.
        eval_dir: an evaluation folder (``predictions.csv``) for the within-source check.
        config: run config whose ``preprocess`` and ``data.cache_dir`` to use; without one the
            defaults at 64 px are used (the features are 32x32 thumbnails anyway).
        overrides: ``key=value`` overrides of that config.
        progress: show the pre-processing progress bar.

    Returns:
        The Markdown report.
    """
    from .config import load_config

    if not data and eval_dir is None:
        raise InputError("shortcut", "give data folders and/or an evaluation folder")
    sets = ([] if config else ["preprocess.size=64"]) + list(overrides or [])
    cfg = load_config(config, sets)
    src = None
    if data:
        table = load_sources(list(data))
        cache = build_cache(
            table, cfg.preprocess, cfg.data.cache_dir, skip_bad=True, progress=progress
        )
        src = source_classifier_check(cache)
    within = within_source_check(eval_dir) if eval_dir is not None else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"source_classifier": src, "within_source": within}
    (out / "shortcut.json").write_text(json.dumps(result, indent=2))
    text = _markdown(src, within, str(eval_dir) if eval_dir else None)
    (out / "shortcut.md").write_text(text)
    return text

"""The main job on a fresh machine: the shipped model on a bundled real CT sample (report.html),
or, with ``--train``, train, evaluate and report on a built-in synthetic phantom."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .config import RunConfig, load_config
from .data.phantom import write_phantom_dataset
from .evaluation import evaluate
from .presentation import fmt
from .training import fit

#: The bundled real CT sample (see its README.md for source, credit and licence).
SAMPLE = Path(__file__).resolve().parent / "data" / "sample" / "covid19-ct-seg-case"
SAMPLE_NOTE = (
    "Built-in sample: 17 real CT slices of one COVID-19 patient (COVID-19 CT Lung and Infection "
    "Segmentation Dataset, Ma Jun et al., Zenodo 3757476; CC BY-NC-SA; see "
    "lungmtl/data/sample/README.md), a patient the shipped model never trained on."
)

PHANTOM_NOTE = (
    "Built-in default data: a procedurally generated CT-like phantom (Hounsfield units: body, "
    "lungs with vessels, bone, mediastinum; ground-glass and consolidation lesions in some "
    "patients). It is synthetic, contains no patient data, and numbers on it say nothing about "
    "real CT: it only shows that the whole pipeline runs. Use --data DIR for real data."
)


def demo_config(sources: list[str], out: Path, epochs: int, real: bool) -> RunConfig:
    """A small, fast configuration (64 px phantom / 96 px real, width x0.25)."""
    size = 96 if real else 64
    return load_config(
        overrides=[
            # JSON is YAML: quoted, so paths with '#', ': ' or brackets stay paths
            f"data.sources={json.dumps([str(s) for s in sources])}",
            f"data.cache_dir={json.dumps(str(out / 'cache'))}",
            f"data.max_slices={200 if real else 'null'}",
            f"preprocess.size={size}",
            "model.width_mult=0.25",
            "model.cls_hidden=[64, 32]",
            "train.batch_size=16",
            f"train.epochs={epochs}",
            "optim.lr=0.002",
            # Dice alone lets a short run collapse to all-infected maps on slices with tiny
            # lesions; a BCE term beside it keeps the maps calibrated (as in cpu-small.yaml).
            "loss.bce_weight=1.0",
            "augment.expand=4",
            "optim.lr_decay=0.9",
        ]
    )


def demo(
    out: str | Path = "lungmtl-demo",
    data: str | None = None,
    epochs: int | None = None,
    progress: bool = True,
    train: bool = False,
) -> dict:
    """The main job. By default: the shipped model on the bundled real CT sample, returning the
    case's summary. With ``train`` (or ``data``): train, evaluate and report end to end on the
    phantom (or ``data``), returning the test-split metrics. Prints where it all is."""
    if not train and data is None:
        return demo_predict(Path(out))
    out = Path(out)
    t0 = time.perf_counter()
    if data is None:
        print(PHANTOM_NOTE, flush=True)
        src = write_phantom_dataset(out / "phantom", n_patients=16, n_slices=12, size=128, seed=0)
    else:
        print(f"Data: {data}", flush=True)
        src = Path(data)
    cfg = demo_config([str(src)], out, epochs or (8 if data else 12), real=data is not None)
    result = fit(cfg, out / "run", progress=progress, overwrite=True)  # the demo's own folder
    metrics = evaluate(out / "run", out / "eval", split="test", progress=progress, n_boot=500)
    secs = time.perf_counter() - t0
    print(
        f"\nDone in {secs:.0f} s. Test split ({metrics['n_slices']} slices, held-out patients): "
        f"accuracy {fmt(metrics['accuracy'], digits=3)}, AUC {fmt(metrics['auc'], digits=3)}, "
        f"Dice over infected slices {fmt(metrics['dice_infected_mean'], digits=3)}.\n"
        f"  run (config, history, checkpoints): {result.run_dir}\n"
        f"  report: {out / 'eval' / 'report.md'}  (figures: confusion.png, roc.png, overlays.png)"
    )
    return metrics


def demo_predict(out: Path) -> dict:
    """Run the default shipped model on the bundled sample; ``out/<case>/report.html``."""
    from .predict import PredictOptions, predict

    print(SAMPLE_NOTE, flush=True)
    t0 = time.perf_counter()
    results = predict(None, [SAMPLE], out, PredictOptions(threads=None), echo=print)
    r = results[0]
    if not r.ok:
        raise RuntimeError(f"the demo case failed: {r.message}")
    s = r.summary or {}
    print(
        f"\nDone in {time.perf_counter() - t0:.0f} s with shipped model {s.get('model')}: "
        f"{s.get('verdict')} ({s.get('rule')}).\n"
        f"  open {r.out_dir / 'report.html'} in a browser (every slice, the predicted infection, "
        f"P(infected) along z)\n  {s.get('intended_use')}"
    )
    return s

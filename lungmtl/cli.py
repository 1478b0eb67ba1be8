"""The ``lungmtl`` command: argument parsing only; each verb calls one API function."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import InputError


def _models(args) -> int:
    from .models import BACKBONES, count_parameters, create_model

    print(f"{'model':<10} {'attention':<10} {'parameters':>12}   (paper widths 64-128-256-512)")
    for name in sorted(BACKBONES):
        for attention in ("cbam", None):
            n = count_parameters(create_model(name, attention=attention))
            print(f"{name:<10} {attention or 'none':<10} {n:>12,}")
    return 0


def _data_build(args) -> int:
    from .config import load_config
    from .training import build_from_config

    cfg = load_config(args.config, args.set)
    ds = build_from_config(cfg, progress=not args.quiet)
    print(ds.summary().to_string(index=False))
    skipped = Path(ds.cache.root) / "skipped.csv"
    print(f"\ncache: {ds.cache.root}")
    n_skipped = sum(1 for _ in skipped.open()) - 1
    if n_skipped:
        print(f"skipped {n_skipped} bad slice(s): see {skipped}")
    if len(ds.duplicates):
        print(f"WARNING: {ds.duplicates['image_hash'].nunique()} identical images across splits:")
        print(ds.duplicates.to_string(index=False))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        ds.table.to_csv(args.out, index=False)
        print(f"split table: {args.out}")
    return 0


def _data_download(args) -> int:
    from .data.download import download

    path = download(args.name, args.to, base_url=args.base_url)
    print(f"{args.name}: {path}")
    return 0


def _train(args) -> int:
    from .config import load_config
    from .training import fit

    cfg = load_config(args.config, args.set)
    try:
        r = fit(cfg, args.out, resume=args.resume, progress=not args.quiet)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: the last finished epoch is in {args.out}/last.pt "
            f"(continue with --resume)",
            file=sys.stderr,
        )
        return 130
    print(
        f"best epoch {r.best_epoch} ({cfg.train.select_metric} = {r.best_value:.4f}); "
        f"run: {r.run_dir}"
    )
    return 0


def _evaluate(args) -> int:
    from .evaluation import evaluate

    m = evaluate(
        args.checkpoint,
        args.out,
        data=args.data,
        split=args.split,
        device=args.device,
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    keys = ("n_slices", "accuracy", "auc", "sensitivity", "specificity", "dice_infected_mean")
    print(", ".join(f"{k}={m[k]:.4f}" if isinstance(m[k], float) else f"{k}={m[k]}" for k in keys))
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def _compare(args) -> int:
    from .compare import compare

    text = compare(args.evals, alpha=args.alpha)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def _demo(args) -> int:
    from .demo import demo

    demo(args.out, data=args.data, epochs=args.epochs, progress=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lungmtl",
        description="Multi-task COVID-19 infection classification and segmentation on chest CT.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, fn, help_):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
        return sp

    add("models", _models, "list the architectures with their parameter counts")

    data = sub.add_parser("data", help="build training sets, download public datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    b = dsub.add_parser("build", help="pre-process, cache, split by patient, print a summary")
    b.set_defaults(fn=_data_build)
    b.add_argument("--config", help="run config YAML (its data and preprocess sections are used)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    b.add_argument("--out", help="write the split slice table (CSV) here")
    b.add_argument("-q", "--quiet", action="store_true")
    d = dsub.add_parser("download", help="download and verify a public dataset")
    d.set_defaults(fn=_data_download)
    d.add_argument("name")
    d.add_argument("--to", required=True)
    d.add_argument("--base-url", help="mirror to use instead of the official host")
    d.add_argument("-q", "--quiet", action="store_true")

    t = add("train", _train, "train a model from a config")
    t.add_argument("--config", help="run config YAML (configs/*.yaml)")
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.epochs=5",
    )
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")

    e = add("evaluate", _evaluate, "evaluate a checkpoint: metrics.json, report, figures")
    e.add_argument("--checkpoint", required=True, help="run directory or .pt file")
    e.add_argument("--data", action="append", help="data folder(s); default: the run's split")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--out", required=True)
    e.add_argument("--device", default="auto")
    e.add_argument("--batch-size", type=int, default=32)

    c = add("compare", _compare, "paired t-tests and McNemar between evaluations")
    c.add_argument("evals", nargs="+", help="evaluation folders; the first is the baseline")
    c.add_argument("--alpha", type=float, default=0.05)
    c.add_argument("--out", help="also write the Markdown table here")

    m = add("demo", _demo, "train, evaluate and report on the built-in phantom (or --data)")
    m.add_argument("--data", help="a data folder (manifest layout) instead of the phantom")
    m.add_argument("--out", default="lungmtl-demo")
    m.add_argument("--epochs", type=int)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except InputError as e:
        print(f"lungmtl: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

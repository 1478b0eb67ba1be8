"""The ``lungmtl`` command: argument parsing only; each verb calls one API function."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from .errors import InputError

CHECKPOINT_HELP = (
    "run directory, .pt file, or the name of a shipped model (lungmtl models); "
    "default: the shipped model"
)


def _models(args) -> int:
    from .models import MODELS, count_parameters, create_model
    from .models.shipped import DEFAULT, SHIPPED

    print("shipped models (--checkpoint NAME; figures: test split, docs/model-card.md):")
    for m in SHIPPED.values():
        figs = ", ".join(f"{k} {v:.3f}" for k, v in m.figures.items())
        mark = " (default)" if m.name == DEFAULT else ""
        print(f"  {m.name}{mark}: {m.description}")
        if figs:
            print(f"    {figs}")
    if not SHIPPED:
        print("  none")
    print()

    print(f"{'model':<10} {'attention':<10} {'parameters':>12}   (paper widths 64-128-256-512)")
    for name in sorted(n for n, e in MODELS.items() if not e.external):
        for attention in ("cbam", None):
            n = count_parameters(create_model(name, attention=attention))
            print(f"{name:<10} {attention or 'none':<10} {n:>12,}")
    for name, extra in sorted((n, e.extra) for n, e in MODELS.items() if e.external):
        try:
            n = count_parameters(create_model(name, attention=None))
            print(f"{name:<10} {'none':<10} {n:>12,}   (ecosystem baseline)")
        except ImportError:
            hint = f"not installed: pip install 'lungmtl[{extra}]'"
            print(f"{name:<10} {'none':<10} {'-':>12}   ({hint})")
    return 0


def _data_build(args) -> int:
    from .config import load_config
    from .data.build import build_from_config

    cfg = load_config(args.config, args.set + (["data.skip_bad=true"] if args.skip_bad else []))
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

    if args.devices > 1 and "WORLD_SIZE" not in os.environ:
        # Relaunch through PyTorch's own launcher: one process per device, DDP inside fit().
        argv, skip = [], False
        for item in args.argv:  # the same command line without --devices
            if skip or item.startswith("--devices"):
                skip = item == "--devices" and not skip
                continue
            argv.append(item)
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={args.devices}",
            "-m",
            "lungmtl",
            *argv,
        ]
        return subprocess.call(cmd)
    cfg = load_config(args.config, args.set)
    try:
        r = fit(
            cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet
        )
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
        crf=args.crf,
        lung_only=args.lung_only,
    )
    keys = ("n_slices", "accuracy", "auc", "sensitivity", "specificity", "dice_infected_mean")
    print(", ".join(f"{k}={m[k]:.4f}" if isinstance(m[k], float) else f"{k}={m[k]}" for k in keys))
    if m.get("skipped_slices"):
        skipped = Path(args.out) / "skipped.csv"
        print(f"skipped {m['skipped_slices']} unreadable slice(s): see {skipped}")
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def _shard(text: str | None) -> tuple[int, int]:
    """``K/N`` -> (K, N); by default torchrun's RANK/WORLD_SIZE, else the whole list."""
    if text is None:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise InputError("--shard", f"expected K/N such as 0/4, got {text!r}") from None
    return k, n


def _at_least(least: int):
    """An argparse type: an integer >= ``least`` (refused with one line before any work)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < least:
            raise argparse.ArgumentTypeError(f"expected an integer >= {least}, got {text!r}")
        return value

    return parse


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def _check_out(args) -> None:
    """Refuse an ``--out`` of the wrong kind up front: an existing file where a verb writes a
    folder, an existing folder where it writes one file."""
    out = getattr(args, "out", None)
    if not out:
        return
    p = Path(out)
    if args.fn in (_data_build, _export, _compare):
        if p.is_dir():
            raise InputError(p, "--out names an existing folder; give a file name")
    elif p.exists() and not p.is_dir():
        raise InputError(p, "--out names an existing file; give a folder (new or existing)")


def _predict(args) -> int:
    from .predict import PredictOptions, predict

    opts = PredictOptions(
        device=args.device,
        batch_size=args.batch_size,
        crf=args.crf,
        gradcam=args.gradcam,
        allow_gaps=args.allow_gaps,
        threads=args.threads,
        shard=_shard(args.shard),
        resume=args.resume,
        engine=args.engine,
    )
    shown: list[str] = []

    def echo(line: str) -> None:
        print(line, flush=True)
        shown.append(line)

    try:
        results = predict(args.checkpoint, args.inputs, args.out, opts, echo=echo)
    except KeyboardInterrupt:
        # Each case's folder is written whole or not at all, so what is listed is usable.
        done = [line.split()[1].rstrip(":") for line in shown if not line.startswith("FAILED")]
        print(
            f"\ninterrupted: {len(done)} case(s) finished before the stop"
            f"{': ' + ', '.join(done) if done else ''}; their outputs in {args.out} are whole "
            "(continue with --resume)",
            file=sys.stderr,
        )
        return 130
    failed = sum(not r.ok for r in results)
    before = sum(r.ok and r.message == "done before" for r in results)
    again = f" ({before} finished before, not redone)" if before else ""
    print(f"{len(results) - failed} case(s) ok{again}, {failed} failed; outputs in {args.out}")
    return 1 if failed else 0


def _export(args) -> int:
    from .export import export, verify

    path = export(args.checkpoint, args.out, args.format)
    diff = verify(args.checkpoint, path)
    print(f"{args.format}: {path} (max |difference| from PyTorch: {diff:.2e})")
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

    demo(args.out, data=args.data, epochs=args.epochs, progress=not args.quiet, train=args.train)
    return 0


def _experiment(args) -> int:
    from .experiments.run import run_experiment

    run_experiment(
        args.experiment,
        args.out,
        extra_set=args.set,
        base=args.base,
        leave_one_source_out=True if args.leave_one_source_out else None,
        only=args.only,
        reuse=args.reuse,
        dry_run=args.dry_run,
        progress=not args.quiet,
    )
    return 0


def _shortcut(args) -> int:
    from .shortcut import shortcut_report

    report = shortcut_report(
        args.data,
        args.out,
        eval_dir=args.eval,
        config=args.config,
        overrides=args.set,
        progress=not args.quiet,
    )
    print(report)
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
    b.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip unreadable slices and report them instead of stopping",
    )
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
    t.add_argument(
        "--overwrite", action="store_true", help="replace the run already in OUT (else refused)"
    )
    t.add_argument(
        "--devices",
        type=_at_least(1),
        default=1,
        help="processes (GPUs, or CPU gloo workers) via torchrun + DDP",
    )

    e = add("evaluate", _evaluate, "evaluate a checkpoint: metrics.json, report, figures")
    e.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    e.add_argument("--data", action="append", help="data folder(s); default: the run's split")
    e.add_argument("--split", default="test", choices=["train", "val", "test"])
    e.add_argument("--out", required=True)
    e.add_argument("--device", default="auto")
    e.add_argument("--batch-size", type=_at_least(1), default=32)
    e.add_argument("--crf", action="store_true", help="CRF post-processing of the masks")
    e.add_argument(
        "--lung-only",
        action="store_true",
        help="zero the infection map outside the (derived) lung mask",
    )

    r = add("predict", _predict, "predict scans/slices: masks, verdicts, burden, report.html")
    r.add_argument("inputs", nargs="+", metavar="INPUT", help="DICOM folder/NIfTI/slice/manifest")
    r.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    r.add_argument("--out", required=True, help="output folder (one sub-folder per case)")
    r.add_argument("--device", default="auto")
    r.add_argument("--batch-size", type=_at_least(1), default=16)
    r.add_argument("--crf", action="store_true", help="CRF post-processing of the masks")
    r.add_argument(
        "--gradcam", type=_at_least(0), default=3, help="Grad-CAM slices per case (0 = none)"
    )
    r.add_argument(
        "--engine",
        choices=["torch", "onnx"],
        default="torch",
        help="onnx: the model stage through ONNX Runtime on the CPU (about 1.5x faster there)",
    )
    r.add_argument("--allow-gaps", action="store_true", help="accept series with missing slices")
    r.add_argument("--threads", type=_at_least(1), help="CPU threads for torch")
    r.add_argument(
        "--shard",
        metavar="K/N",
        help="predict every N-th input from the K-th (torchrun: RANK/WORLD_SIZE)",
    )
    r.add_argument("--resume", action="store_true", help="skip cases already finished in OUT")

    x = add("export", _export, "export a checkpoint to ONNX or TorchScript (checked vs PyTorch)")
    x.add_argument("--checkpoint", required=True, help="run directory or .pt file")
    x.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    x.add_argument("--out", required=True, help="file to write")

    c = add("compare", _compare, "paired t-tests and McNemar between evaluations")
    c.add_argument("evals", nargs="+", help="evaluation folders; the first is the baseline")
    c.add_argument("--alpha", type=_probability, default=0.05)
    c.add_argument("--out", help="also write the Markdown table here")

    m = add(
        "demo",
        _demo,
        "the shipped model on a bundled real CT sample (report.html); --train: train, evaluate "
        "and report on the built-in phantom (or --data)",
    )
    m.add_argument("--train", action="store_true", help="train and evaluate on the phantom instead")
    m.add_argument("--data", help="train on this data folder (manifest layout); implies --train")
    m.add_argument("--out", default="lungmtl-demo")
    m.add_argument("--epochs", type=_at_least(1))

    g = add("experiment", _experiment, "a grid of training runs + evaluations, one results table")
    g.add_argument("experiment", help="experiment YAML (configs/experiments/*.yaml)")
    g.add_argument("--out", required=True, help="experiment folder (runs/, results.csv/.md)")
    g.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a base config key in every run (a grid or run value for the same key "
        "wins), e.g. --set train.device=cuda",
    )
    g.add_argument(
        "--leave-one-source-out",
        action="store_true",
        help="train on all sources but one, test on the one left out (each in turn)",
    )
    g.add_argument(
        "--only",
        action="append",
        metavar="PATTERN",
        help="run only the runs whose name matches (shell pattern; repeatable)",
    )
    g.add_argument(
        "--reuse",
        action="append",
        metavar="EXP_DIR",
        help="copy finished runs with an identical config from another experiment folder",
    )
    g.add_argument("--base", help="run config replacing the experiment's base (full scale)")
    g.add_argument("--dry-run", action="store_true", help="list the runs and their status")

    s = add("shortcut", _shortcut, "can the source be told from the image? within-source accuracy")
    s.add_argument("--data", action="append", help="data folder(s) whose sources to tell apart")
    s.add_argument("--out", required=True, help="folder for shortcut.md and shortcut.json")
    s.add_argument("--eval", help="an evaluation folder (predictions.csv) to check per source")
    s.add_argument("--config", help="run config whose preprocess section to use")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        _check_out(args)
        return args.fn(args)
    except InputError as e:
        print(f"lungmtl: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

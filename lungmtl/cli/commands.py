"""The verbs of the ``lungmtl`` command: each calls one API function and prints its outcome."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from ..errors import InputError

CHECKPOINT_HELP = (
    "run directory, .pt file, or the name of a shipped model (lungmtl models); "
    "default: the shipped model"
)


CALIBRATION_HELP = (
    "a site calibration written by `lungmtl calibrate` for this checkpoint: P(infected), the "
    "slice threshold and the scan rule come from it"
)


def _models(args) -> int:
    from ..models.catalogue import describe

    print(describe())
    return 0


def _data_build(args) -> int:
    from ..config import load_config
    from ..data.build import build_from_config

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


def _data_export(args) -> int:
    from ..data.nnunet import assign_split, export_nnunet
    from ..data.sources import load_sources
    from ..models import checkpoint
    from ..models.shipped import default_checkpoint

    path = checkpoint.resolve(args.checkpoint or default_checkpoint())
    meta = checkpoint.read(path)
    sources = args.data or meta["run_config"]["data"]["sources"]
    if not args.data and meta.get("split_record") is not None and os.environ.get("LUNGMTL_DATA"):
        sources = [os.environ["LUNGMTL_DATA"]]  # a shipped model's data, where it is here
    table = assign_split(load_sources(sources), checkpoint.split_record(path, meta))
    window = tuple(meta["run_config"]["preprocess"]["window"])
    ds = export_nnunet(table, args.out, dataset_id=args.dataset_id, name=args.name, window=window)
    root = Path(args.out) / f"Dataset{args.dataset_id:03d}_{args.name}"
    counts = table["split"].value_counts().to_dict()
    print(f"{root}: {ds['numTraining']} training cases; split of {path.name}: {counts}")
    return 0


def _data_download(args) -> int:
    from ..data.download import download

    path = download(args.name, args.to, base_url=args.base_url)
    print(f"{args.name}: {path}")
    return 0


def _train(args) -> int:
    from ..config import load_config
    from ..training import fit

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
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone validated and reports
        print(
            f"best epoch {r.best_epoch} ({cfg.train.select_metric} = {r.best_value:.4f}); "
            f"run: {r.run_dir}"
        )
    return 0


def _evaluate(args) -> int:
    from ..evaluation import evaluate

    if args.predictions or args.truth:
        return _evaluate_predictions(args)
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
        calibration=args.calibration,
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


def _predict(args) -> int:
    from ..predict import PredictOptions, predict

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
        calibration=args.calibration,
        dicom_seg=args.dicom_seg,
        assume_chest=args.assume_chest,
        spacing=_spacing(args.spacing),
        series=args.series,
    )
    shown: list[str] = []

    def echo(line: str) -> None:
        print(line, flush=True)
        shown.append(line)

    def terminated(signum, frame):  # SLURM time limits, docker stop: stop as Ctrl-C does,
        raise KeyboardInterrupt  # so finished cases stay whole and a zip's files are removed

    previous = signal.signal(signal.SIGTERM, terminated)
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
    finally:
        signal.signal(signal.SIGTERM, previous)
    failed = sum(not r.ok for r in results)
    before = sum(r.ok and r.message == "done before" for r in results)
    again = f" ({before} finished before, not redone)" if before else ""
    print(f"{len(results) - failed} case(s) ok{again}, {failed} failed; outputs in {args.out}")
    return 1 if failed else 0


def _evaluate_predictions(args) -> int:
    from ..evaluation.foreign import evaluate_predictions

    if not (args.predictions and args.truth):
        raise InputError("--predictions", "give both --predictions DIR and --truth EXPORT_DIR")
    unused = [
        f"--{k.replace('_', '-')}"
        for k in ("calibration", "checkpoint", "data")
        if getattr(args, k)
    ]
    if unused or args.crf or args.lung_only:
        unused += ["--crf"] * args.crf + ["--lung-only"] * args.lung_only
        raise InputError(
            "--predictions", f"scores masks made elsewhere: {', '.join(unused)} do(es) not apply"
        )
    m = evaluate_predictions(args.predictions, args.truth, args.out, split=args.split)
    v = m["per_volume"]
    print(
        f"n_slices={m['n_slices']}, dice_mean={m['dice_mean']:.4f}, "
        f"dice_infected_mean={m['dice_infected_mean']:.4f}, auc={m['auc']}, "
        f"per-scan dice={v.get('dice_mean')} (n={v.get('n_volumes')})"
    )
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def _calibrate(args) -> int:
    from ..calibration.run import calibrate
    from ..calibration.thresholds import Target

    target = Target(specificity=args.target_specificity, sensitivity=args.target_sensitivity)
    cal = calibrate(
        args.checkpoint,
        args.out,
        data=args.data,
        split=args.split,
        target=target,
        n_boot=args.n_boot,
        device=args.device,
        batch_size=args.batch_size,
        progress=not args.quiet,
        seed=args.seed,
        kind=args.kind,
    )
    print(format_calibration(cal))
    print(f"site calibration: {args.out} (use: lungmtl predict --calibration {args.out} ...)")
    return 0


def format_calibration(cal) -> str:
    """The fitted operating point with its bootstrap intervals, for the terminal."""
    f, ci = cal.fitted, cal.fitted.get("ci95") or {}

    def iv(key: str) -> str:
        v = ci.get(key)
        return f" [{v[0]:.3f}, {v[1]:.3f}]" if v else ""

    def rate(key: str, ci_key: str) -> str:
        return "n/a" if f.get(key) is None else f"{f[key]:.3f}{iv(ci_key)}"

    return "\n".join(
        [
            f"fitted on {f['data']}: {f['n_patients']} patients, {f['n_healthy_slices']} healthy "
            f"and {f['n_infected_slices']} infected slices used (of {f['n_slices']})",
            f"calibration ({f.get('kind')}): temperature {cal.temperature:.3f}, "
            f"slope {cal.slope:.3f}{iv('slope')}, "
            f"intercept {cal.intercept:+.3f}{iv('intercept')}",
            f"operating point ({f['target']}): P >= {cal.threshold:.3f}{iv('threshold')}",
            f"  specificity {rate('specificity', 'spec')}, "
            f"sensitivity {rate('sensitivity', 'sens')}"
            f" (on these data; 95% intervals over {ci.get('n_boot', 0)} patient resamples)",
            f"scan rule: {cal.scan_rule.describe()} ({f.get('scan_rule')})",
        ]
    )


def _spacing(text: str | None) -> tuple[float, float, float] | None:
    if text is None:
        return None
    try:
        z, y, x = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError("--spacing", f"expected three numbers z,y,x in mm, got {text!r}") from None
    return z, y, x


def _export(args) -> int:
    from ..export import export, verify

    path = export(args.checkpoint, args.out, args.format)
    diff = verify(args.checkpoint, path)
    print(f"{args.format}: {path} (max |difference| from PyTorch: {diff:.2e})")
    return 0


def _compare(args) -> int:
    from ..compare import compare

    text = compare(args.evals, alpha=args.alpha)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def _demo(args) -> int:
    from ..demo import demo

    demo(args.out, data=args.data, epochs=args.epochs, progress=not args.quiet, train=args.train)
    return 0


def _experiment(args) -> int:
    from ..experiments.run import run_experiment

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
    from ..shortcut import shortcut_report

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

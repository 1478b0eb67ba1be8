"""The ``lungmtl`` argument parser: verbs, options, and values refused before any work starts."""

from __future__ import annotations

import argparse

from . import commands
from .commands import CALIBRATION_HELP, CHECKPOINT_HELP


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

    add("models", commands._models, "list the architectures with their parameter counts")

    data = sub.add_parser("data", help="build training sets, download public datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    b = dsub.add_parser("build", help="pre-process, cache, split by patient, print a summary")
    b.set_defaults(fn=commands._data_build)
    b.add_argument("--config", help="run config YAML (its data and preprocess sections are used)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    b.add_argument("--out", help="write the split slice table (CSV) here")
    b.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip unreadable slices and report them instead of stopping",
    )
    b.add_argument("-q", "--quiet", action="store_true")
    x = dsub.add_parser(
        "export",
        help="write the data as an nnU-Net v2 raw dataset on a checkpoint's patient split",
    )
    x.set_defaults(fn=commands._data_export)
    x.add_argument("--format", required=True, choices=["nnunet"])
    x.add_argument("--out", required=True, help="folder for DatasetNNN_NAME")
    x.add_argument("--checkpoint", help="whose patient split to use; " + CHECKPOINT_HELP)
    x.add_argument("--data", action="append", help="data folder(s); default: the run's sources")
    x.add_argument("--dataset-id", type=_at_least(1), default=501)
    x.add_argument("--name", default="LungMTL")
    x.add_argument("-q", "--quiet", action="store_true")
    d = dsub.add_parser("download", help="download and verify a public dataset")
    d.set_defaults(fn=commands._data_download)
    d.add_argument("name")
    d.add_argument("--to", required=True)
    d.add_argument("--base-url", help="mirror to use instead of the official host")
    d.add_argument("-q", "--quiet", action="store_true")

    t = add("train", commands._train, "train a model from a config")
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

    e = add("evaluate", commands._evaluate, "evaluate a checkpoint: metrics.json, report, figures")
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
    e.add_argument("--calibration", metavar="SITE_JSON", help=CALIBRATION_HELP)
    e.add_argument(
        "--predictions",
        metavar="DIR",
        help="score another model's masks in DIR (nnU-Net output, ...) against --truth",
    )
    e.add_argument(
        "--truth",
        metavar="EXPORT_DIR",
        help="with --predictions: the DatasetNNN_NAME folder of `lungmtl data export`",
    )

    k = add(
        "calibrate",
        commands._calibrate,
        "fit P(infected) and the operating point to a site's own labelled scans (site.json)",
    )
    k.add_argument("--checkpoint", help=CHECKPOINT_HELP)
    k.add_argument(
        "--data",
        action="append",
        help="labelled local data (any layout lungmtl reads); default: the run's --split",
    )
    k.add_argument("--split", default="val", choices=["train", "val", "test"])
    k.add_argument("--out", required=True, help="the site calibration to write (.json)")
    goal = k.add_mutually_exclusive_group()
    goal.add_argument(
        "--target-specificity",
        type=_probability,
        help="slice threshold calling this share of healthy slices healthy",
    )
    goal.add_argument(
        "--target-sensitivity",
        type=_probability,
        help="slice threshold calling this share of infected slices infected",
    )
    k.add_argument(
        "--kind",
        choices=["auto", "platt", "temperature", "none"],
        default="auto",
        help="the recalibration of P: auto = the one that predicts held-out patients best",
    )
    k.add_argument("--n-boot", type=_at_least(0), default=1000, help="bootstrap replicates")
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--device", default="auto")
    k.add_argument("--batch-size", type=_at_least(1), default=32)

    r = add(
        "predict", commands._predict, "predict scans/slices: masks, verdicts, burden, report.html"
    )
    r.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="DICOM series/study folder or .zip, NIfTI, slice, folder of slice images, manifest",
    )
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
    r.add_argument("--calibration", metavar="SITE_JSON", help=CALIBRATION_HELP)
    r.add_argument(
        "--spacing",
        metavar="Z,Y,X",
        help="slice spacing and pixel size in mm for inputs that state none (image folders)",
    )
    r.add_argument(
        "--series",
        default="all",
        metavar="all|one|UID|NUMBER",
        help="series of a DICOM study folder, CD or zip: all (each its own case), one per "
        "study (lung kernel, then thinnest slices), or the series of that UID or number",
    )
    r.add_argument(
        "--assume-chest",
        action="store_true",
        help="the inputs are chest CT: predict a slice where no lung is found instead of "
        "refusing it (said in summary.json)",
    )
    r.add_argument(
        "--no-dicom-seg",
        dest="dicom_seg",
        action="store_false",
        help="do not write seg.dcm (DICOM SEG) beside a DICOM series input",
    )

    x = add(
        "export",
        commands._export,
        "export a checkpoint to ONNX or TorchScript (checked vs PyTorch)",
    )
    x.add_argument("--checkpoint", required=True, help="run directory or .pt file")
    x.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    x.add_argument("--out", required=True, help="file to write")

    c = add("compare", commands._compare, "paired t-tests and McNemar between evaluations")
    c.add_argument("evals", nargs="+", help="evaluation folders; the first is the baseline")
    c.add_argument("--alpha", type=_probability, default=0.05)
    c.add_argument("--out", help="also write the Markdown table here")

    m = add(
        "demo",
        commands._demo,
        "the shipped model on a bundled real CT sample (report.html); --train: train, evaluate "
        "and report on the built-in phantom (or --data)",
    )
    m.add_argument("--train", action="store_true", help="train and evaluate on the phantom instead")
    m.add_argument("--data", help="train on this data folder (manifest layout); implies --train")
    m.add_argument("--out", default="lungmtl-demo")
    m.add_argument("--epochs", type=_at_least(1))

    g = add(
        "experiment",
        commands._experiment,
        "a grid of training runs + evaluations, one results table",
    )
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

    s = add(
        "shortcut",
        commands._shortcut,
        "can the source be told from the image? within-source accuracy",
    )
    s.add_argument("--data", action="append", help="data folder(s) whose sources to tell apart")
    s.add_argument("--out", required=True, help="folder for shortcut.md and shortcut.json")
    s.add_argument("--eval", help="an evaluation folder (predictions.csv) to check per source")
    s.add_argument("--config", help="run config whose preprocess section to use")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    return p

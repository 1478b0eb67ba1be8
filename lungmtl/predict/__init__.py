"""predict(): scans and slices in, infection masks, verdicts, burden and a report out.

Per case the steps are timed (read, preprocess, model, postprocess, write) and written under
``OUT/<case>/``: ``mask.nii.gz`` (the input's geometry), ``slices.csv``, ``summary.json``,
``overlays.png``, ``thumbnail.jpg`` and ``report.html`` (a self-contained viewer of every
slice); ``OUT/index.html`` lists the cases of a run, the failed ones with their reasons.

Scan verdict: by default infected when at least ``min_consecutive`` consecutive slices have
P(infected) >= the threshold (:mod:`lungmtl.scan_rule`). Bad input fails its own case with a
message naming the file; any other error of one case (out of memory, a full disk) also fails only
that case; Ctrl-C stops the run (the finished cases stay whole).

Modules: :mod:`.types` (options, cases), :mod:`.engine` (the model), :mod:`.inputs` (cases from
the inputs), :mod:`.case` (one case's computation), :mod:`.outputs` (its files), :mod:`.report`
(``report.html``, ``index.html``).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..errors import InputError
from ..models.shipped import default_checkpoint
from . import report
from .case import postprocess_case, preprocess_case
from .engine import Predictor, attach_onnx, load_predictor, run_model, use_site_calibration
from .inputs import failure_message, finished_summary, iter_cases, with_spacing
from .outputs import StageClock, write_case
from .types import DONE_BEFORE, ENGINES, Case, CaseResult, PredictOptions

__all__ = ["CaseResult", "PredictOptions", "Predictor", "load_predictor", "predict"]

DEFAULT_OPTIONS = PredictOptions()  # frozen: safe as a shared default


def predict_case(predictor: Predictor, case: Case, out_dir: Path, opts: PredictOptions) -> dict:
    """Predict one case and write its outputs into ``out_dir``; returns the summary dict.

    Raises:
        InputError: for a scan where no slice shows lung (not a chest CT, or the wrong region).
    """
    clock = StageClock(case.read_s)
    # From here on the folder's old results no longer vouch for this case (see ``resume``).
    (out_dir / "summary.json").unlink(missing_ok=True)
    t = time.perf_counter()
    pre = preprocess_case(case, predictor.preprocess, opts.assume_chest)
    t = clock.lap("preprocess", t)
    p_model, seg_prob = run_model(predictor, pre.images, opts.batch_size)
    t = clock.lap("model", t)
    outcome = postprocess_case(predictor, case, opts, pre, p_model, seg_prob)
    t = clock.lap("postprocess", t)
    return write_case(predictor, case, out_dir, opts, pre, outcome, clock, t)


def predict(
    checkpoint_path: str | Path | None,
    inputs: Sequence[str | Path],
    out: str | Path,
    options: PredictOptions = DEFAULT_OPTIONS,
    *,
    predictor: Predictor | None = None,
    echo: Callable[[str], object] | None = None,
) -> list[CaseResult]:
    """Predict every input; failures are reported per case and do not stop the others.

    Args:
        checkpoint_path: run directory, ``.pt`` or shipped model name; None = the default
            shipped model (ignored when ``predictor`` is given).
        inputs: DICOM series folders, manifest folders, NIfTI/.npy volumes, slice files.
        out: output folder; one sub-folder per case.
        options: :class:`PredictOptions`.
        predictor: an already loaded model (tests, repeated calls).
        echo: called with each case's summary line as soon as it is done (e.g. ``print``).

    Returns:
        One :class:`CaseResult` per case, in input order.
    """
    if options.threads:
        torch.set_num_threads(options.threads)
    k, n = options.shard
    if not 0 <= k < n:
        raise InputError("--shard", f"expected k/n with 0 <= k < n, got {k}/{n}")
    if options.engine not in ENGINES:
        raise InputError("--engine", f"unknown engine {options.engine!r}; valid: {ENGINES}")
    if checkpoint_path is None and predictor is None:
        checkpoint_path = default_checkpoint()
    predictor = predictor or load_predictor(checkpoint_path, options.device)
    if options.calibration:
        predictor = use_site_calibration(predictor, options.calibration)
    if options.engine != "onnx":
        return _predict_all(predictor, inputs, Path(out), options, echo)
    with tempfile.TemporaryDirectory(prefix="lungmtl-onnx-") as tmp:
        predictor = attach_onnx(predictor, checkpoint_path, Path(tmp))
        return _predict_all(predictor, inputs, Path(out), options, echo)


def _predict_all(
    predictor: Predictor,
    inputs: Sequence[str | Path],
    out: Path,
    options: PredictOptions,
    echo: Callable[[str], object] | None,
) -> list[CaseResult]:
    results: list[CaseResult] = []

    same = _same_run(predictor)

    def skip(name: str, source: Path) -> CaseResult | None:  # checked before reading the input
        summary = finished_summary(out / name, name, source, same)
        if summary is None:
            return None
        return CaseResult(name, str(source), True, DONE_BEFORE, out / name, summary)

    done = skip if options.resume else None
    cases = iter_cases(list(inputs), options.allow_gaps, options.shard, done, options.series)
    for item in cases:
        if isinstance(item, CaseResult):
            result = item
        else:
            item = with_spacing(item, options.spacing)
            result = _predict_one(predictor, item, out / item.name, options, same)
        results.append(result)
        if echo:
            echo(result.line())
    if options.report:  # OUT/index.html: every case of the batch, failed ones with reasons
        report.write_index(out, results)
    return results


def _same_run(predictor: Predictor) -> dict:
    """What a finished case must share with this run to be skipped by ``resume``."""
    return {"checkpoint": predictor.checkpoint, "calibration": predictor.calibration.summary()}


def _predict_one(
    predictor: Predictor, case: Case, case_dir: Path, options, same: dict | None = None
) -> CaseResult:
    source = str(case.image.path)
    uid = case.source.get("series_uid")
    done = finished_summary(case_dir, case.name, source, same, uid) if options.resume else None
    if done is not None:
        return CaseResult(case.name, source, True, DONE_BEFORE, case_dir, done)
    try:
        summary = predict_case(predictor, case, case_dir, options)
        return CaseResult(case.name, source, True, "ok", case_dir, summary)
    except InputError as e:
        return CaseResult(case.name, source, False, str(e))
    except Exception as e:  # out of memory, disk full, ...: this case
        return CaseResult(case.name, source, False, failure_message(source, e))

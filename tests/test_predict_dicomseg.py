"""seg.dcm: the DICOM Segmentation that predict writes beside a DICOM series input.

The check is independent of lungmtl's own orientation code: every voxel of segment 1 is placed
in the world by the DICOM geometry of the source file its frame references (position,
orientation, pixel spacing), every voxel of mask.nii.gz by the NIfTI affine, and the two sets of
points must be the same.
"""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pydicom
import pytest
from data_helpers import write_dicom
from predict_helpers import FAST, bright_predictor

from lungmtl.data.phantom import make_phantom_volume
from lungmtl.predict import predict

hd = pytest.importorskip("highdicom")
SEG_OPTS = FAST.__class__(**{**FAST.__dict__, "dicom_seg": True})


def write_series(folder, hu, *, iop=(1, 0, 0, 0, 1, 0), step=(0.0, 0.0, 2.5), order=None,
                 skip=(), series="1.2.826.0.1.3680043.99.1"):  # fmt: skip
    """A CT series of ``hu`` (Z, H, W): slice k at origin + k * ``step`` (LPS mm), files written
    in ``order`` (file name and InstanceNumber follow it), slices in ``skip`` left out."""
    order = list(range(len(hu))) if order is None else order
    for n, k in enumerate(order):
        if k in skip:
            continue
        write_dicom(
            folder / f"f{n:03d}.dcm",
            np.clip(hu[k] + 1024, 0, 4000),
            z=0.0,
            series=series,
            instance=n + 1,
            iop=iop,
            spacing=(0.8, 0.7),
            ImagePositionPatient=[-90.0 + k * step[0], -100.0 + k * step[1], 10.0 + k * step[2]],
            FrameOfReferenceUID="1.2.826.0.1.3680043.99.2",
            StudyInstanceUID="1.2.826.0.1.3680043.99.3",
        )


def seg_points(seg_path, folder) -> np.ndarray:
    """RAS+ mm of every segment-1 pixel, placed by its source file's DICOM geometry."""
    seg = hd.seg.segread(seg_path)
    sources = {}
    for f in folder.iterdir():
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        sources[ds.SOPInstanceUID] = ds
    uids = list(sources)
    frames = seg.get_pixels_by_source_instance(uids, segment_numbers=[1])[..., 0]
    points = []
    for uid, frame in zip(uids, frames, strict=True):
        ds = sources[uid]
        r, c = np.nonzero(frame)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        ps = np.asarray(ds.PixelSpacing, float)
        lps = (
            np.asarray(ds.ImagePositionPatient, float)
            + np.outer(c * ps[1], iop[:3])
            + np.outer(r * ps[0], iop[3:])
        )
        points.append(lps * [-1, -1, 1])
    return np.concatenate(points)


def nifti_points(path) -> np.ndarray:
    img = nib.load(path)
    idx = np.argwhere(np.asarray(img.dataobj) > 0)
    return nib.affines.apply_affine(img.affine, idx)


def same_points(a: np.ndarray, b: np.ndarray) -> bool:
    def key(p: np.ndarray) -> np.ndarray:
        q = np.round(p, 2)
        return q[np.lexsort(q.T[::-1])]

    return a.shape == b.shape and np.allclose(key(a), key(b), atol=0.011)


def check_seg(out, folder, n_frames_expected):
    seg = hd.seg.segread(out / "seg.dcm")
    assert seg.Modality == "SEG" and seg.number_of_segments == 2
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert labels == ["COVID-19 infection", "Lungs (derived)"]
    src = [pydicom.dcmread(f, stop_before_pixels=True) for f in folder.iterdir()]
    assert seg.FrameOfReferenceUID == src[0].FrameOfReferenceUID
    assert seg.StudyInstanceUID == src[0].StudyInstanceUID
    ref = seg.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == src[0].SeriesInstanceUID
    referenced = {i.ReferencedSOPInstanceUID for i in ref.ReferencedInstanceSequence}
    assert referenced == {d.SOPInstanceUID for d in src}
    assert len(src) == n_frames_expected
    pts = seg_points(out / "seg.dcm", folder)
    assert len(pts) > 100
    assert same_points(pts, nifti_points(out / "mask.nii.gz"))
    lung = seg.get_pixels_by_source_instance([d.SOPInstanceUID for d in src], segment_numbers=[2])
    assert lung.any()


@pytest.mark.parametrize(
    ("name", "iop", "shuffle"),
    [
        ("axial", (1, 0, 0, 0, 1, 0), False),
        ("axial, files in shuffled order", (1, 0, 0, 0, 1, 0), True),
        ("rotated 180 degrees in plane", (-1, 0, 0, 0, -1, 0), False),
    ],
)
def test_seg_frames_lie_where_the_nifti_mask_does(tmp_path, name, iop, shuffle):
    hu = make_phantom_volume(5, 8, 64).hu
    order = list(np.random.default_rng(0).permutation(8)) if shuffle else None
    write_series(tmp_path / "ct", hu, iop=iop, order=order)
    r = predict(None, [tmp_path / "ct"], tmp_path / "out", SEG_OPTS, predictor=bright_predictor())
    assert r[0].ok, r[0].message
    assert r[0].summary["dicom_seg"] == "seg.dcm"
    check_seg(r[0].out_dir, tmp_path / "ct", 8)


def test_a_gantry_tilted_series_is_segmented_on_its_own_tilted_frames(tmp_path):
    tilt = math.radians(15)
    iop = (1, 0, 0, 0, math.cos(tilt), math.sin(tilt))
    hu = make_phantom_volume(6, 8, 64).hu
    write_series(tmp_path / "ct", hu, iop=iop, step=(0.0, 0.0, 2.5))
    r = predict(None, [tmp_path / "ct"], tmp_path / "out", SEG_OPTS, predictor=bright_predictor())
    assert r[0].ok, r[0].message
    check_seg(r[0].out_dir, tmp_path / "ct", 8)


def test_missing_slices_are_refused_or_with_allow_gaps_each_frame_keeps_its_slice(tmp_path):
    hu = make_phantom_volume(7, 10, 64).hu
    write_series(tmp_path / "ct", hu, skip=(4, 5))
    refused = predict(None, [tmp_path / "ct"], tmp_path / "o1", SEG_OPTS,
                      predictor=bright_predictor())  # fmt: skip
    assert not refused[0].ok and "missing slices" in refused[0].message
    assert not (tmp_path / "o1" / "ct" / "seg.dcm").exists()
    gaps = SEG_OPTS.__class__(**{**SEG_OPTS.__dict__, "allow_gaps": True})
    r = predict(None, [tmp_path / "ct"], tmp_path / "o2", gaps, predictor=bright_predictor())
    assert r[0].ok, r[0].message
    seg = hd.seg.segread(r[0].out_dir / "seg.dcm")
    src = sorted(
        (pydicom.dcmread(f, stop_before_pixels=True) for f in (tmp_path / "ct").iterdir()),
        key=lambda d: float(d.ImagePositionPatient[2]),
    )
    frames = seg.get_pixels_by_source_instance([d.SOPInstanceUID for d in src], segment_numbers=[1])
    mask = np.asarray(nib.load(r[0].out_dir / "mask.nii.gz").dataobj)  # canonical: z first
    assert frames.shape[0] == 8 and mask.shape[0] == 8
    # Slice k of the NIfTI (inferior to superior) and frame k hold the same pixel count.
    counts = [int(f.sum()) for f in frames[..., 0]]
    assert counts == [int(mask[k].sum()) for k in range(8)] and sum(counts) > 0


def test_no_seg_for_non_dicom_inputs_or_when_switched_off(tmp_path):
    hu = make_phantom_volume(8, 6, 64).hu
    write_series(tmp_path / "ct", hu)
    off = SEG_OPTS.__class__(**{**SEG_OPTS.__dict__, "dicom_seg": False})
    r = predict(None, [tmp_path / "ct"], tmp_path / "out", off, predictor=bright_predictor())
    assert r[0].ok and not (r[0].out_dir / "seg.dcm").exists()
    assert "dicom_seg" not in r[0].summary
    nib.save(nib.Nifti1Image(hu.transpose(2, 1, 0), np.eye(4)), tmp_path / "v.nii.gz")
    r = predict(None, [tmp_path / "v.nii.gz"], tmp_path / "o2", SEG_OPTS,
                predictor=bright_predictor())  # fmt: skip
    assert r[0].ok and not (r[0].out_dir / "seg.dcm").exists()


@pytest.mark.slow
def test_a_real_series_gets_a_seg_that_highdicom_reads_back(real_data, tmp_path):
    folder = real_data / "covid-ct-md" / "normal001"
    r = predict(None, [folder], tmp_path / "out", SEG_OPTS, predictor=bright_predictor(128))
    assert r[0].ok, r[0].message
    check_seg(r[0].out_dir, folder, 154)

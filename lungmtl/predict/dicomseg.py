"""``seg.dcm``: the predicted infection and the derived lungs as a DICOM Segmentation instance
(highdicom), on the source series' own frames, so that PACS viewers, OHIF and 3D Slicer lay it
over the series it was predicted from."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from ..data.image import ImageData

#: Type 2 attributes of the patient and study modules a SEG copies from its source; anonymised
#: exports often drop them, so they are added (empty) to the copies handed to highdicom.
TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "AccessionNumber",
)
SERIES_NUMBER = 9901


def _segments(model_name: str, version: str):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"lungmtl {model_name}"[:64],
        version=version,
        family=codes.cid7162.ArtificialIntelligence,
    )
    auto = hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
    return [
        hd.seg.SegmentDescription(
            segment_number=1,
            segment_label="COVID-19 infection",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Lesion,
            algorithm_type=auto,
            algorithm_identification=algorithm,
            anatomic_regions=[codes.SCT.Lung],
        ),
        hd.seg.SegmentDescription(
            segment_number=2,
            segment_label="Lungs (derived)",
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=codes.SCT.Lung,
            algorithm_type=auto,
            algorithm_identification=algorithm,
        ),
    ]


def write_dicom_seg(
    mask: np.ndarray, lung: np.ndarray, image: ImageData, path: Path, model_name: str
) -> Path:
    """Write ``mask`` (infection, segment 1) and ``lung`` (segment 2), both (Z, H, W) in the
    canonical view of ``image``, as a binary DICOM SEG referencing ``image``'s DICOM files.

    Raises:
        ValueError: ``image`` was not read from a DICOM series, or highdicom refuses its
            headers (the message says which attribute).
    """
    import highdicom as hd

    from .. import __version__

    if image.dicom is None or image.affine is None:
        raise ValueError("the input is not a DICOM series")
    src = image.dicom
    frames = np.stack(
        [src.to_stored(mask.astype(bool), image.affine), src.to_stored(lung, image.affine)],
        axis=-1,
    )
    headers = []
    for ds in src.headers:
        ds = copy.copy(ds)
        for key in TYPE2:
            if key not in ds:
                setattr(ds, key, "")
        headers.append(ds)
    seg = hd.seg.Segmentation(
        source_images=headers,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segments(model_name, __version__),
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="lungmtl",
        manufacturer_model_name=model_name[:64] or "lungmtl",
        software_versions=__version__,
        device_serial_number="none",
        series_description="lungmtl infection + lungs (research use only)",
    )
    seg.save_as(path)
    return path

"""File helpers (lungmtl.files): atomic writes and the natural order of file names."""

from __future__ import annotations

import pytest

from lungmtl.files import atomic_path, natural_key


def test_natural_key_orders_numbers_as_numbers_and_ignores_case():
    names = ["IM-10.dcm", "im-2.dcm", "IM-1.dcm", "z10.png", "Z2.png", "a.png"]
    assert sorted(names, key=natural_key) == [
        "a.png",
        "IM-1.dcm",
        "im-2.dcm",
        "IM-10.dcm",
        "Z2.png",
        "z10.png",
    ]
    # text never meets a number at the same position
    assert sorted(["1a", "a1", "10"], key=natural_key) == ["1a", "10", "a1"]


def test_atomic_path_keeps_the_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "mask.nii.gz"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"

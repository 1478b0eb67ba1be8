"""lungmtl models: the listing (lungmtl.models.catalogue)."""

from __future__ import annotations

from lungmtl.models.catalogue import describe


def test_the_listing_names_the_shipped_model_and_every_architecture():
    from lungmtl.models import MODELS
    from lungmtl.models.shipped import DEFAULT

    text = describe()
    assert (DEFAULT is None) or f"{DEFAULT} (default)" in text
    for name in MODELS:
        assert any(line.startswith(f"{name} ") for line in text.splitlines()), name

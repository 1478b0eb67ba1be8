"""PredictOptions refuses bad values."""

from __future__ import annotations

import pytest

from lungmtl.errors import InputError
from lungmtl.predict import PredictOptions


@pytest.mark.parametrize(
    "options",
    [{"batch_size": 0}, {"batch_size": -4}, {"gradcam": -1}, {"threads": 0}, {"threshold": 1.5}],
)
def test_predict_options_refuse_bad_values_for_api_users_too(options):
    with pytest.raises(InputError, match="must"):
        PredictOptions(**options)

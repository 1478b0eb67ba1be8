"""The lungmtl command line: bad settings end in one clear error line, never a traceback."""

from __future__ import annotations

import pytest
import torch

from lungmtl.errors import InputError


def test_bad_devices_and_settings_are_clear_errors_on_the_command_line(tmp_path, capsys):
    from lungmtl.cli import main
    from lungmtl.device import resolve_device

    with pytest.raises(InputError, match="'bogus' is not a device"):
        resolve_device("bogus")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda")
    for bad in ("train.grad_accum=0", "train.device=bogus", "model.name=[unet"):
        code = main(["train", "--out", str(tmp_path / "r"), "--set", bad, "-q"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("lungmtl: error:"), (bad, err)
        assert "Traceback" not in err

"""The viewer's payload: pictures as data: URLs, runs of positive slices across jumps."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lungmtl.viewer import ViewerData, payload, runs


def test_viewer_payload_for_8bit_slices_and_runs_across_jumps():
    vol = np.full((5, 32, 32), 100.0, np.float32)
    mask = np.zeros((5, 32, 32), np.uint8)
    mask[2, 10:14, 10:14] = 1
    lung = np.zeros((5, 32, 32), bool)
    lung[:, 4:28, 4:28] = True
    slices = pd.DataFrame(
        {
            "z": range(5),
            "slice_id": ["1", "2", "3", "9", "10"],
            "p_infected": [0.9, 0.8, 0.7, 0.9, 0.1],
            "positive": [True, True, True, True, False],
            "infected_px": mask.reshape(5, -1).sum(1),
            "infected_mm2": None,
            "lung_px": lung.reshape(5, -1).sum(1),
            "infected_percent_of_lung": [0.0, 0.0, 2.8, 0.0, 0.0],
        }
    )
    breaks = np.array([False, False, False, True, False])
    view = ViewerData(vol, "8bit", mask, lung, (1.0, 2.0), None, 3, breaks)
    data = payload(view, slices, {"case": "c", "threshold": 0.5, "most_affected_slices": []})
    assert [w[0] for w in data["windows"]] == ["stored"] and len(data["ct"]["stored"]) == 5
    assert data["infection"][2].startswith("data:image/png;base64,")
    assert [u is None for u in data["infection"]] == [True, True, False, True, True]
    assert all(u is not None for u in data["outline"])
    assert data["runs"] == [[0, 2], [3, 3]] == runs(slices["positive"].to_numpy(), breaks)
    assert data["inf_mm2"] is None and data["z_mm"] is None and data["aspect"] == 2.0
    assert data["initial"] == 2 and data["cam"] == {}

"""A small run on a table with gaps, as the table tests train it (shared by their module fixtures)."""

from pathlib import Path

import numpy as np
import pandas as pd

from elbox import train


def gapped_run(folder: Path, frame: pd.DataFrame, mask_seed: int, **options: object) -> tuple:
    """``frame`` with 10% of its cells emptied everywhere (generator ``mask_seed``), written to ``folder/t.csv`` and
    trained on for 3 epochs (2 latent dimensions, 16 hidden units, ``options`` on top): (run, folder, the frame)."""
    frame = frame.mask(np.random.default_rng(mask_seed).random(frame.shape) < 0.1)
    frame.to_csv(folder / "t.csv", index=False)
    run = train(data=str(folder / "t.csv"), epochs=3, latent_dim=2, hidden=(16,), out=str(folder / "run"),
                progress=False, **options)  # fmt: skip
    return run, folder, frame

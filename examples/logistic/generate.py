"""Writes data.csv and truth.json (the parameters that generated it): python examples/logistic/generate.py"""

import json
from pathlib import Path

import numpy as np

from elbox.bayes.files import write_data_file

HERE = Path(__file__).parent
TRUTH = {"alpha": -0.5, "beta": [1.0, -1.5, 0.5]}
N = 300

rng = np.random.default_rng(20)
x = rng.normal(size=(N, len(TRUTH["beta"]))).round(4)  # 4 decimals: a short file
logits = TRUTH["alpha"] + x @ np.array(TRUTH["beta"])
y = (rng.random(N) < 1 / (1 + np.exp(-logits))).astype(np.int64)
write_data_file(HERE / "data.csv", {"y": y, "X": x})
(HERE / "truth.json").write_text(json.dumps(TRUTH, indent=1) + "\n")

"""Writes data.json and truth.json (the parameters that generated it): python examples/varying_intercept/generate.py"""

import json
from pathlib import Path

import numpy as np

from elbox.bayes.files import write_data_file

HERE = Path(__file__).parent
J, PER_GROUP = 8, 15

rng = np.random.default_rng(21)
mu, b, tau, sigma = 1.0, 0.8, 1.2, 1.0
a = mu + tau * rng.normal(size=J)
g = np.repeat(np.arange(J), PER_GROUP)
x = rng.normal(size=J * PER_GROUP).round(3)
y = (a[g] + b * x + sigma * rng.normal(size=J * PER_GROUP)).round(3)
write_data_file(HERE / "data.json", {"J": J, "g": g, "x": x, "y": y})
truth = {"mu": mu, "b": b, "tau": tau, "sigma": sigma, "a": a.round(6).tolist()}
(HERE / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")

"""Writes data.csv and truth.json (the parameters that generated it): python examples/poisson_glmm/generate.py"""

import json
from pathlib import Path

import numpy as np

from elbox.bayes.files import write_data_file

HERE = Path(__file__).parent
J, PER_GROUP = 10, 20

rng = np.random.default_rng(22)
alpha, beta, tau = 0.5, 0.4, 0.6
u = tau * rng.normal(size=J)
g = np.repeat(np.arange(J), PER_GROUP)
x = rng.normal(size=J * PER_GROUP).round(3)
exposure = rng.uniform(0.5, 2.0, size=J * PER_GROUP).round(2)
y = rng.poisson(exposure * np.exp(alpha + beta * x + u[g]))
write_data_file(HERE / "data.csv", {"g": g, "x": x, "exposure": exposure, "y": y})
truth = {"alpha": alpha, "beta": beta, "tau": tau, "u": u.round(6).tolist()}
(HERE / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")

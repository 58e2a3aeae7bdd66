"""bayes.report: the figures of a fit render to a PNG; the pairs chosen are the most correlated."""

import numpy as np
import pytest
from figures import saves_as_png

from elbox import bayes
from elbox.bayes import report


@pytest.fixture(scope="module")
def posterior():
    ref = bayes.load("eight_schools_noncentered")
    return bayes.fit(ref.model, ref.data, family="diagonal", steps=300, progress=False)


def test_correlated_pairs_are_ranked_by_absolute_correlation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=2000)
    draws = {"a": a, "b": a + 0.1 * rng.normal(size=2000), "c": -a + rng.normal(size=2000), "d": rng.normal(size=2000)}
    chosen = report.correlated_pairs(draws, 2)
    assert [(x, y) for x, y, _ in chosen] == [("a", "b"), ("a", "c")]
    assert chosen[1][2] == pytest.approx(-1 / np.sqrt(2), abs=0.05)  # r of a and -a + noise of equal variance
    with pytest.raises(ValueError, match="two quantities"):
        report.correlated_pairs({"a": a})


def test_pairs_and_khat_render(tmp_path, posterior):
    draws = posterior.columns(3000, seed=0)
    reference = posterior.columns(500, seed=1)
    figures = {
        "pairs": report.pairs(draws),
        "pairs-reference": report.pairs(draws, reference, n_pairs=2),
        "khat": report.khat(posterior.diagnostics(draws=500, replicates=2)),
    }
    for name, figure in figures.items():
        assert saves_as_png(figure, tmp_path / f"{name}.png"), name

"""Start-up: the package faces are lazy, and the Bayesian path and the command line import no heavy
module they do not use (arviz, matplotlib, scipy.stats, scikit-learn, pandas, jinja2), and a fit builds
no torch optimiser (constructing one imports torch._dynamo: 0.6-0.8 s) and calls no torch.broadcast_shapes
(its first call imports sympy: 0.5-0.9 s)."""

import json
import subprocess
import sys

import pytest

HEAVY = ("arviz", "matplotlib", "scipy.stats", "sklearn", "pandas", "jinja2", "sympy", "torch._dynamo")


def _imported(code: str) -> dict[str, bool]:
    """Run ``code`` in a fresh interpreter; which of HEAVY (and torch) it left in ``sys.modules``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {(*HEAVY, 'torch')!r}}}))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "code",
    [
        "import elbox.bayes",
        # what `elbox fit NAME` imports before its first step: the model, the data, the fit and the summary
        "from elbox import bayes\nfrom elbox.bayes.report import describe\n"
        "r = bayes.load('eight_schools_noncentered')\nbayes.compare({'mu': [0.0, 1.0]}, {'mu': [0.5, 1.5, 2.0]})\n"
        "bayes.fit(r.model, r.data, family='fullrank', steps=20).diagnostics()\n"
        "bayes.fit(r.model, r.data, family='realnvp:2', steps=5)",
        "import elbox.cli",
    ],
    ids=["import elbox.bayes", "the fit path", "import elbox.cli"],
)
def test_no_heavy_imports(code: str) -> None:
    imported = _imported(code)
    assert [m for m in HEAVY if imported[m]] == []


def test_package_faces_are_lazy() -> None:
    """``import elbox``, ``import elbox.bayes`` and the evaluation's config (which the command line reads for its
    options) import no torch; names load on first use."""
    assert not _imported("import elbox")["torch"]
    assert not _imported("import elbox.bayes")["torch"]
    assert not _imported("from elbox.evaluation import EvaluationConfig")["torch"]


def test_every_public_name_resolves() -> None:
    import elbox
    from elbox import bayes, evaluation

    for face in (elbox, bayes, evaluation):
        assert set(face.__all__) <= set(dir(face))
        for name in face.__all__:
            assert getattr(face, name) is not None, name
    from elbox import VAE, ElboxError  # noqa: F401  the plain form keeps working
    from elbox.bayes import Model, fit  # noqa: F401

    assert elbox.training.train is elbox.train  # a submodule by attribute, as before
    with pytest.raises(AttributeError):
        elbox.no_such_name  # noqa: B018
    with pytest.raises(AttributeError):
        bayes.no_such_name  # noqa: B018

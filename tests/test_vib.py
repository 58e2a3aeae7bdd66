"""The deep variational information bottleneck (``VIB``), against Gauss-Hermite quadrature in one latent dimension.

With q(z | x) = N(mu, sd^2), p(y | z) = softmax(W z + b) and r(z) = N(0, 1), quadrature gives
E_q log p(y | z), the predictive log p(y | x) = log E_q p(y | z), log int r(z) p(y | z) dz and
the rate KL(q || r) in closed form; the VIB objective at beta = 1 (the ELBO of the model
r(z) p(y | z)) lies below both logarithms.
"""

import math

import numpy as np
import pytest
import torch
from command import run_cli

from elbox import VAEConfig
from elbox.bounds import ELBO, iwae
from elbox.errors import ElboxError
from elbox.models import VIB, build_model
from elbox.runs import load_run
from elbox.training import train

NODES, WEIGHTS = (torch.from_numpy(a) for a in np.polynomial.hermite_e.hermegauss(80))  # weight exp(-t^2 / 2)


def expect(f: object, mu: torch.Tensor, sd: torch.Tensor) -> torch.Tensor:
    """E f(z) for z ~ N(mu, sd^2) ``[B]`` by 80-node Gauss-Hermite quadrature: f maps ``[N, B, 1]`` to ``[N, B]``."""
    z = (mu + sd * NODES[:, None])[..., None]  # [N, B, 1]
    return (WEIGHTS[:, None] * f(z)).sum(0) / math.sqrt(2 * math.pi)


def tiny() -> VIB:
    return VIB(VAEConfig(data_dim=3, latent_dim=1, hidden=(), model="vib", classes=3)).double()


X = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5], [-1.5, 0.3, 0.2]], dtype=torch.float64)
Y = torch.tensor([0, 2, 1])


def quadrature(model: VIB) -> dict[str, torch.Tensor]:
    q = model.encode(X)
    mu, sd = q.base_dist.loc[:, 0], q.base_dist.scale[:, 0]
    log_lik = lambda z: model.decode(z).log_prob(Y)  # noqa: E731
    one = torch.ones_like(mu)
    return {
        "reconstruction": expect(log_lik, mu, sd),
        "predictive": expect(lambda z: log_lik(z).exp(), mu, sd).log(),  # log p(y | x)
        "marginal": expect(lambda z: log_lik(z).exp(), 0 * one, one).log(),  # log int r(z) p(y | z) dz
        "rate": 0.5 * (mu**2 + sd**2 - 1) - sd.log(),
    }


def test_log_weights_are_k_by_b_and_the_objective_matches_quadrature():
    """The ELBO over K = 20 000 draws is within 4 standard errors of E_q log p(y | z) - KL, which
    lies below log p(y | x) and log int r p(y | z); IWAE_K approaches the latter (4 delta-method SE)."""
    model, k = tiny(), 20_000
    exact = quadrature(model)
    p = model(X, k, y=Y)
    assert p.log_w.shape == (k, 3)
    bound = ELBO()(p)
    assert torch.allclose(bound.kl, exact["rate"])
    se = p.log_lik.std(0) / math.sqrt(k)
    assert ((bound.value - (exact["reconstruction"] - exact["rate"])).abs() < 4 * se).all()
    elbo = exact["reconstruction"] - exact["rate"]
    assert (elbo < exact["reconstruction"]).all() and (exact["reconstruction"] < exact["predictive"]).all()
    assert (elbo < exact["marginal"]).all()
    ratio_se = (p.log_w - exact["marginal"]).exp().std(0) / math.sqrt(k)
    assert ((iwae(p.log_w) - exact["marginal"]).abs() < 4 * ratio_se).all()


def test_predict_averages_p_y_given_z_over_draws_of_q():
    model = tiny()
    exact = quadrature(model)["predictive"].exp()  # p(Y | x)
    probs = model.predict(X, samples=20_000)
    assert torch.allclose(probs.sum(-1), torch.ones(3, dtype=torch.float64))
    assert ((probs[torch.arange(3), Y] - exact).abs() < 4 * 0.5 / math.sqrt(20_000)).all()  # p in [0, 1]: sd <= 1/2


def test_the_elbo_with_beta_is_the_vib_objective():
    """E_q log p(y | z) - beta KL is the surrogate; the reported value stays the beta = 1 bound."""
    model = tiny()
    p = model(X, 4, y=Y)
    for beta in (1e-3, 0.1, 1.0):
        bound = ELBO(beta=beta)(p)
        assert torch.allclose(bound.surrogate, p.log_lik.mean(0) - beta * bound.kl)
        assert torch.allclose(bound.value, p.log_lik.mean(0) - bound.kl)


def test_the_gradient_reaches_every_parameter_and_labels_are_required():
    model = VIB(VAEConfig(data_dim=4, latent_dim=2, hidden=(8,), model="vib", classes=3))
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    ELBO(beta=0.01)(model(x, 2, y=y)).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with pytest.raises(ElboxError, match="class label"):
        model(x, 2)
    with pytest.raises(ElboxError, match="classifier"):
        model.sample(4)
    assert isinstance(build_model(model.config), VIB)


def test_a_vib_trains_on_digits_well_above_chance_and_loads(tmp_path, capsys):
    """Ten classes: chance is 0.1; 4 epochs of a small VIB reach well above it (0.5 is a loose floor)."""
    code, out, _ = run_cli(capsys, "train", "--model", "vib", "--beta", "0.001", "--latent-dim", "8", "--hidden", "64",
                           "--epochs", "4", "--out", tmp_path / "run", "--no-report")  # fmt: skip
    assert code == 0 and "test accuracy" in out
    run = load_run(tmp_path / "run")
    assert isinstance(run.model, VIB) and run.summary["test"]["accuracy"] > 0.5
    assert all("valid_accuracy" in m for m in run.metrics)
    code, _, err = run_cli(capsys, "sample", tmp_path / "run")
    assert code == 2 and "classifier" in err


def test_a_vib_on_data_without_labels_is_refused_before_anything_is_written(tmp_path):
    np.save(tmp_path / "plain.npy", np.random.default_rng(0).random((40, 4)))
    with pytest.raises(ElboxError, match="needs a class label"):
        train(model="vib", data=str(tmp_path / "plain.npy"), epochs=1, out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_vib_over_a_conv_encoder():
    model = VIB(VAEConfig(data_dim=64, latent_dim=2, hidden=(8,), model="vib", classes=3, network="conv",
                          channels=(4,), image_shape=(8, 8)))  # fmt: skip
    x, y = torch.rand(5, 64), torch.tensor([0, 1, 2, 0, 1])
    p = model(x, 3, y=y)
    ELBO(beta=0.1)(p).loss.backward()
    assert p.log_w.shape == (3, 5) and all(q.grad is not None for q in model.parameters())

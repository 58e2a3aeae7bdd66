"""The conditional VAE (``VAE`` with ``model="cvae"``): against the exact log p(x | y) of a linear-Gaussian model.

With no hidden layers and a Gaussian likelihood of fixed scale s the cvae is

    p(z | y) = N(m_y, diag S_y),   p(x | z, y) = N(W z + V e_y + b, s^2 I),
    log p(x | y) = log N(x; W m_y + V e_y + b, W S_y W^T + s^2 I),

with e_y the one-hot label; the standard prior is m_y = 0, S_y = I. When W's columns are
orthogonal the exact posterior under the standard prior is N(A (x - V e_y - b), S) with
S = (I + W^T W / s^2)^-1 diagonal and A = S W^T / s^2, which the linear encoder can hold.
"""

import math

import numpy as np
import pytest
import torch
from command import run_cli
from torch.distributions import MultivariateNormal

from elbox import VAE, TrainConfig, VAEConfig, train  # the package face: with the default hooks (the figures)
from elbox.bounds import ELBO, iwae
from elbox.errors import ElboxError
from elbox.families import _inverse_positive
from elbox.runs import load_run

X_DIM, Z_DIM, C, S = 5, 2, 3, 0.5


def linear_cvae(class_prior: bool = False) -> VAE:
    config = VAEConfig(data_dim=X_DIM, latent_dim=Z_DIM, hidden=(), likelihood="gaussian", gaussian_scale=S,
                       model="cvae", classes=C, class_prior=class_prior)  # fmt: skip
    model = VAE(config).double()
    with torch.no_grad():
        w = torch.linalg.qr(torch.randn(X_DIM, Z_DIM, dtype=torch.float64)).Q * torch.tensor([1.0, 2.0])
        model.decoder[0].weight.copy_(torch.cat([w, torch.randn(X_DIM, C, dtype=torch.float64)], 1))
        model.decoder[0].bias.copy_(torch.randn(X_DIM, dtype=torch.float64))
        if class_prior:
            model.prior.loc.copy_(0.5 * torch.randn(C, Z_DIM))
            model.prior.raw_scale.copy_(torch.rand(C, Z_DIM) - 0.5)
    return model


def exact_log_px_given_y(model: VAE, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log p(x | y) ``[B]`` of a linear-Gaussian cvae."""
    weight, b = model.decoder[0].weight, model.decoder[0].bias
    w, v = weight[:, :Z_DIM], weight[:, Z_DIM:]
    if model.config.class_prior:  # N(loc_y, diag (softplus(raw_y) + 1e-4)^2)
        m, var = model.prior.loc[y], (torch.nn.functional.softplus(model.prior.raw_scale[y]) + 1e-4) ** 2
    else:
        m, var = torch.zeros(len(y), Z_DIM, dtype=torch.float64), torch.ones(len(y), Z_DIM, dtype=torch.float64)
    cov = w @ torch.diag_embed(var) @ w.T  # [B, X, X]
    return MultivariateNormal(m @ w.T + v.T[y] + b, cov + S**2 * torch.eye(X_DIM, dtype=torch.float64)).log_prob(x)


def set_encoder_to_posterior(model: VAE) -> None:
    """The standard-prior posterior N(A (x - V e_y - b), S) in the linear encoder [x, e_y] -> (loc, raw scale)."""
    weight, b = model.decoder[0].weight.detach(), model.decoder[0].bias.detach()
    w, v = weight[:, :Z_DIM], weight[:, Z_DIM:]
    cov = torch.linalg.inv(torch.eye(Z_DIM, dtype=torch.float64) + w.T @ w / S**2)
    a = cov @ w.T / S**2  # [D, X]
    layer = model.encoder.encoder[0]
    raw_scale = torch.tensor([_inverse_positive(math.sqrt(c), 1e-4) for c in cov.diagonal()], dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.cat([torch.cat([a, -a @ v], 1), torch.zeros(Z_DIM, X_DIM + C)]))
        layer.bias.copy_(torch.cat([-a @ b, raw_scale]))


def data(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, X_DIM, dtype=torch.float64), torch.arange(n) % C


def test_log_weights_are_k_by_b_and_labels_may_be_indices_or_one_hot():
    model, (x, y) = linear_cvae(), data()
    torch.manual_seed(3)
    by_index = model.log_weights(x, 7, y)
    torch.manual_seed(3)
    by_one_hot = model.log_weights(x, 7, torch.eye(C, dtype=torch.float64)[y])
    assert by_index.shape == (7, 6) and torch.equal(by_index, by_one_hot)


def test_at_the_exact_posterior_every_log_weight_is_log_p_x_given_y():
    model, (x, y) = linear_cvae(), data()
    set_encoder_to_posterior(model)
    exact = exact_log_px_given_y(model, x, y)
    assert torch.allclose(model.log_weights(x, 5, y), exact.expand(5, -1), atol=1e-6)
    # the label matters: the same x under another label has another likelihood
    assert not torch.allclose(exact_log_px_given_y(model, x, (y + 1) % C), exact)


def test_with_a_class_prior_the_bounds_sit_below_log_p_x_given_y():
    """ELBO < log p(x | y) for a q that is not the posterior; E_q w = p(x | y), so the mean of
    w / p(x | y) over K = 20 000 draws is 1 within 4 standard errors and IWAE_K is within 4
    (delta-method) standard errors of log p(x | y)."""
    model, (x, y) = linear_cvae(class_prior=True), data()
    set_encoder_to_posterior(model)  # the standard prior's posterior: close to, not at, this one's
    with torch.no_grad():
        model.encoder.encoder[0].bias[Z_DIM:] += 1.0  # wider than the posterior: light-tailed weights
    exact = exact_log_px_given_y(model, x, y)
    log_w = model.log_weights(x, 20_000, y).detach()
    ratio = (log_w - exact).exp()  # w / p(x | y), [K, B]
    se = ratio.std(0) / math.sqrt(20_000)
    assert ((ratio.mean(0) - 1).abs() < 4 * se).all()
    assert (log_w.mean(0) < exact - 10 * log_w.std(0) / math.sqrt(20_000)).all()
    assert ((iwae(log_w) - exact).abs() < 4 * se).all()


def test_the_gradient_reaches_every_parameter_including_the_class_prior():
    config = VAEConfig(data_dim=4, latent_dim=2, hidden=(8,), likelihood="bernoulli", model="cvae", classes=3,
                       class_prior=True)  # fmt: skip
    model = VAE(config)
    x, y = torch.bernoulli(torch.full((6, 4), 0.5)), torch.tensor([0, 1, 2, 0, 1, 2])
    ELBO()(model(x, 2, y=y)).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_samples_depend_on_the_condition_and_bad_labels_are_refused():
    model = linear_cvae()
    draws = [model.sample(4, torch.Generator().manual_seed(0), condition=c) for c in range(C)]
    assert draws[0].shape == (4, X_DIM) and not torch.allclose(draws[0], draws[1])
    with pytest.raises(ElboxError, match="--condition"):
        model.sample(4)
    with pytest.raises(ElboxError, match=r"0\.\.2"):
        model.sample(4, condition=3)
    with pytest.raises(ElboxError, match="class label"):
        model.log_weights(*data())  # no y
    with pytest.raises(ElboxError, match="whole numbers"):
        model.log_weights(data()[0], 1, torch.tensor([0, 1, 5, 0, 1, 2]))
    with pytest.raises(ElboxError, match="not conditional"):
        VAE(VAEConfig(data_dim=4, likelihood="bernoulli")).sample(2, condition=1)


def test_evaluate_refuses_a_cvae_naming_the_estimate_of_log_p_x_given_y():
    from elbox.evaluation import evaluate

    model, x = linear_cvae(), data()[0]
    with pytest.raises(ElboxError, match=r"iwae\(model.log_weights\(x, 5000, y\)\)"):
        evaluate(model, x)


def test_options_are_checked():
    with pytest.raises(ElboxError, match="class_prior"):
        VAEConfig(class_prior=True)
    with pytest.raises(ElboxError, match="model must be one of"):
        VAEConfig(model="gan")
    assert TrainConfig.from_dict({"model": "cvae"}).model.model == "cvae"  # the flat --model names the kind
    with pytest.raises(ElboxError, match="network mlp"):
        VAEConfig(model="cvae", network="conv")


@pytest.mark.slow
def test_a_cvae_trains_on_digits_loads_and_samples_through_the_cli(tmp_path, capsys):
    run = train(model="cvae", class_prior=True, hidden=(16,), epochs=1, out=tmp_path / "run", progress=False)
    assert run.model.config.classes == 10 and math.isfinite(run.summary["test"]["elbo"])
    loaded = load_run(tmp_path / "run")
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(loaded.model.sample(5, g(), condition=3), run.model.sample(5, g(), condition=3))
    code, _, _ = run_cli(capsys, "sample", tmp_path / "run", "--condition", 3, "-n", 8, "-o", tmp_path / "s.png")
    assert code == 0 and (tmp_path / "s.png").exists()
    code, _, err = run_cli(capsys, "sample", tmp_path / "run")
    assert code == 2 and "--condition" in err
    code, _, _ = run_cli(capsys, "reconstruct", tmp_path / "run", "-n", 4, "-o", tmp_path / "r.png")  # given labels
    assert code == 0 and (tmp_path / "r.png").exists()
    assert {p.name for p in (tmp_path / "run" / "figures").iterdir()} >= {"samples.png", "reconstructions.png"}


def test_a_cvae_on_data_without_labels_is_refused_before_anything_is_written(tmp_path):
    np.savez(tmp_path / "plain.npz", train=np.random.default_rng(0).random((40, 4)) > 0.5)
    with pytest.raises(ElboxError, match="needs a class label"):
        train(model="cvae", data=str(tmp_path / "plain.npz"), epochs=1, out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_labels_of_a_user_npz_condition_a_cvae_named_in_a_config_file(tmp_path, capsys):
    """Labels come with the .npz ('train_labels'); the held-out splits cut from train keep theirs."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", train=rng.random((60, 4)) > 0.5, train_labels=rng.integers(0, 4, 60))
    (tmp_path / "c.toml").write_text(f'model = "cvae"\ndata = "{tmp_path / "d.npz"}"\nepochs = 1\nhidden = [8]\n')
    code, out, _ = run_cli(capsys, "train", "--config", tmp_path / "c.toml", "--out", tmp_path / "run", "--no-report")
    assert code == 0 and "conditional VAE" in out and "log p(x | y)" in out
    assert load_run(tmp_path / "run").model.config.classes == 4

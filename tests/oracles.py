"""Models whose answers are known in closed form, used as oracles by the tests.

The linear-Gaussian model p(z) = N(0, I), p(x | z) = N(W z + b, s^2 I) has

    log p(x)   = log N(x; b, W W^T + s^2 I)
    p(z | x)   = N(S W^T (x - b) / s^2, S),   S = (I + W^T W / s^2)^-1.

A VAE with no hidden layers and a Gaussian likelihood of fixed scale s *is* this model once
its decoder holds (W, b); when W's columns are orthogonal, S is diagonal and constant and
the posterior mean linear in x, so the VAE's own encoder can hold the exact posterior.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import MultivariateNormal

from elbox import VAE, VAEConfig


def linear_gaussian_vae(x_dim: int = 5, z_dim: int = 2, s: float = 0.5, orthogonal: bool = False) -> VAE:
    """A VAE that is exactly the linear-Gaussian model, with random (W, b) and a random encoder."""
    config = VAEConfig(data_dim=x_dim, latent_dim=z_dim, hidden=(), likelihood="gaussian", gaussian_scale=s)
    vae = VAE(config).double()
    with torch.no_grad():
        w = torch.randn(x_dim, z_dim, dtype=torch.float64)
        if orthogonal:  # orthogonal columns of different lengths: W^T W diagonal
            w = torch.linalg.qr(w).Q * torch.linspace(1.0, 2.0, z_dim, dtype=torch.float64)
        vae.decoder[0].weight.copy_(w)
        vae.decoder[0].bias.copy_(torch.randn(x_dim, dtype=torch.float64))
    return vae


def parts(vae: VAE) -> tuple[Tensor, Tensor, float]:
    """(W [X, D], b [X], s) of a linear-Gaussian VAE."""
    return vae.decoder[0].weight, vae.decoder[0].bias, vae.config.gaussian_scale


def exact_log_px(vae: VAE, x: Tensor) -> Tensor:
    """log p(x) for each row of x ``[B, X]``: ``[B]``."""
    w, b, s = parts(vae)
    cov = w @ w.T + s**2 * torch.eye(w.shape[0], dtype=w.dtype)
    return MultivariateNormal(b, cov).log_prob(x)


def exact_posterior(vae: VAE, x: Tensor) -> MultivariateNormal:
    """p(z | x), batch shape ``[B]``, event ``[D]``."""
    w, b, s = parts(vae)
    cov = torch.linalg.inv(torch.eye(w.shape[1], dtype=w.dtype) + w.T @ w / s**2)
    mean = (x - b) @ w @ cov / s**2  # cov is symmetric
    return MultivariateNormal(mean, cov.expand(x.shape[0], -1, -1))


def set_encoder_to_posterior(vae: VAE) -> None:
    """Make the encoder output the exact posterior (needs orthogonal W, hence diagonal S)."""
    w, b, s = parts(vae)
    d = w.shape[1]
    cov = torch.linalg.inv(torch.eye(d, dtype=w.dtype) + w.T @ w / s**2)
    assert torch.allclose(cov, torch.diag(cov.diagonal()), atol=1e-10), "W must have orthogonal columns"
    gain = cov @ w.T / s**2  # [D, X]: mean = gain (x - b)
    std = cov.diagonal().sqrt() - vae.config.min_scale
    raw = std + torch.log(-torch.expm1(-std))  # inverse of softplus
    layer = vae.encoder.encoder[0]
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[:d] = gain
        layer.bias[:d] = -gain @ b
        layer.bias[d:] = raw
    assert torch.allclose(F.softplus(raw) + vae.config.min_scale, cov.diagonal().sqrt())


def exact_elbo(vae: VAE, x: Tensor) -> Tensor:
    """The ELBO of the VAE's own diagonal q in closed form, differentiable in every parameter: ``[B]``.

    E_q log N(x; W z + b, s^2 I) = log N(x; W m + b, s^2 I) - tr(W diag(v) W^T) / (2 s^2), with
    q = N(m, diag v), minus the closed-form KL(q || N(0, I)).
    """
    w, b, s = parts(vae)
    q = vae.encode(x)
    m, v = q.mean, q.variance  # [B, D]
    x_dim = w.shape[0]
    resid = x - m @ w.T - b
    log_lik = -0.5 * (resid.pow(2).sum(-1) + (v @ w.pow(2).sum(0))) / s**2 - x_dim * (
        math.log(s) + 0.5 * math.log(2 * math.pi)
    )
    kl = 0.5 * (m.pow(2) + v - 1 - v.log()).sum(-1)
    return log_lik - kl

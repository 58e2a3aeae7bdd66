"""log p(x) by importance sampling, and the main pass: everything read off K particles per point.

One pass of K particles per point (``particles.particles``, the one source of log-weights)
gives, from log_w ``[K, B]``, per point: log p(x) (IWAE_K), its Monte Carlo error, the ESS, PSIS
k-hat, the IWAE_k curve and CUBO_2 (the formulas: the table of ``elbox.evaluation``); and, from the
same particles, the reconstruction E_q log p(x | z), the rate KL(q || p) and
the posterior means.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution
from tqdm.auto import tqdm

from ..bounds import cubo, iwae, iwae_curve
from ..distributed import sum_over_ranks, world
from ..importance import effective_sample_size, log_px_standard_error, psis_khat
from ..models import LatentVariableModel
from .config import COMPILE_ABOVE, EvaluationConfig
from .estimate import Estimate
from .information import rate
from .particles import (
    STREAM_LOG_W,
    blocks,
    check_data,
    chunk_size,
    decoder_log_lik,
    evaluating,
    particles,
    stream_seeds,
)

__all__ = ["LogLikelihood", "log_likelihood", "main_pass"]


class _DecoderPass:
    """``decoder_log_lik``, compiled and in bfloat16 as the config asks; eager where compilation fails.

    Compiled, the bias, the log-likelihood and its sum over X become one kernel reading the
    last layer's output once, instead of several full passes over ``[c, B, X]`` (which, at
    X = 784, cost as much as the matrix products). Shapes are compiled dynamically, so the
    last, smaller chunk and batch need no second compilation.
    """

    def __init__(self, model: LatentVariableModel, compile: bool, precision: str) -> None:
        self.model, self.precision = model, precision
        self.compiled = torch.compile(decoder_log_lik, dynamic=True) if compile else None

    def __call__(self, z: Tensor, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            if self.compiled is not None:
                try:
                    return self.compiled(self.model, z, x).to(x.dtype)  # bf16: back to the model's dtype
                except Exception:  # no working compiler here, say: the eager pass computes the same
                    self.compiled = None
            return decoder_log_lik(self.model, z, x).to(x.dtype)


def _compiles(config: EvaluationConfig, points: int) -> bool:
    return config.compile if config.compile is not None else points * config.k >= COMPILE_ABOVE


# ----------------------------------------------------------------- the pass over the data


def _mean(q: Distribution, monte_carlo: Tensor) -> Tensor:
    """E_q[z] ``[B, D]``: q's own where it has one in closed form (a flow has not), else ``monte_carlo``."""
    try:
        return q.mean
    except NotImplementedError:
        return monte_carlo


@torch.inference_mode()
def _batch(
    model: LatentVariableModel,
    x: Tensor,
    config: EvaluationConfig,
    chunk: int,
    seeds: Sequence[int],
    khat: bool,
    decoder_pass: Callable[[Tensor, Tensor], Tensor],
) -> dict[str, Tensor]:
    """Everything the evaluation reads off K particles for one batch of points ``[B, X]``: each ``[B, ...]``."""
    k = config.k
    q, prior = model.encode(x), model.prior()
    b = x.shape[0]
    log_w = x.new_empty(k, b)  # [K, B]: kept whole, K / X of the size of one chunk's decoder output
    log_lik, log_ratio, z_sum = x.new_zeros(b), x.new_zeros(b), 0.0
    start = 0
    for p in particles(q, prior, x, k, decoder_pass, chunk=chunk, seeds=seeds):  # c particles: [c, B] each
        log_w[start : start + p.z.shape[0]] = p.log_w
        log_lik += p.log_lik.sum(0)
        log_ratio += (p.log_q - p.log_prior).sum(0)
        z_sum = z_sum + p.z.sum(0)
        start += p.z.shape[0]
    kl_total, kl_dims = rate(q, prior, log_ratio / k)
    stats = {
        "log_px": iwae(log_w),
        "mc_se": log_px_standard_error(log_w),
        "ess": effective_sample_size(log_w),
        "cubo": cubo(log_w, 2.0),
        "reconstruction": log_lik / k,
        "kl": kl_total,
        "mean": _mean(q, z_sum / k),
        **{f"iwae_{j}": v for j, v in iwae_curve(log_w, config.ks).items()},
    }
    if kl_dims is not None:
        stats["kl_dims"] = kl_dims
    if khat:
        stats["khat"] = psis_khat(log_w)
    return stats


def main_pass(
    model: LatentVariableModel, x: Tensor, config: EvaluationConfig, khat: bool = False, progress: bool | None = False
) -> dict[str, Tensor]:
    """``_batch`` over every batch of ``x``, concatenated: per point ``[N, ...]``."""
    chunk = chunk_size(model, config.k, min(config.batch_size, x.shape[0]), config)
    decoder_pass = _DecoderPass(model, _compiles(config, x.shape[0]), config.precision)
    parts = []
    disable = None if progress is None else not progress  # None: a bar only on a terminal
    w = world()
    starts = list(range(0, x.shape[0], config.batch_size))
    mine = [i for i in range(len(starts)) if i % w.size == w.rank]  # under torchrun, every size-th batch
    total = sum(min(config.batch_size, x.shape[0] - starts[i]) for i in mine)
    with tqdm(total=total, unit="point", desc=f"log p(x), K = {config.k}", leave=False,
              disable=disable if w.main else True) as bar:  # fmt: skip
        for i in mine or [0]:  # a rank without a batch computes one to learn the shapes, then drops it
            seeds = stream_seeds(config.seed, STREAM_LOG_W, i, blocks(config.k))  # the batch's own: same on any rank
            xb = x[starts[i] : starts[i] + config.batch_size]
            parts.append(_batch(model, xb, config, chunk, seeds, khat, decoder_pass) | {"_start": starts[i]})
            bar.update(xb.shape[0] if mine else 0)
    if w.size == 1:
        return {key: torch.cat([p[key] for p in parts]) for key in parts[0] if key != "_start"}
    return _gathered(parts if mine else [], parts[0], x.shape[0])


def _gathered(parts: list[dict[str, Any]], like: dict[str, Any], n: int) -> dict[str, Tensor]:
    """Every rank's per-point results in the data's order: each rank writes its rows into zeros
    ``[N, ...]`` and the ranks' tensors are summed (the rows are disjoint)."""
    out = {}
    for key, value in like.items():
        if key == "_start":
            continue
        whole = value.new_zeros((n, *value.shape[1:]))
        for part in parts:
            whole[part["_start"] : part["_start"] + part[key].shape[0]] = part[key]
        out[key] = sum_over_ranks(whole)
    return out


@dataclass(eq=False)
class LogLikelihood:
    """Importance-sampling estimates of log p(x), per data point, in nats.

    Attributes:
        values: log (1/K) sum_k w_k per point, ``[N]``: unbiased for p(x), so biased low for
            log p(x), by about half the squared Monte Carlo error.
        mc_se: each estimate's Monte Carlo standard error (``log_px_standard_error``), ``[N]``.
        ess: each point's importance ESS, between 1 and K, ``[N]``.
        k: particles per point.
    """

    values: Tensor
    mc_se: Tensor
    ess: Tensor
    k: int

    @property
    def estimate(self) -> Estimate:
        """The mean over points with its standard error over points (which includes the Monte Carlo error)."""
        return Estimate.of(self.values)

    @property
    def mean(self) -> float:
        return self.estimate.mean

    @property
    def se(self) -> float:
        return self.estimate.se


def log_likelihood(
    model: LatentVariableModel,
    x: Tensor,
    k: int = 5000,
    *,
    chunk: int | None = None,
    max_memory: float = EvaluationConfig.max_memory,
    batch_size: int = 100,
    seed: int = 0,
    compile: bool | None = None,
    precision: str = "fp32",
) -> LogLikelihood:
    """Estimate log p(x) for each row of ``x`` ``[N, X]`` by importance sampling with the encoder as proposal.

    log p(x) ~ log (1/K) sum_k p(x, z_k) / q(z_k | x), z_k ~ q(z | x): the IWAE_K bound of
    Burda et al. (2016), which tends to log p(x) as K grows. Points go through in batches of
    ``batch_size``, particles in chunks of ``chunk`` (or as many as ``max_memory`` bytes hold),
    so memory is bounded whatever K. Deterministic given ``seed`` and ``batch_size``; the
    chunk size does not change the draws. The caller's random state is left as it was.
    ``compile`` and ``precision`` choose the fast paths of ``EvaluationConfig``.

    >>> from elbox import VAE, VAEConfig
    >>> vae = VAE(VAEConfig(data_dim=4, latent_dim=2, hidden=(8,), likelihood="bernoulli"))
    >>> x = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    >>> ll = log_likelihood(vae, x, k=300, chunk=100, seed=0)
    >>> ll.values.shape, bool((ll.values <= 0).all()), bool((ll.ess <= 300).all())
    (torch.Size([2]), True, True)
    >>> bool(torch.allclose(ll.values, log_likelihood(vae, x, k=300, chunk=300, seed=0).values))
    True
    """
    config = EvaluationConfig(k=k, ks=(), chunk=chunk, max_memory=max_memory, batch_size=batch_size, seed=seed,
                              compile=compile, precision=precision)  # fmt: skip
    x = check_data(model, x)
    with evaluating(model):
        stats = main_pass(model, x, config)
    return LogLikelihood(stats["log_px"], stats["mc_se"], stats["ess"], k)

"""Honest evaluation of a trained VAE: log p(x) with error bars, the bounds around it, rate and
distortion, active units, mutual information, the inference-gap split and PSIS k-hat.

Every figure comes from log-weights (DESIGN.md). K particles per data point, drawn from the
encoder's q in chunks so that memory stays bounded, give

    log w[k, n] = log p(x_n | z_kn) + log p(z_kn) - log q(z_kn | x_n),   z_kn ~ q(z | x_n)   # [K, N]

and from them, per data point:

| figure | from log_w |
| --- | --- |
| log p(x) estimate | IWAE_K = log (1/K) sum_k w_k, K = 5000 (Burda et al. 2016) |
| its Monte Carlo standard error | sqrt((1/ESS - 1/K) K / (K - 1)), the delta method |
| importance ESS | 1 / sum_k w~_k^2 (Kish), w~ the normalised weights |
| PSIS k-hat | the shape of a generalised Pareto fit to the largest weights (ArviZ) |
| the IWAE_k curve | IWAE_k averaged over the K // k disjoint groups of k particles |
| CUBO_2 | (1/2) log (1/K) sum_k w_k^2 (Dieng et al. 2017) |

Densities are in nats per data point; a ± is a standard error over data points unless said
otherwise. Randomness goes through ``seed`` only: the caller's random state is left as it was.
"""

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, kl_divergence
from tqdm.auto import tqdm

from .bounds import cubo, iwae, log_mean_exp
from .checkpoints import write_json
from .data import binarize, spread, spread_index
from .distributed import init, sum_over_ranks, world
from .errors import ElboxError
from .importance import KHAT_THRESHOLD, effective_sample_size, log_px_standard_error, psis_khat
from .models import LatentVariableModel, latent_floats
from .runs import Run, load_run

__all__ = [
    "ACTIVE_THRESHOLD",
    "BLOCK",
    "COLLAPSE_MI",
    "COMPILE_ABOVE",
    "KS",
    "PRECISIONS",
    "SHORTFALL",
    "Estimate",
    "Evaluation",
    "EvaluationConfig",
    "Gaps",
    "LogLikelihood",
    "evaluate",
    "inference_gaps",
    "iwae_curve",
    "log_likelihood",
    "mutual_information",
    "unit_activity",
]

ACTIVE_THRESHOLD = 0.01  # Burda et al. (2016): unit d is active when Cov_x(E_q[z_d | x]) exceeds it
COLLAPSE_MI = 0.05  # nats: with less I(x; z) than this, the code says next to nothing about x
SHORTFALL = 0.1  # nats: a log p(x) estimate this far below a better proposal's is worth a warning
BLOCK = 100  # particles drawn under one seed: a chunk is whole blocks, so its size never changes the draws
KS = (1, 5, 50, 500, 5000)  # the IWAE_k curve
PRECISIONS = ("fp32", "bf16")
COMPILE_ABOVE = 2_000_000  # particle-points (400 images at K = 5000): a pass of about 10 s on 2 cores

# streams of seeds, one per use, so that no two draws share random numbers
_LOG_W, _GAP_FIT, _GAP_DRAWS, _MI = range(4)


class Estimate(NamedTuple):
    """A mean over data points with its standard error (``std / sqrt(n)``), in nats per data point.

    >>> f"{Estimate.of(torch.tensor([1.0, 2.0, 3.0])):.3f}"
    '2.000 ± 0.577'
    """

    mean: float
    se: float

    @classmethod
    def of(cls, values: Tensor) -> "Estimate":
        v = values.detach().double().flatten()
        se = (v.std() / math.sqrt(v.numel())).item() if v.numel() > 1 else math.nan
        return cls(v.mean().item(), se)

    def __format__(self, spec: str) -> str:
        spec = spec or ".3f"
        return f"{self.mean:{spec}} ± {self.se:{spec}}"

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "se": self.se}


# ----------------------------------------------------------------- pure functions of log-weights


def iwae_curve(log_w: Tensor, ks: Iterable[int]) -> dict[int, Tensor]:
    """IWAE_k for each k of ``ks``, from one set of K particles: ``[K, B] -> {k: [B]}``.

    IWAE_k is averaged over the K // k disjoint groups of k particles (the last K mod k are
    left out): an unbiased estimate of the expected bound E[IWAE_k] (the figure papers report),
    with less variance than one group. IWAE_1 is the ELBO as the mean log-weight; IWAE_K is
    the log p(x) estimate.

    >>> log_w = torch.tensor([[0.0], [2.0], [0.0], [2.0]])
    >>> {k: round(v.item(), 4) for k, v in iwae_curve(log_w, (1, 2, 4)).items()}
    {1: 1.0, 2: 1.4338, 4: 1.4338}
    """
    k_all, rest = log_w.shape[0], log_w.shape[1:]
    curve = {}
    for k in ks:
        if not 1 <= k <= k_all:
            raise ValueError(f"IWAE_k needs 1 <= k <= K = {k_all}, got k = {k}")
        groups = k_all // k
        curve[k] = log_mean_exp(log_w[: groups * k].reshape(groups, k, *rest), 1).mean(0)
    return curve


def unit_activity(means: Tensor) -> Tensor:
    """Cov_x(E_q[z_d | x]) per latent dimension d: ``[N, D] -> [D]``.

    The activity statistic of Burda et al. (2016, section 5.2): unit d is active when it
    exceeds ``ACTIVE_THRESHOLD`` (0.01), that is, when the posterior mean of z_d moves with x.
    """
    return means.double().var(0)


# ----------------------------------------------------------------- configuration


@dataclass
class EvaluationConfig:
    """How to evaluate; written out as ``evaluation.json["config"]``.

    Attributes:
        split: which data of a run: ``train``, ``valid`` or ``test``.
        checkpoint: which weights of a run: ``last`` or ``best``.
        k: particles per data point for log p(x), the largest k of the IWAE_k curve.
        ks: the k of the IWAE_k curve (those above ``k`` are left out; ``k`` is always in).
        chunk: particles per decoder pass, rounded up to whole blocks of ``BLOCK``; ``None``
            takes as many as ``max_memory`` holds. Chunking changes memory, not the numbers.
        max_memory: bytes one chunk's activations may take (estimated from the model's widths), and at
            most a quarter of the memory free on the device (os.sysconf on CPU, CUDA's count on a GPU).
        batch_size: data points per pass. The draws depend on it (and on ``seed``), not on ``chunk``.
        seed: seeds every draw.
        gap_points: data points (spread through the split) of the gap decomposition; 0 skips it.
        gap_steps, gap_lr, gap_particles: Adam steps, learning rate and particles per step of
            the per-point optimisation of q.
        mi_points: data points (spread through the split) whose q(z | x) make up the aggregate
            posterior of the mutual information.
        mi_samples: draws per point of the mutual information.
        khat: compute PSIS k-hat per point (ArviZ).
        compile: run the decoder pass and its log-likelihood through ``torch.compile`` (one
            fused kernel over the logits instead of several passes); ``None`` compiles when the
            pass has at least ``COMPILE_ABOVE`` particle-points, where the compilation (seconds)
            is small beside the pass. The values agree with eager ones to float rounding.
        precision: ``fp32``, or ``bf16`` for the decoder's matrix products in bfloat16
            (``torch.autocast``; q, the prior and the log-weights stay in float32). About 4x the
            matmul rate on CPUs with AVX-512 BF16; changes log p(x) by under 0.05 nats on the
            benchmark VAE (tests/test_evaluate.py, docs/benchmarks.md). Opt-in.
    """

    split: str = "test"
    checkpoint: str = "last"
    k: int = 5000
    ks: tuple[int, ...] = KS
    chunk: int | None = None
    max_memory: float = 512 * 2**20
    batch_size: int = 100
    seed: int = 0
    gap_points: int = 100
    gap_steps: int = 500
    gap_lr: float = 1e-2
    gap_particles: int = 10
    mi_points: int = 1000
    mi_samples: int = 10
    khat: bool = True
    compile: bool | None = None
    precision: str = "fp32"

    def __post_init__(self) -> None:
        problems = []
        if min(self.ks, default=1) < 1:
            problems.append(f"every k of the IWAE curve must be at least 1, got {list(self.ks)}")
        self.ks = tuple(sorted({*(k for k in self.ks if 1 <= k <= self.k), self.k}))
        if self.split not in ("train", "valid", "test"):
            problems.append(f"split must be train, valid or test, got {self.split!r}")
        if self.checkpoint not in ("last", "best"):
            problems.append(f"checkpoint must be last or best, got {self.checkpoint!r}")
        for name in ("k", "batch_size", "gap_steps", "gap_particles", "mi_points", "mi_samples"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("seed", "gap_points"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be at least 0, got {getattr(self, name)}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.chunk is not None and self.chunk < 1:
            problems.append(f"chunk must be at least 1 (or unset), got {self.chunk}")
        if not (self.max_memory > 0 and self.gap_lr > 0):
            problems.append(f"max_memory and gap_lr must be positive, got {self.max_memory} and {self.gap_lr}")
        if problems:
            raise ElboxError("invalid evaluation options: " + "; ".join(problems) + ".")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ks": list(self.ks)}


# ----------------------------------------------------------------- drawing particles


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def _evaluating(model: torch.nn.Module) -> Iterator[None]:
    """The model in evaluation mode, the caller's random state saved and restored around the block."""
    device, training = _device(model), model.training
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    model.eval()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        model.train(training)


def _seeds(seed: int, stream: int, index: int, n: int) -> list[int]:
    """n seeds for one batch of one use (``stream``), well mixed (numpy's SeedSequence)."""
    return np.random.SeedSequence([seed, stream, index]).generate_state(n, np.uint64).tolist()


def _reseed(device: torch.device, seed: int) -> None:
    if device.type == "cpu":
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


def _draw(q: Distribution, n: int) -> tuple[Tensor, Tensor | None]:
    """n draws ``[n, B, D]`` from q, with log q ``[n, B]`` where a flow computes it along the draw."""
    if hasattr(q, "rsample_and_log_prob"):
        return q.rsample_and_log_prob((n,))
    return (q.rsample((n,)) if q.has_rsample else q.sample((n,))), None


def _chunks(
    q: Distribution, k: int, chunk: int, seeds: Sequence[int], device: torch.device
) -> Iterator[tuple[Tensor, Tensor]]:
    """K draws from q in chunks of ``chunk`` particles (whole blocks): ``(z [c, B, D], log q [c, B])``.

    Block j of ``BLOCK`` particles is drawn under ``seeds[j]``, so the draws are the same
    whatever the chunk size: chunking bounds memory and changes nothing else.
    """
    sizes = [min(BLOCK, k - start) for start in range(0, k, BLOCK)]
    per_chunk = max(1, chunk // BLOCK)
    for first in range(0, len(sizes), per_chunk):
        zs, log_qs = [], []
        for j in range(first, min(first + per_chunk, len(sizes))):
            _reseed(device, seeds[j])
            z, log_q = _draw(q, sizes[j])
            zs.append(z)
            log_qs.append(log_q)
        z = torch.cat(zs)
        yield z, (torch.cat(log_qs) if log_qs[0] is not None else q.log_prob(z))


def _blocks(k: int) -> int:
    return math.ceil(k / BLOCK)


def _bytes_per_particle(model: LatentVariableModel) -> int:
    """Rough peak bytes of one particle of one data point through the decoder and the likelihood.

    Without autograd only a layer or two are alive at once; the likelihood's output and its
    temporaries are the largest (three of width m X, m its outputs per dimension), and a conv
    decoder's feature maps (up to channels x X each).
    """
    c = model.config
    itemsize = next(model.parameters()).element_size()
    width = c.data_dim * model.likelihood.outputs_per_dim
    maps = 2 * c.data_dim * max(c.channels) if c.network == "conv" else 0
    return itemsize * (3 * width + maps + 2 * sum(c.hidden) + 4 * c.latent_dim + latent_floats(c))


def _available_memory(device: torch.device) -> float | None:
    """Bytes free on ``device`` now: the OS's count of available pages (Linux), or CUDA's free memory."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # no such count on this OS: trust max_memory
        return None


def _chunk_size(model: LatentVariableModel, k: int, batch: int, config: "EvaluationConfig") -> int:
    """Particles per decoder pass for batches of ``batch`` points: whole blocks, at most K (rounded up).

    Without a fixed ``chunk``, as many as ``max_memory`` holds, and no more than a quarter of
    the memory free on the device: large chunks make large matrix products (the fast way
    through the decoder), but never at the price of swapping.
    """
    if config.chunk is not None:
        chunk = _blocks(config.chunk) * BLOCK
    else:
        available = _available_memory(_device(model))
        budget = config.max_memory if available is None else min(config.max_memory, max(available / 4, 64 * 2**20))
        chunk = int(budget // (batch * _bytes_per_particle(model))) // BLOCK * BLOCK
        if chunk < BLOCK:
            need = BLOCK * batch * _bytes_per_particle(model) / 2**20
            raise ElboxError(
                f"max_memory of {config.max_memory / 2**20:.1f} MiB holds fewer than {BLOCK} particles for "
                f"batches of {batch} data points (that needs about {need:.1f} MiB); raise --max-memory or "
                "lower --batch-size."
            )
    return min(chunk, _blocks(k) * BLOCK)


# ----------------------------------------------------------------- the decoder pass, fast


def _log_lik(model: LatentVariableModel, z: Tensor, x: Tensor) -> Tensor:
    """log p(x | z) ``[c, B]`` for z ``[c, B, D]`` and x ``[B, X]``: the decoder pass, where the time goes."""
    return model.decode(z).log_prob(x)


class _DecoderPass:
    """``_log_lik``, compiled and in bfloat16 as the config asks; eager where compilation fails.

    Compiled, the bias, the log-likelihood and its sum over X become one kernel reading the
    last layer's output once, instead of several full passes over ``[c, B, X]`` (which, at
    X = 784, cost as much as the matrix products). Shapes are compiled dynamically, so the
    last, smaller chunk and batch need no second compilation.
    """

    def __init__(self, model: LatentVariableModel, compile: bool, precision: str) -> None:
        self.model, self.precision = model, precision
        self.compiled = torch.compile(_log_lik, dynamic=True) if compile else None

    def __call__(self, z: Tensor, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            if self.compiled is not None:
                try:
                    return self.compiled(self.model, z, x).to(x.dtype)  # bf16: back to the model's dtype
                except Exception:  # no working compiler here, say: the eager pass computes the same
                    self.compiled = None
            return _log_lik(self.model, z, x).to(x.dtype)


def _compiles(config: EvaluationConfig, points: int) -> bool:
    return config.compile if config.compile is not None else points * config.k >= COMPILE_ABOVE


# ----------------------------------------------------------------- the pass over the data


def _kl_parts(q: Distribution, prior: Distribution, monte_carlo: Tensor) -> tuple[Tensor, Tensor | None]:
    """KL(q || p) per point ``[B]``, and per latent dimension ``[B, D]`` where q and p factorize.

    The total is in closed form where torch.distributions has one, else ``monte_carlo`` (the
    mean of log q - log p over the particles). Per dimension only in closed form, for q and p
    independent over dimensions (``Independent`` over one event dimension).
    """
    try:
        total = kl_divergence(q, prior)
    except NotImplementedError:
        total = monte_carlo
    factorized = all(isinstance(d, Independent) and d.reinterpreted_batch_ndims == 1 for d in (q, prior))
    if not factorized:
        return total, None
    try:
        return total, kl_divergence(q.base_dist, prior.base_dist).expand(*q.batch_shape, *q.event_shape)
    except NotImplementedError:
        return total, None


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
    for z, log_q in _chunks(q, k, chunk, seeds, x.device):
        ll, lp = decoder_pass(z, x), prior.log_prob(z)  # [c, B] each
        log_w[start : start + z.shape[0]] = ll + lp - log_q
        log_lik += ll.sum(0)
        log_ratio += (log_q - lp).sum(0)
        z_sum = z_sum + z.sum(0)
        start += z.shape[0]
    kl_total, kl_dims = _kl_parts(q, prior, log_ratio / k)
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


def _check_data(model: LatentVariableModel, x: Tensor) -> Tensor:
    if x.ndim != 2 or x.shape[0] < 1:
        raise ElboxError(f"evaluation needs data of shape [N, X] with N >= 1, got {list(x.shape)}.")
    model.check(x, "evaluation")
    parameter = next(model.parameters())
    return x.to(device=parameter.device, dtype=parameter.dtype)


def _pass(
    model: LatentVariableModel, x: Tensor, config: EvaluationConfig, khat: bool = False, progress: bool | None = False
) -> dict[str, Tensor]:
    """``_batch`` over every batch of ``x``, concatenated: per point ``[N, ...]``."""
    chunk = _chunk_size(model, config.k, min(config.batch_size, x.shape[0]), config)
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
            seeds = _seeds(config.seed, _LOG_W, i, _blocks(config.k))  # the batch's own: any rank draws the same
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
    x = _check_data(model, x)
    with _evaluating(model):
        stats = _pass(model, x, config)
    return LogLikelihood(stats["log_px"], stats["mc_se"], stats["ess"], k)


# ----------------------------------------------------------------- mutual information


def _mi_values(model: LatentVariableModel, x: Tensor, samples: int, seed: int) -> Tensor:
    with torch.inference_mode():
        q = model.encode(x)  # batch shape [M]
        m = x.shape[0]
        _reseed(x.device, _seeds(seed, _MI, 0, 1)[0])
        z, log_own = _draw(q, samples)  # [S, M, D], [S, M]
        log_own = q.log_prob(z) if log_own is None else log_own
        rows = max(1, 2**22 // (samples * m * z.shape[-1]))  # S x rows x M x D values per pass
        log_aggregate = torch.cat(
            [torch.logsumexp(q.log_prob(z[:, i : i + rows, None, :]), -1) for i in range(0, m, rows)], 1
        ) - math.log(m)  # [S, M]: log (1/M) sum_m' q(z | x_m') at each draw
    return (log_own - log_aggregate).mean(0)  # outside inference mode: an ordinary tensor for the caller


def mutual_information(model: LatentVariableModel, x: Tensor, *, samples: int = 10, seed: int = 0) -> Tensor:
    """I(x; z) under the aggregate posterior of the rows of ``x`` ``[M, X]``, per point ``[M]``; the mean estimates it.

    With q(z) = (1/M) sum_m q(z | x_m) the aggregate posterior and x uniform on the M points,

        I(x; z) = E_x E_q(z|x) [log q(z | x) - log q(z)]
                = E_x KL(q(z | x) || p(z)) - KL(q(z) || p(z)),

    the second line the "ELBO surgery" of Hoffman & Johnson (2016): the average rate is the
    information the code carries about x plus the mismatch of the aggregate posterior and
    the prior. Estimated as He et al. (2019) and Dieng et al. (2019) do: ``samples`` draws
    z ~ q(z | x_n) per point, and q(z) the mixture over the M points themselves, so
    I <= log M (each point's own component keeps log q(z) >= log q(z | x_n) - log M); near
    that ceiling the estimate saturates and says "at least". A q(z | x) that does not depend
    on x gives exactly 0. The values per point are not independent (they share q(z)): their
    standard error is a guide, not an exact one.
    """
    if samples < 1:
        raise ElboxError(f"samples must be at least 1, got {samples}.")
    x = _check_data(model, x)
    with _evaluating(model):
        return _mi_values(model, x, samples, seed)


# ----------------------------------------------------------------- the inference-gap split


@dataclass(eq=False)
class Gaps:
    """The inference gap of the encoder split into its two causes (Cremer, Li & Duvenaud 2018).

    For each data point, with q_enc the encoder's q(z | x) and q* the member of the same family
    that maximises this point's ELBO (found by Adam from q_enc):

        log p(x) - L[q_enc] = (log p(x) - L[q*])  +  (L[q*] - L[q_enc])
                              approximation gap      amortization gap

    The approximation gap is the cost of the family (KL(q* || p(z | x))), the amortization gap
    the cost of one encoder for all x. Each is >= 0 up to Monte Carlo error and an incomplete
    optimisation (which makes the amortization gap smaller and the approximation gap larger).

    Attributes (per point, ``[G]``, nats):
        log_px: log p(x) by importance sampling from the equal mixture of q_enc and q*, half
            the particles from each (the balance heuristic; unbiased for p(x), and at most a
            factor 2 worse than the better of the two proposals).
        elbo_encoder, elbo_local: L[q_enc] and L[q*], each the mean log-weight of its half.
        log_px_se, elbo_encoder_se, elbo_local_se: the Monte Carlo standard error of each
            estimate, per point (``log_px_standard_error``; the sd of the log-weights / sqrt(n)).
        trace: ``[steps]``, the mean over points of each step's ELBO of the optimised q:
            its last stretch says whether the optimisation had converged.
        steps, lr, particles: of the optimisation; k: particles of the estimates.
    """

    log_px: Tensor
    elbo_encoder: Tensor
    elbo_local: Tensor
    log_px_se: Tensor
    elbo_encoder_se: Tensor
    elbo_local_se: Tensor
    trace: Tensor
    steps: int
    lr: float
    particles: int
    k: int

    @property
    def approximation(self) -> Tensor:
        return self.log_px - self.elbo_local

    @property
    def amortization(self) -> Tensor:
        return self.elbo_local - self.elbo_encoder

    @property
    def total(self) -> Tensor:
        return self.log_px - self.elbo_encoder

    @property
    def last_gain(self) -> float:
        """How much the mean ELBO of q rose over the last 10% of the steps (from the 10% before)."""
        n = max(1, self.steps // 10)
        if self.steps < 2 * n:
            return math.nan
        return (self.trace[-n:].mean() - self.trace[-2 * n : -n].mean()).item()

    def to_dict(self) -> dict[str, Any]:
        every = max(1, self.steps // 100)
        return {
            "points": int(self.log_px.shape[0]),
            "approximation": Estimate.of(self.approximation).to_dict(),
            "amortization": Estimate.of(self.amortization).to_dict(),
            "total": Estimate.of(self.total).to_dict(),
            "log_px": Estimate.of(self.log_px).to_dict(),
            "elbo_encoder": Estimate.of(self.elbo_encoder).to_dict(),
            "elbo_local": Estimate.of(self.elbo_local).to_dict(),
            "steps": self.steps,
            "lr": self.lr,
            "particles": self.particles,
            "k": self.k,
            "last_gain": self.last_gain,
            "mc_se_median": {
                "log_px": self.log_px_se.median().item(),
                "elbo_encoder": self.elbo_encoder_se.median().item(),
                "elbo_local": self.elbo_local_se.median().item(),
            },
            "trace_every": every,
            "trace": _floats(self.trace[::every]),
        }


def _gap_problem(model: LatentVariableModel) -> str | None:
    """Why the gap split cannot run on this model, or None: it needs one amortized, reparameterized family."""
    family = getattr(model, "encoder", model)  # the hvae has two encoders, no one family
    if getattr(family, "encoder", None) is None or not hasattr(family, "distribution"):
        return (
            "the gap decomposition optimises q's raw parameters per data point, which needs an amortized family "
            f"(an encoder and a distribution of its output); {type(family).__name__} is not one."
        )
    if getattr(family, "categories", None) is not None:  # families.Discrete: hard draws in evaluation
        return ("the gap decomposition optimises q per data point with reparameterized gradients, which discrete "
                "latents do not have.")  # fmt: skip
    return None


def _amortized_family(model: LatentVariableModel) -> Any:
    if (problem := _gap_problem(model)) is not None:
        raise ElboxError(f"{problem} Use gap_points=0 (--gap-points 0) to skip it.")
    return getattr(model, "encoder", model)


def _fit_locally(
    model: LatentVariableModel, family: Any, x: Tensor, raw: Tensor, config: EvaluationConfig
) -> tuple[Tensor, Tensor]:
    """q's raw parameters ``[B, P]`` optimised per point by Adam on the ELBO, starting from ``raw``.

    The points' parameters are separate, so one Adam on the sum of their ELBOs is B separate
    optimisations at once. The learning rate decays linearly to 0 over the steps, so that
    the noisy steps settle on the optimum instead of jittering around it. Gradients are
    "sticking the landing" (Roeder et al. 2017: log q evaluated with its parameters stopped),
    which vanish at the exact posterior; for a flow, whose density at a given point is slow,
    the plain reparameterized gradient along the draw.
    """
    prior = model.prior()
    raw = raw.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([raw], lr=config.gap_lr)
    trace = raw.new_empty(config.gap_steps)
    with torch.enable_grad():
        for step in range(config.gap_steps):
            for group in optimizer.param_groups:
                group["lr"] = config.gap_lr * (1 - step / config.gap_steps)
            q = family.distribution(raw)
            if not q.has_rsample:
                raise ElboxError(f"the gap decomposition needs reparameterized draws; {type(q).__name__} has none.")
            z, log_q = _draw(q, config.gap_particles)
            log_q = family.distribution(raw.detach()).log_prob(z) if log_q is None else log_q
            elbo = (model.decode(z).log_prob(x) + prior.log_prob(z) - log_q).mean(0)  # [B]
            (raw.grad,) = torch.autograd.grad(-elbo.sum(), raw)
            optimizer.step()
            trace[step] = elbo.detach().mean()
    return raw.detach(), trace


def _mixture_half(
    model: LatentVariableModel,
    x: Tensor,
    drawn: Distribution,
    other: Distribution,
    n: int,
    chunk: int,
    seeds: Sequence[int],
) -> tuple[Tensor, Tensor]:
    """n draws from ``drawn``: log-weights against ``drawn`` and against (drawn + other) / 2, ``[n, B]`` each."""
    prior = model.prior()
    own, mixed = [], []
    for z, log_q in _chunks(drawn, n, chunk, seeds, x.device):
        log_joint = model.decode(z).log_prob(x) + prior.log_prob(z)  # [c, B]
        own.append(log_joint - log_q)
        mixed.append(log_joint - torch.logaddexp(log_q, other.log_prob(z)) + math.log(2))
    return torch.cat(own), torch.cat(mixed)


def _mean_se(log_w: Tensor) -> tuple[Tensor, Tensor]:
    """The ELBO estimate (mean log-weight) ``[B]`` and its Monte Carlo standard error ``[B]``."""
    return log_w.mean(0), log_w.std(0) / math.sqrt(log_w.shape[0])


@torch.inference_mode()
def _gap_estimates(
    model: LatentVariableModel,
    x: Tensor,
    q_enc: Distribution,
    q_local: Distribution,
    k: int,
    chunk: int,
    seeds: Sequence[int],
) -> tuple[Tensor, ...]:
    """log p(x), L[q_enc], L[q*] and their Monte Carlo standard errors, each ``[B]``."""
    half = max(2, k // 2)
    own_enc, mixed_enc = _mixture_half(model, x, q_enc, q_local, half, chunk, seeds[: _blocks(half)])
    own_loc, mixed_loc = _mixture_half(model, x, q_local, q_enc, half, chunk, seeds[_blocks(half) :])
    mixed = torch.cat([mixed_enc, mixed_loc])  # [2 half, B]: equal halves from each component
    (elbo_enc, se_enc), (elbo_loc, se_loc) = _mean_se(own_enc), _mean_se(own_loc)
    return log_mean_exp(mixed, 0), elbo_enc, elbo_loc, log_px_standard_error(mixed), se_enc, se_loc


def _gaps(model: LatentVariableModel, x: Tensor, config: EvaluationConfig) -> Gaps:
    family = _amortized_family(model)
    chunk = _chunk_size(model, config.k, min(config.batch_size, x.shape[0]), config)
    results, trace = [], 0.0
    for i, start in enumerate(range(0, x.shape[0], config.batch_size)):
        xb = x[start : start + config.batch_size]
        with torch.no_grad():
            raw = family.encoder(xb)
        _reseed(x.device, _seeds(config.seed, _GAP_FIT, i, 1)[0])
        local, batch_trace = _fit_locally(model, family, xb, raw, config)
        trace = trace + batch_trace * xb.shape[0] / x.shape[0]
        seeds = _seeds(config.seed, _GAP_DRAWS, i, 2 * _blocks(max(2, config.k // 2)))
        results.append(_gap_estimates(model, xb, family.distribution(raw), family.distribution(local), config.k,
                                      chunk, seeds))  # fmt: skip
    estimates = [torch.cat(parts) for parts in zip(*results, strict=True)]
    return Gaps(*estimates, trace, config.gap_steps, config.gap_lr, config.gap_particles, config.k)


def inference_gaps(
    model: LatentVariableModel, x: Tensor, config: EvaluationConfig | None = None, **options: Any
) -> Gaps:
    """Split the encoder's inference gap on the rows of ``x`` ``[G, X]`` into approximation and amortization (``Gaps``).

    For each point, q's raw parameters (the encoder's output) are copied and optimised by
    Adam on that point's ELBO, inside the same family: ``gap_steps`` steps at ``gap_lr``,
    ``gap_particles`` particles per step. Then log p(x), L[q*] and L[q_enc] are estimated with
    ``k`` particles. Options are those of ``EvaluationConfig`` (keywords override ``config``).
    """
    config = replace(config or EvaluationConfig(), **options)
    x = _check_data(model, x)
    with _evaluating(model):
        return _gaps(model, x, config)


# ----------------------------------------------------------------- the evaluation


def _floats(values: Tensor, digits: int = 5) -> list[float | None]:
    """A tensor as JSON numbers, rounded; NaN and infinities (not JSON) as null."""
    return [round(v, digits) if math.isfinite(v) else None for v in values.detach().double().flatten().tolist()]


def _json_safe(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by ``None``: strict JSON has no such numbers."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _share(values: Tensor, above: float) -> float:
    return (values > above).double().mean().item()


@dataclass(eq=False)
class Evaluation:
    """What ``evaluate`` measured on N data points; per-point tensors are ``[N]``, nats per data point.

    Attributes:
        config: the options it ran with.
        source: where the model and data came from (run folder, split, checkpoint), if a run.
        log_px: log p(x) estimates, IWAE_K (``log_likelihood``); ``mc_se``, ``ess``: their
            Monte Carlo standard errors and importance ESS; ``khat``: PSIS k-hat (or ``None``).
        iwae: the IWAE_k curve ``{k: [N]}`` (``iwae_curve``; ``iwae[K]`` is ``log_px``).
        cubo: CUBO_2 from the same K particles: an upper bound on log p(x) only as K -> infinity;
            with finite K its estimate is biased low (and it is never below ``log_px``).
        reconstruction: E_q log p(x | z), the negative distortion (Alemi et al. 2018), from the K particles.
        kl: the rate KL(q(z | x) || p(z)), closed form where there is one, else Monte Carlo.
        kl_per_dimension: ``[N, D]`` for a q and p that factorize over dimensions, else ``None``.
        means: E_q[z | x] ``[N, D]`` (closed form, else the mean of the K particles).
        mutual_information: ``[M]`` (``mutual_information``) on ``config.mi_points`` points.
        gaps: the approximation/amortization split on ``config.gap_points`` points, or ``None``.
        gap_log_px: ``log_px`` (the encoder as the only proposal) on the gap points ``[G]``, to
            compare with ``gaps.log_px`` (q* mixed in): see ``proposal_shortfall``.
        seconds: wall time.
    """

    config: EvaluationConfig
    source: dict[str, Any]
    log_px: Tensor
    mc_se: Tensor
    ess: Tensor
    khat: Tensor | None
    iwae: dict[int, Tensor]
    cubo: Tensor
    reconstruction: Tensor
    kl: Tensor
    kl_per_dimension: Tensor | None
    means: Tensor
    mutual_information: Tensor
    gaps: Gaps | None
    gap_log_px: Tensor | None = None
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for message in (self.collapse_warning, self.proposal_warning):
            if message:
                self.warnings.append(message)

    @property
    def proposal_shortfall(self) -> Estimate | None:
        """How far the encoder-only log p(x) estimate falls below the one with q* mixed in, on the gap points.

        Both are IWAE estimates, lower bounds in expectation; the mixture's proposal holds the
        per-point optimum q*, so where the encoder is a poor proposal (k-hat above 0.7) the
        mixture finds mass the encoder's K particles miss. A shortfall well above zero says the
        headline log p(x) is biased low by about that much: a bound read as an estimate.
        """
        if self.gaps is None or self.gap_log_px is None:
            return None
        return Estimate.of(self.gaps.log_px - self.gap_log_px)

    @property
    def proposal_warning(self) -> str | None:
        """A message when ``proposal_shortfall`` exceeds ``SHORTFALL`` nats by more than 3 standard errors."""
        short = self.proposal_shortfall
        if short is None or not short.mean - 3 * (0.0 if math.isnan(short.se) else short.se) > SHORTFALL:
            return None
        return (
            f"the encoder is a poor importance-sampling proposal: on the {self.gap_log_px.shape[0]} gap points, "
            f"with the per-point optimum q* mixed into the proposal, log p(x) comes out {short:.2f} nats higher "
            f"than with the encoder alone. The log p(x) above is biased low by about that much (it is a "
            "stochastic lower bound, not the value); raise K, or read the gap table's log p(x)."
        )

    @property
    def points(self) -> int:
        return int(self.log_px.shape[0])

    @property
    def elbo(self) -> Tensor:
        """The ELBO per point, reconstruction - KL ``[N]``."""
        return self.reconstruction - self.kl

    @property
    def unit_variances(self) -> Tensor:
        """Cov_x(E_q[z_d | x]) per latent dimension ``[D]`` (``unit_activity``)."""
        return unit_activity(self.means)

    @property
    def active_units(self) -> int:
        return int((self.unit_variances > ACTIVE_THRESHOLD).sum())

    @property
    def collapse_warning(self) -> str | None:
        """A message when the posterior has collapsed: no active unit, or I(x; z) below ``COLLAPSE_MI``."""
        mi, d = self.mutual_information.mean().item(), self.means.shape[1]
        if self.active_units > 0 and mi >= COLLAPSE_MI:
            return None
        return (
            f"posterior collapse: {self.active_units} of {d} latent dimensions are active (Cov_x E_q[z_d | x] > "
            f"{ACTIVE_THRESHOLD}) and I(x; z) = {mi:.3f} nats (threshold {COLLAPSE_MI}). q(z | x) barely depends "
            "on x: the decoder models the data without the latent code, and the ELBO's KL term says nothing. "
            "Try KL warm-up or free bits (--kl-warmup, --free-bits), or a weaker decoder."
        )

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-able data: the summary, and per-point log p(x), its error, ESS and k-hat."""
        k = self.config.k
        log_px = Estimate.of(self.log_px)
        summary = {
            "source": self.source,
            "config": self.config.to_dict(),
            "units": "nats per data point; se is the standard error over data points",
            "points": self.points,
            "log_px": log_px.to_dict() | {"k": k, "mc_se_median": self.mc_se.median().item()},
            "ess": {"median": self.ess.median().item(), "min": self.ess.min().item(), "k": k},
            "psis_khat": None if self.khat is None else {
                "median": self.khat.nanmedian().item(), "max": self.khat.nan_to_num(-math.inf).max().item(),
                f"share_above_{KHAT_THRESHOLD}": _share(self.khat, KHAT_THRESHOLD), "threshold": KHAT_THRESHOLD,
            },
            "bounds": {
                "elbo": self._bound(self.elbo),
                **{f"iwae_{j}": self._bound(v) for j, v in self.iwae.items()},
                "cubo_2": self._bound(self.cubo) | {"note": "an upper bound as K -> infinity; finite K: biased low"},
            },
            "rate": Estimate.of(self.kl).to_dict(),
            "distortion": Estimate.of(-self.reconstruction).to_dict(),
            "kl_per_dimension": None if self.kl_per_dimension is None else _floats(self.kl_per_dimension.mean(0)),
            "active_units": {
                "count": self.active_units, "dimensions": int(self.means.shape[1]), "threshold": ACTIVE_THRESHOLD,
                "variances": _floats(self.unit_variances),
            },
            "mutual_information": Estimate.of(self.mutual_information).to_dict() | {
                "points": int(self.mutual_information.shape[0]), "ceiling": math.log(self.mutual_information.shape[0]),
            },
            "gaps": None if self.gaps is None else self.gaps.to_dict() | {
                "log_px_encoder_proposal": Estimate.of(self.gap_log_px).to_dict(),
                "proposal_shortfall": self.proposal_shortfall._asdict(),
            },
            "warnings": self.warnings,
            "seconds": self.seconds,
            "per_point": {
                "log_px": _floats(self.log_px), "mc_se": _floats(self.mc_se), "ess": _floats(self.ess, 2),
                "psis_khat": None if self.khat is None else _floats(self.khat, 4),
            },
        }  # fmt: skip
        return _json_safe(summary)

    def _bound(self, values: Tensor) -> dict[str, Any]:
        """A bound's mean and SE, with log p(x) - bound (paired over points: a smaller SE than either)."""
        return Estimate.of(values).to_dict() | {"log_px_minus_bound": Estimate.of(self.log_px - values).to_dict()}

    def save(self, path: str | Path) -> Path:
        """Write ``to_dict()`` as JSON, atomically (a crash leaves the old file or the new one)."""
        write_json(path, self.to_dict())
        return Path(path)

    def table(self) -> str:
        """The evaluation as a table for a terminal, every figure with its unit and uncertainty."""
        return "\n".join(_table(self))

    def __str__(self) -> str:
        return self.table()


def _row(label: str, value: str, note: str = "") -> str:
    return f"  {label:<44}{value:>22}  {note}".rstrip()


def _table(e: Evaluation) -> Iterator[str]:
    c, s = e.config, e.source
    where = f"{s['run']} ({s['checkpoint']} checkpoint), {s['split']} split" if s.get("run") else "the data given"
    yield f"Evaluation of {where}: {e.points:,} points, K = {c.k:,} particles each, seed {c.seed}."
    yield "Nats per data point; ± is the standard error over data points."
    yield ""
    yield _row(f"log p(x), importance sampling (K = {c.k:,})", f"{Estimate.of(e.log_px):.3f}")
    yield _row("Monte Carlo error of each point's estimate", f"median {e.mc_se.median():.3f}",
               f"max {e.mc_se.max():.3f} (delta method)")  # fmt: skip
    yield _row("importance ESS per point", f"median {e.ess.median():,.1f}", f"of {c.k:,}; min {e.ess.min():.1f}")
    if e.khat is not None:
        yield _row("PSIS k-hat per point", f"median {e.khat.nanmedian():.2f}",
                   f"{100 * _share(e.khat, KHAT_THRESHOLD):.1f}% of points above {KHAT_THRESHOLD}")  # fmt: skip
    yield ""
    yield _row("bound", "value", f"{'log p(x) - bound':>20}")
    rows = {"ELBO = reconstruction - KL": e.elbo, **{f"IWAE_{j}": v for j, v in e.iwae.items()}, "CUBO_2": e.cubo}
    for label, v in rows.items():
        yield _row(label, f"{Estimate.of(v):.3f}", f"{Estimate.of(e.log_px - v):.3f}".rjust(20))
    yield "  IWAE_k: the mean over disjoint groups of k of the K particles; IWAE_K is the log p(x) estimate."
    yield "  CUBO_2 bounds log p(x) from above only as K -> infinity; its K-particle estimate is biased low."
    yield ""
    yield "rate and distortion (Alemi et al. 2018)"
    yield _row("rate: KL(q(z | x) || p(z))", f"{Estimate.of(e.kl):.3f}")
    yield _row("distortion: -E_q log p(x | z)", f"{Estimate.of(-e.reconstruction):.3f}")
    if e.kl_per_dimension is not None:
        per_dim = e.kl_per_dimension.mean(0).sort(descending=True).values
        shown = " ".join(f"{v:.2f}" for v in per_dim[:8].tolist()) + (" ..." if per_dim.numel() > 8 else "")
        yield _row("KL per dimension, largest first", shown)
    d = e.means.shape[1]
    yield _row(f"active units (Cov_x E_q[z_d | x] > {ACTIVE_THRESHOLD})", f"{e.active_units} of {d}")
    m = e.mutual_information.shape[0]
    ceiling = f"log {m:,} = {math.log(m):.2f}"
    # near the estimator's ceiling it says "at least"
    note = (
        f"(at the ceiling {ceiling}: at least this)"
        if e.mutual_information.mean() > math.log(m) - 0.1
        else f"(at most {ceiling})"
    )
    yield _row(f"I(x; z), aggregate posterior of {m:,} points", f"{Estimate.of(e.mutual_information):.3f}", note)
    if e.gaps is not None:
        yield from _gap_rows(e.gaps)
        yield _row("log p(x) here, encoder alone as proposal", f"{Estimate.of(e.gap_log_px):.3f}")
        yield _row("log p(x) here, encoder and q* as proposal", f"{Estimate.of(e.gaps.log_px):.3f}",
                   f"higher by {e.proposal_shortfall:.3f}")  # fmt: skip
    for message in e.warnings:
        yield ""
        yield f"warning: {message}"


def _gap_rows(g: Gaps) -> Iterator[str]:
    yield ""
    yield (
        f"inference gaps (Cremer, Li & Duvenaud 2018) on {g.log_px.shape[0]:,} points: q* = q optimised per point "
        f"in the same family ({g.steps} Adam steps, lr {g.lr:g}, {g.particles} particles)"
    )
    yield _row("total: log p(x) - ELBO(q_encoder)", f"{Estimate.of(g.total):.3f}")
    yield _row("approximation: log p(x) - ELBO(q*)", f"{Estimate.of(g.approximation):.3f}")
    yield _row("amortization: ELBO(q*) - ELBO(q_encoder)", f"{Estimate.of(g.amortization):.3f}")
    yield f"  the last 10% of the steps raised the mean ELBO(q*) by {g.last_gain:.4f} nats"


def _load(
    source: "LatentVariableModel | Run | str | Path", x: Tensor | None, config: EvaluationConfig
) -> tuple[LatentVariableModel, Tensor, dict]:
    """The model, the data and a description of where they came from."""
    if isinstance(source, torch.nn.Module):  # a VAE or a HierarchicalVAE
        if x is None:
            raise ElboxError("evaluating a model needs the data: evaluate(model, x).")
        return source, x, {}
    run = source if isinstance(source, Run) else load_run(source, config.checkpoint)
    checkpoint = config.checkpoint if not isinstance(source, Run) else "as loaded"
    described = {"run": str(run.path), "split": config.split, "checkpoint": checkpoint}
    if x is None:
        x = _split(run, config)
    else:
        described["split"] = "given"
    return run.model, x, described


def _split(run: Run, config: EvaluationConfig) -> Tensor:
    """The run's split, binarized as in training; a dynamically binarized train split is drawn once from ``seed``."""
    from .runs import load_splits

    x = load_splits(run.config)[1][config.split]
    if config.split == "train" and run.config.binarize == "dynamic":
        x = binarize(x, torch.Generator().manual_seed(config.seed))
    return x


def evaluate(
    source: "LatentVariableModel | Run | str | Path",
    x: Tensor | None = None,
    config: EvaluationConfig | None = None,
    *,
    progress: bool | None = False,
    **options: Any,
) -> Evaluation:
    """Evaluate a trained VAE honestly: log p(x) with error bars, bounds, rate, distortion, gaps.

    Args:
        source: a VAE (then give ``x``), a loaded ``Run``, or a run folder (loaded at
            ``config.checkpoint``).
        x: data ``[N, X]``; for a run, ``None`` takes its ``config.split`` (binarized as in training).
        config: an ``EvaluationConfig``; keyword ``options`` override its fields.
        progress: a progress bar over the points; ``None`` shows one only on a terminal.

    One pass of K particles per point gives log p(x), its Monte Carlo error, the ESS, PSIS
    k-hat, the IWAE_k curve, CUBO_2, rate, distortion and the posterior means; the mutual
    information and the gap split use subsets spread through the data. Nothing is written:
    ``Evaluation.save`` writes ``evaluation.json``. The caller's random state is left as it was.
    Under torchrun (``torchrun --nproc_per_node N -m elbox evaluate RUN``) the log p(x) pass
    splits its batches over the processes; each batch draws from its own seeds, so the numbers
    are those of one process. The mutual information and the gap split run on every process.

    >>> from elbox import VAE, VAEConfig
    >>> vae = VAE(VAEConfig(data_dim=4, latent_dim=2, hidden=(8,), likelihood="bernoulli"))
    >>> x = torch.bernoulli(torch.full((20, 4), 0.5))
    >>> e = evaluate(vae, x, k=50, gap_points=4, gap_steps=20)
    >>> sorted(e.iwae), e.gaps.approximation.shape, e.active_units <= 2
    ([1, 5, 50], torch.Size([4]), True)
    >>> print(e.table())  # doctest: +ELLIPSIS
    Evaluation of the data given: 20 points, K = 50 particles each, seed 0.
    ...
    """
    config = replace(config or EvaluationConfig(), **options)
    started = time.perf_counter()
    model, x, described = _load(source, x, config)
    if getattr(model, "needs_labels", False):
        raise ElboxError(
            f"elbox evaluate estimates log p(x) of an unconditional VAE; this model ({model.config.model}) is given "
            "a class label. Its ELBO given the labels is in the run's summary (run.json); estimate log p(x | y) "
            "with elbox.bounds.iwae(model.log_weights(x, 5000, y)) over batches of x."
        )
    x = _check_data(model, x)
    init(_device(model))  # under torchrun: the log p(x) pass splits its batches over the processes
    with _evaluating(model):
        stats = _pass(model, x, config, khat=config.khat, progress=progress)
        mi = _mi_values(model, spread(x, config.mi_points), config.mi_samples, config.seed)
        gap_index = spread_index(x.shape[0], config.gap_points)
        problem = _gap_problem(model) if config.gap_points else None  # evaluate the rest, and say why not this
        gaps = _gaps(model, x[gap_index], config) if config.gap_points and problem is None else None
    return Evaluation(
        config=config, source=described | {"points": x.shape[0]}, log_px=stats["log_px"], mc_se=stats["mc_se"],
        ess=stats["ess"], khat=stats.get("khat"), iwae={j: stats[f"iwae_{j}"] for j in config.ks}, cubo=stats["cubo"],
        reconstruction=stats["reconstruction"], kl=stats["kl"], kl_per_dimension=stats.get("kl_dims"),
        means=stats["mean"], mutual_information=mi, gaps=gaps, gap_log_px=stats["log_px"][gap_index] if gaps else None,
        seconds=time.perf_counter() - started, warnings=[f"the gap split was skipped: {problem}"] if problem else [],
    )  # fmt: skip

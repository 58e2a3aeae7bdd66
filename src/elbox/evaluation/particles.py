"""The one source of the evaluation's log-weights: K particles per point as ``bounds.Particles``, in chunks.

For a batch of B points x ``[B, X]`` and q = q(z | x) (batch shape ``[B]``), ``particles`` draws
K particles z_kb ~ q(z | x_b) and yields them chunk by chunk as ``bounds.Particles`` (z
``[c, B, D]``, log p(x | z) ``[c, B]``), so that each chunk's

    log_w[k, b] = log p(x_b | z_kb) + log p(z_kb) - log q(z_kb | x_b)        # [c, B]

is ``Particles.log_w``, the same structure the training bounds read (DESIGN.md). Seeded draws
come in blocks of ``BLOCK`` particles, block j under the j-th seed of its stream, so that the
chunk size (memory) never changes the numbers. Also here: the seeds, the memory budget of a
chunk, and the model's evaluation mode with the caller's random state kept.
"""

import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution

from ..bounds import Particles
from ..errors import ElboxError
from ..models import LatentVariableModel, latent_floats

if TYPE_CHECKING:
    from .config import EvaluationConfig

__all__ = [
    "BLOCK",
    "STREAM_GAP_DRAWS",
    "STREAM_GAP_FIT",
    "STREAM_LOG_W",
    "STREAM_MI",
    "blocks",
    "check_data",
    "chunk_size",
    "decoder_log_lik",
    "device_of",
    "draw",
    "evaluating",
    "particles",
    "reseed",
    "stream_seeds",
]

BLOCK = 100  # particles drawn under one seed: a chunk is whole blocks, so its size never changes the draws

# streams of seeds, one per use, so that no two draws share random numbers
STREAM_LOG_W, STREAM_GAP_FIT, STREAM_GAP_DRAWS, STREAM_MI = range(4)

LogLik = Callable[[Tensor, Tensor], Tensor]  # (z [c, B, D], x [B, X]) -> log p(x | z) [c, B]


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """The model in evaluation mode, the caller's random state saved and restored around the block."""
    device, training = device_of(model), model.training
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    model.eval()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        model.train(training)


def check_data(model: LatentVariableModel, x: Tensor) -> Tensor:
    """``x`` ``[N, X]`` checked against the model and moved to its device and dtype."""
    if x.ndim != 2 or x.shape[0] < 1:
        raise ElboxError(f"evaluation needs data of shape [N, X] with N >= 1, got {list(x.shape)}.")
    model.check(x, "evaluation")
    parameter = next(model.parameters())
    return x.to(device=parameter.device, dtype=parameter.dtype)


def stream_seeds(seed: int, stream: int, index: int, n: int) -> list[int]:
    """n seeds for one batch of one use (``stream``), well mixed (numpy's SeedSequence)."""
    return np.random.SeedSequence([seed, stream, index]).generate_state(n, np.uint64).tolist()


def reseed(device: torch.device, seed: int) -> None:
    if device.type == "cpu":
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


def draw(q: Distribution, n: int) -> tuple[Tensor, Tensor | None]:
    """n draws ``[n, B, D]`` from q, with log q ``[n, B]`` where a flow computes it along the draw."""
    if hasattr(q, "rsample_and_log_prob"):
        return q.rsample_and_log_prob((n,))
    return (q.rsample((n,)) if q.has_rsample else q.sample((n,))), None


def blocks(k: int) -> int:
    """Blocks of ``BLOCK`` particles (the last one shorter) that make up k particles."""
    return math.ceil(k / BLOCK)


def decoder_log_lik(model: LatentVariableModel, z: Tensor, x: Tensor) -> Tensor:
    """log p(x | z) ``[c, B]`` for z ``[c, B, D]`` and x ``[B, X]``: the decoder pass, where the time goes."""
    return model.decode(z).log_prob(x)


def _chunks(
    q: Distribution, k: int, chunk: int, seeds: Sequence[int], device: torch.device
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """K draws from q in chunks of ``chunk`` particles (whole blocks): ``(z [c, B, D], log q [c, B] or None)``.

    Block j of ``BLOCK`` particles is drawn under ``seeds[j]``, so the draws are the same
    whatever the chunk size: chunking bounds memory and changes nothing else.
    """
    sizes = [min(BLOCK, k - start) for start in range(0, k, BLOCK)]
    per_chunk = max(1, chunk // BLOCK)
    for first in range(0, len(sizes), per_chunk):
        zs, log_qs = [], []
        for j in range(first, min(first + per_chunk, len(sizes))):
            reseed(device, seeds[j])
            z, log_q = draw(q, sizes[j])
            zs.append(z)
            log_qs.append(log_q)
        yield torch.cat(zs), (torch.cat(log_qs) if log_qs[0] is not None else None)


def particles(
    q: Distribution,
    prior: Distribution,
    x: Tensor,
    k: int,
    log_lik: LogLik,
    *,
    chunk: int | None = None,
    seeds: Sequence[int] | None = None,
    q_stopped: Distribution | None = None,
) -> Iterator[Particles]:
    """K particles per point of ``x`` ``[B, X]`` from q (batch shape ``[B]``), as ``Particles`` of c particles each.

    Args:
        q, prior: q(z | x) and p(z); ``log_lik(z, x)`` gives log p(x | z) ``[c, B]``.
        k: particles per point.
        chunk: particles per chunk, whole blocks of ``BLOCK`` (``None``: all K in one).
        seeds: ``blocks(k)`` seeds, block j drawn under ``seeds[j]``: the draws are the same
            whatever ``chunk``. ``None`` draws all K at once from the current random state
            (each step of an optimisation, whose one seed is set before its first step).
        q_stopped: q with its parameters detached, for log q where the draw does not give it
            (the "sticking the landing" gradient, Roeder et al. 2017).

    Each chunk's ``log_w`` ``[c, B]`` is log p(x | z) + log p(z) - log q(z | x), log q taken
    from the draw where a flow computes it there, else from q (or ``q_stopped``) at z.
    """
    drawn = [draw(q, k)] if seeds is None else _chunks(q, k, chunk or blocks(k) * BLOCK, seeds, x.device)
    for z, log_q in drawn:  # [c, B, D], [c, B] or None
        yield _particles(z, log_q, x, q, prior, log_lik, q_stopped)


def _particles(
    z: Tensor,
    log_q: Tensor | None,
    x: Tensor,
    q: Distribution,
    prior: Distribution,
    log_lik: LogLik,
    q_stopped: Distribution | None,
) -> Particles:
    """``Particles`` of the draws z ``[c, B, D]``, log q ``[c, B]`` evaluated before the decoder.

    The order is that of the gradients' sum: z's gradient gathers from log q, the decoder and
    the prior, and autograd adds them in the reverse order of their evaluation. Log q first,
    then log p(x | z), then log p(z) (on first use of ``log_w``) keeps the per-point fits of the
    gap split bitwise what they have always been.
    """
    stopped = q_stopped if log_q is None else None  # a flow's log q along the draw is the live one
    first = (q if stopped is None else stopped).log_prob(z) if log_q is None else log_q  # [c, B]
    p = Particles(z, log_lik(z, x), q, prior, q_stopped=stopped, log_q_drawn=log_q)
    p.log_q = first  # fills the cached property with the value it would compute
    return p


def _bytes_per_particle(model: LatentVariableModel) -> int:
    """Rough peak bytes of one particle of one data point through the decoder and the likelihood.

    Without autograd only a layer or two are alive at once; the likelihood's output and its
    temporaries are the largest (three of width m X, m its outputs per dimension), and a conv
    decoder's feature maps (up to channels x X each).
    """
    c = model.config
    itemsize = next(model.parameters()).element_size()
    width = model.likelihood.widths(c.data_dim)[1]  # the decoder's outputs per data point
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


def chunk_size(model: LatentVariableModel, k: int, batch: int, config: "EvaluationConfig") -> int:
    """Particles per decoder pass for batches of ``batch`` points: whole blocks, at most K (rounded up).

    Without a fixed ``chunk``, as many as ``max_memory`` holds, and no more than a quarter of
    the memory free on the device: large chunks make large matrix products (the fast way
    through the decoder), but never at the price of swapping.
    """
    if config.chunk is not None:
        chunk = blocks(config.chunk) * BLOCK
    else:
        available = _available_memory(device_of(model))
        budget = config.max_memory if available is None else min(config.max_memory, max(available / 4, 64 * 2**20))
        chunk = int(budget // (batch * _bytes_per_particle(model))) // BLOCK * BLOCK
        if chunk < BLOCK:
            need = BLOCK * batch * _bytes_per_particle(model) / 2**20
            raise ElboxError(
                f"max_memory of {config.max_memory / 2**20:.1f} MiB holds fewer than {BLOCK} particles for "
                f"batches of {batch} data points (that needs about {need:.1f} MiB); raise --max-memory or "
                "lower --batch-size."
            )
    return min(chunk, blocks(k) * BLOCK)

"""How to evaluate: ``EvaluationConfig``, written out beside the results."""

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ElboxError
from ..fields import option

__all__ = ["COMPILE_ABOVE", "KS", "PRECISIONS", "EvaluationConfig"]

KS = (1, 5, 50, 500, 5000)  # the IWAE_k curve
PRECISIONS = ("fp32", "bf16")
COMPILE_ABOVE = 2_000_000  # particle-points (400 images at K = 5000): a pass of about 10 s on 2 cores


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

    split: str = option("test", "Which inputs: train, valid or test.")
    checkpoint: str = option("last", "Which weights: last (end of training) or best (validation).")
    k: int = option(5000, "Particles per data point for the log p(x) estimate (IWAE_K).")
    ks: tuple[int, ...] = KS
    chunk: int | None = option(None, "Particles per decoder pass (default: as many as --max-memory holds).")
    max_memory: float = 512 * 2**20
    batch_size: int = option(100, "Data points per pass.")
    seed: int = option(0, "Seed of every draw.")
    gap_points: int = option(100, "Points of the approximation / amortization gap split; 0 skips it.")
    gap_steps: int = option(500, "Adam steps of the per-point optimisation of q.")
    gap_lr: float = 1e-2
    gap_particles: int = 10
    mi_points: int = option(1000, "Points whose q(z | x) make the aggregate posterior.")
    mi_samples: int = 10
    khat: bool = True
    compile: bool | None = option(
        None, "Compile the decoder pass (torch.compile; default: from 2 million particle-points)."
    )
    precision: str = option("fp32", "fp32, or bf16 for the decoder's matrix products in bfloat16 (opt-in).")

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
        if not self.max_memory > 0:
            problems.append(f"max_memory (--max-memory, in MiB at the command line) must be positive, got "
                            f"{self.max_memory / 2**20:g} MiB")  # fmt: skip
        if not self.gap_lr > 0:
            problems.append(f"gap_lr must be positive, got {self.gap_lr}")
        if self.k == 1:  # one weight: its log is the ELBO, and no spread to give the error or k-hat
            problems.append("k (--k) must be at least 2 for a log p(x) estimate: with one particle the estimate is the "
                            "ELBO itself, with no Monte Carlo error or k-hat to compute; give --k 1000 or more")
        if problems:
            raise ElboxError("invalid evaluation options: " + "; ".join(problems) + ".")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ks": list(self.ks)}

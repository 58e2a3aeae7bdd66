"""The configuration of a latent-variable model: ``VAEConfig``, its validation, and the names of
the model kinds (``MODELS``) and networks (``NETWORKS``)."""

import math
from dataclasses import asdict, dataclass, field, fields

from ..catalogue import suggest
from ..errors import ElboxError
from ..families import DISCRETE, check_family_name, family_names
from ..fields import option
from ..likelihoods import LIKELIHOODS, TABLE
from ..networks import ACTIVATIONS
from ..priors import check_prior_name

__all__ = ["MODELS", "NETWORKS", "VAEConfig", "latent_floats"]

MODELS = ("vae", "cvae", "vib", "hvae")  # the kinds --model takes; elbox.models.MODEL_KINDS maps each to its class
NETWORKS = ("mlp", "conv")


@dataclass
class VAEConfig:
    """Everything that defines a VAE's architecture; written out as ``config.json["model"]``.

    Attributes:
        data_dim: X, the size of one (flattened) data point; filled in from the data.
        latent_dim: D.
        hidden: widths of the encoder's hidden layers; the decoder mirrors them.
        activation: one of ``networks.ACTIVATIONS``.
        likelihood: ``bernoulli``, ``binomial``, ``gaussian``, ``continuous-bernoulli``,
            ``gaussian-pixel``, ``logistic``, ``categorical`` (``likelihoods.make_likelihood``), or
            ``auto`` (chosen from the data: binary -> bernoulli, n + 1 grey levels -> binomial,
            else gaussian).
        levels: n for the binomial, logistic and categorical likelihoods; filled in from the data.
        gaussian_scale: a fixed scale for the gaussian likelihood, or ``None`` to learn it.
        min_scale: the floor of q's standard deviations.
        family: q's family: ``diagonal``, ``fullrank``, ``lowrank[:R]``, a flow ``iaf|maf|nsf|realnvp[:L]``,
            ``mixture[:K]``, or discrete latents ``bernoulli`` / ``categorical[:C]`` (``families.make_family``).
        network: ``mlp``, or ``conv`` for images: strided convolutions before the encoder's
            hidden layers, transposed convolutions after the decoder's (``networks.ConvEncoder``,
            ``networks.ConvDecoder``).
        channels: the conv encoder's channels per layer; the decoder mirrors them.
        image_shape: (H, W) of the conv network's images; filled in from the data.
        model: ``vae``; ``cvae``, the conditional VAE (``VAE`` given a class label y); or ``vib``,
            the deep variational information bottleneck classifier (``VIB``).
        classes: C, the number of class labels (cvae, vib); filled in from the data's labels.
        class_prior: a cvae's prior p(z | y), one learned Gaussian per class, instead of N(0, I).
        temperature: tau of the Gumbel-softmax relaxation of discrete latents.
        straight_through: discrete latents drawn hard in the forward pass, with the relaxed
            draw's gradient (``families.GumbelDiscrete``).
        prior: p(z) (of the top layer for ``hvae``): ``standard``, ``mog[:K]`` (a learned
            mixture of K Gaussians, default 10) or ``vamp[:K]`` (the VampPrior, K pseudo-inputs,
            default 500); ``priors.make_prior``. For ``vae`` and ``hvae``; the VampPrior needs
            the diagonal family.
        top_latent_dim: for ``model="hvae"`` (two stochastic layers, ``hierarchical``, whose
            ``latent_dim`` and ``hidden`` are the bottom layer's): the top layer's size; default
            half of ``latent_dim``.
        top_hidden: the widths between the two layers for ``hvae``; default half of ``hidden``.
            Burda et al.'s 784-200-200-100-100-100-50 is ``latent_dim=100`` with the defaults.
        columns: for ``likelihood="table"``, each column's likelihood (``likelihoods.Table``); filled in from
            a table's schema (``data.tables``).
        noise_rank: for a table, the rank R of the continuous columns' shared noise given z
            (``distributions.CorrelatedNormal``: W W^T + diag); 0, the default, keeps them independent.
    """

    data_dim: int | None = None
    latent_dim: int = option(2, "Latent dimensions D.")
    hidden: tuple[int, ...] = option((200, 200), "Hidden widths, e.g. 200,200; the decoder mirrors them.")
    activation: str = option("tanh", "tanh, relu, elu, gelu or softplus.")
    likelihood: str = option(
        "auto",
        "auto, bernoulli, binomial, gaussian, gaussian-pixel (a scale per pixel), continuous-bernoulli, "
        "logistic (discretized), categorical, poisson, negative-binomial or zinb (counts).",
    )
    levels: int | None = option(None, "Grey levels minus one, for binomial, logistic, categorical (from the data).")
    gaussian_scale: float | None = option(None, "Fixed scale of the gaussian likelihood (learned if unset).")
    min_scale: float = field(default=1e-4)
    family: str = option("diagonal", f"q's family: {family_names()}.")
    network: str = option("mlp", "mlp, or conv (convolutional encoder and decoder, for images).")
    channels: tuple[int, ...] = option((32, 64), "Conv channels per layer, e.g. 32,64; the decoder mirrors them.")
    image_shape: tuple[int, ...] | None = option(None, "H,W of the images for --network conv (from the data).")
    model: str = option(
        "vae",
        "vae; cvae (conditioned on the data's labels); vib (a classifier with a stochastic encoder, trained "
        "with cross-entropy + beta KL); hvae (two stochastic layers, Burda et al. 2016; --latent-dim is "
        "z1's); or vamp (vae with --prior vamp).",
    )
    classes: int | None = None
    class_prior: bool = option(False, "cvae: a learned Gaussian prior p(z | y) per class.")
    temperature: float = option(0.5, "Gumbel-softmax temperature of discrete latents.")
    straight_through: bool = option(False, "Discrete latents: hard draws forward, relaxed gradients backward.")
    prior: str = option(
        "standard",
        "p(z): standard, mog[:K] (learned mixture, K=10) or vamp[:K] (VampPrior, K=500 pseudo-inputs).",
    )
    top_latent_dim: int | None = option(None, "hvae: z2's dimensions (default: half of z1's).")
    top_hidden: tuple[int, ...] | None = option(None, "hvae: widths between z1 and z2 (default: half of --hidden).")
    columns: tuple[str, ...] | None = None
    noise_rank: int = option(0, "A table's continuous columns: rank of their noise's correlation given z (0: none).")

    def __post_init__(self) -> None:
        self.hidden, self.channels = tuple(self.hidden), tuple(self.channels)
        self.columns = None if self.columns is None else tuple(self.columns)
        self.image_shape = None if self.image_shape is None else tuple(self.image_shape)
        problems = []
        if self.latent_dim < 1:
            problems.append(f"latent_dim must be at least 1, got {self.latent_dim}")
        if any(h < 1 for h in self.hidden):
            problems.append(f"hidden widths must be positive, got {list(self.hidden)}")
        if self.activation not in ACTIVATIONS:
            problems.append(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if self.likelihood not in (*LIKELIHOODS, TABLE, "auto"):
            problems.append(f"likelihood must be auto or one of {LIKELIHOODS}, got {self.likelihood!r}")
        try:
            check_family_name(self.family)
        except ValueError as e:
            problems.append(str(e))
        if self.gaussian_scale is not None and not 0 < self.gaussian_scale < math.inf:
            problems.append(f"gaussian_scale must be positive and finite, got {self.gaussian_scale}")
        if self.noise_rank < 0:
            problems.append(f"noise_rank must be 0 (independent columns) or more, got {self.noise_rank}")
        if not 0 < self.min_scale < math.inf:
            problems.append(f"min_scale must be positive and finite, got {self.min_scale}")
        problems += self._network_problems() + self._zoo_problems() + self._latent_problems()
        if problems:
            raise ElboxError("invalid model options: " + "; ".join(problems) + ".")

    def _network_problems(self) -> list[str]:
        problems = []
        if self.network not in NETWORKS:
            problems.append(f"network must be one of {NETWORKS}, got {self.network!r}")
        if not self.channels or any(c < 1 for c in self.channels):
            problems.append(f"channels must be one or more positive widths, got {list(self.channels)}")
        shape = self.image_shape
        if shape is not None and (len(shape) != 2 or any(s < 1 for s in shape)):
            problems.append(f"image_shape must be two positive sides (H, W), got {list(shape)}")
        elif shape is not None and self.data_dim is not None and shape[0] * shape[1] != self.data_dim:
            problems.append(f"image_shape {list(shape)} holds {shape[0] * shape[1]} pixels, but the data have "
                            f"{self.data_dim} values per row")  # fmt: skip
        return problems

    def _zoo_problems(self) -> list[str]:
        problems = []
        if self.model not in MODELS:
            problems.append(f"model must be one of {MODELS}, got {self.model!r}{suggest(self.model, MODELS)}")
        if self.classes is not None and self.classes < 2:
            problems.append(f"classes must be at least 2, got {self.classes}")
        if self.class_prior and self.model != "cvae":
            problems.append("class_prior is the prior p(z | y) of a conditional VAE: use it with --model cvae")
        if not 0 < self.temperature < math.inf:
            problems.append(f"temperature must be positive and finite, got {self.temperature}")
        if self.model == "cvae" and self.network == "conv":
            problems.append(
                "a conditional VAE appends the label to the encoder's input rows, which convolutions "
                "do not take: use --network mlp with --model cvae"
            )
        if self.class_prior and self.family.partition(":")[0] in DISCRETE:
            problems.append("class_prior is a Gaussian per class; discrete latents have a uniform prior")
        return problems

    def _latent_problems(self) -> list[str]:
        """Check the prior and the hvae's options; fill in the top layer of an ``hvae``."""
        problems = []
        try:
            kind, _ = check_prior_name(self.prior)
        except ValueError as e:
            problems.append(str(e))
            kind = None
        if kind not in (None, "standard") and self.model not in ("vae", "hvae"):
            problems.append(f"the learned priors are for --model vae or hvae, not {self.model}")
        if self.model == "hvae":
            if self.family != "diagonal":
                problems.append(f"the hvae's q(z1 | x) q(z2 | z1) are diagonal Gaussians: use --family diagonal, "
                                f"not {self.family}")  # fmt: skip
            if self.network != "mlp":
                problems.append(f"the hvae is built of MLPs: use --network mlp, not {self.network}")
            if self.top_latent_dim is None:
                self.top_latent_dim = max(1, math.ceil(self.latent_dim / 2))
            if self.top_hidden is None:
                self.top_hidden = tuple(max(1, h // 2) for h in self.hidden)
            self.top_hidden = tuple(self.top_hidden)
            if self.top_latent_dim < 1 or any(h < 1 for h in self.top_hidden):
                problems.append(f"top_latent_dim and top_hidden must be positive, got {self.top_latent_dim} and "
                                f"{list(self.top_hidden)}")  # fmt: skip
        elif self.top_latent_dim is not None or self.top_hidden is not None:
            problems.append("top_latent_dim and top_hidden shape the second layer of --model hvae; this model has one")
        if kind == "vamp" and self.family != "diagonal":
            problems.append(f"the VampPrior is a mixture of the encoder's diagonal Gaussians: use --family diagonal, "
                            f"not {self.family}")  # fmt: skip
        return problems

    @property
    def discrete(self) -> bool:
        """Whether the latents are discrete (``bernoulli`` or ``categorical`` family)."""
        return self.family.partition(":")[0] in DISCRETE

    def to_dict(self) -> dict:
        shape = None if self.image_shape is None else list(self.image_shape)
        top = None if self.top_hidden is None else list(self.top_hidden)
        columns = None if self.columns is None else list(self.columns)
        return {**asdict(self), "hidden": list(self.hidden), "channels": list(self.channels), "image_shape": shape,
                "top_hidden": top, "columns": columns}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> "VAEConfig":
        known = {f.name for f in fields(cls)}
        if unknown := set(d) - known:
            hints = "".join(suggest(k, known) for k in sorted(unknown))
            raise ElboxError(f"unknown model options {sorted(unknown)}{hints}; known: {sorted(known)}.")
        return cls(**d)


def latent_floats(config: VAEConfig) -> int:
    """Rough floats per particle and data point that the latent side adds to a pass without autograd.

    A learned prior's log density forms every component's, ``[K, B, M]`` a few times over (in
    float64); an ``hvae`` adds its top layer's networks and draws.
    """
    d = config.top_latent_dim if config.model == "hvae" else config.latent_dim
    _, components = check_prior_name(config.prior)
    floats = 8 * (components or 0) + 4 * d
    if config.model == "hvae":
        floats += 4 * sum(config.top_hidden) + 6 * (config.latent_dim + d)
    return floats

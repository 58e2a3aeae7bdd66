"""elbox: variational inference that says how wrong it may be.

Train a VAE, look at what it learned, and load it back:

>>> import elbox, tempfile
>>> run = elbox.train(data="digits", latent_dim=2, epochs=3, out=tempfile.mkdtemp(), progress=False)
>>> again = elbox.load_run(run.path)
>>> again.model.sample(4).shape
torch.Size([4, 64])

The package face is lazy (PEP 562): ``import elbox`` loads nothing heavy, and each public name
is imported from its module on first use, so that ``elbox --help`` and ``elbox fit`` do not pay
for the VAE stack, and ``elbox.bayes`` does not pay for training. ``elbox.train`` and
``elbox.resume`` come with the default hooks installed (``elbox.hooks``: the figures and
TensorBoard, which ``training/``, a lower layer, does not import).
"""

from typing import TYPE_CHECKING

from ._lazy import lazy_face
from ._version import __version__ as __version__

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time ``__getattr__`` imports on demand
    from .bounds import CUBO, ELBO, IWAE, Bound, Objective, Particles, RenyiBound, cubo, elbo, iwae, log_weights, renyi
    from .errors import ElboxError
    from .evaluation import Evaluation, EvaluationConfig, evaluate, log_likelihood
    from .models import VAE, HierarchicalVAE, VAEConfig
    from .runs import Run, load_run
    from .training import TrainConfig, resume, train

# public name -> the module that defines it
_MODULES = {
    **dict.fromkeys(
        (
            "CUBO",
            "ELBO",
            "IWAE",
            "Bound",
            "Objective",
            "Particles",
            "RenyiBound",
            "cubo",
            "elbo",
            "iwae",
            "log_weights",
            "renyi",
        ),
        "bounds",
    ),
    **dict.fromkeys(("ElboxError",), "errors"),
    **dict.fromkeys(("Evaluation", "EvaluationConfig", "evaluate", "log_likelihood"), "evaluation"),
    **dict.fromkeys(("VAE", "HierarchicalVAE", "VAEConfig"), "models"),
    **dict.fromkeys(("Run", "load_run"), "runs"),
    **dict.fromkeys(("TrainConfig", "resume", "train"), "training"),
}

__all__ = [
    "CUBO",
    "ELBO",
    "IWAE",
    "VAE",
    "Bound",
    "ElboxError",
    "Evaluation",
    "EvaluationConfig",
    "HierarchicalVAE",
    "Objective",
    "Particles",
    "RenyiBound",
    "Run",
    "TrainConfig",
    "VAEConfig",
    "cubo",
    "elbo",
    "evaluate",
    "iwae",
    "load_run",
    "log_likelihood",
    "log_weights",
    "renyi",
    "resume",
    "train",
]


def _install_hooks(name: str) -> None:
    if name in ("train", "resume"):  # a run from the package face draws its figures, as `elbox train` does
        from .hooks import install_default_hooks

        install_default_hooks()


__getattr__, __dir__ = lazy_face(__name__, _MODULES, __all__, _install_hooks)

"""elbox: variational inference that says how wrong it may be.

Train a VAE, look at what it learned, and load it back:

>>> import elbox, tempfile
>>> run = elbox.train(data="digits", latent_dim=2, epochs=3, out=tempfile.mkdtemp(), progress=False)
>>> again = elbox.load_run(run.path)
>>> again.model.sample(4).shape
torch.Size([4, 64])
"""

from ._version import __version__ as __version__
from .bounds import CUBO, ELBO, IWAE, Bound, Objective, Particles, RenyiBound, cubo, elbo, iwae, log_weights, renyi
from .errors import ElboxError
from .evaluation import Evaluation, EvaluationConfig, evaluate, log_likelihood
from .hooks import DEFAULT_HOOKS
from .models import VAE, HierarchicalVAE, VAEConfig
from .runs import Run, load_run
from .train import TrainConfig, resume, set_default_hooks, train

set_default_hooks(DEFAULT_HOOKS)  # figures and TensorBoard, which train/ (a lower layer) does not import

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

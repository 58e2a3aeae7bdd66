"""elbox: variational inference that says how wrong it may be.

Train a VAE, look at what it learned, and load it back:

>>> import elbox, tempfile
>>> run = elbox.train(data="digits", latent_dim=2, epochs=3, out=tempfile.mkdtemp(), progress=False)
>>> again = elbox.load_run(run.path)
>>> again.model.sample(4).shape
torch.Size([4, 64])
"""

__version__ = "0.1.0"  # before the imports: training records it in every run

from .bounds import ELBO, Bound, Particles, elbo, iwae, log_weights
from .config import TrainConfig
from .errors import ElboxError
from .models import VAE, VAEConfig
from .runs import Run, load_run
from .training import resume, train

__all__ = [
    "ELBO",
    "VAE",
    "Bound",
    "ElboxError",
    "Particles",
    "Run",
    "TrainConfig",
    "VAEConfig",
    "elbo",
    "iwae",
    "load_run",
    "log_weights",
    "resume",
    "train",
]

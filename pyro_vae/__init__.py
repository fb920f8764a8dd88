"""pyro_vae: variational autoencoders written the Pyro way.

Importing the package registers every prior, guide, likelihood and objective.
"""

# _startup first: Ctrl-C while torch and Pyro import is one line, not a traceback
from . import _startup, guides, likelihoods, objectives, priors  # noqa: F401
from .config import Config
from .data import Dataset
from .marginal import MarginalEstimate, log_marginal_likelihood
from .train import fit
from .vae import VAE, build

_startup.restore()
__version__ = "0.1.0"
__all__ = [
    "Config",
    "Dataset",
    "MarginalEstimate",
    "VAE",
    "build",
    "fit",
    "log_marginal_likelihood",
]

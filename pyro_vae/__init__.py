"""pyro_vae: variational autoencoders written the Pyro way.

The public names below load lazily (PEP 562): ``import pyro_vae`` and ``pyro-vae --help`` do
not import torch or Pyro; the first use of a name imports the module that holds it. The parts
(priors, guides, likelihoods, objectives, data sets) register themselves when a config is
built (:func:`pyro_vae.config.register_parts`).
"""

import importlib
from typing import Any, List

__version__ = "0.1.0"

# public name -> module that defines it
_PUBLIC = {
    "Config": "config",
    "ConfigError": "errors",
    "DataError": "errors",
    "TrainingError": "errors",
    "Dataset": "data",
    "MarginalEstimate": "marginal",
    "VAE": "vae",
    "build": "vae",
    "fit": "train",
    "log_marginal_likelihood": "marginal",
    "Model": "api",
    "load_run": "api",
    "make_config": "api",
    "load_data": "api",
    "plots": None,
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'pyro_vae' has no attribute '{name}'")
    module = _PUBLIC[name]
    if module is None:
        value = importlib.import_module(f".{name}", __name__)
    else:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))

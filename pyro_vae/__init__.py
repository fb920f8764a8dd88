"""pyro_vae: variational autoencoders written the Pyro way.

The package is laid out in wings, each a layer that imports only the layers below it (the
contract in ``setup.cfg``, checked by ``lint-imports`` in the test suite)::

    cli, api          the commands and the Python API
    viz               figures (the math never imports them)
    checks            closed forms and the suites of ``pyro-vae check``
    run               the training loop, run directories, checkpoints, torchrun
    estimate          importance sampling, AIS, diagnostics, evaluation
    infer             objectives, the compiled ELBOs, KL schedules
    models            model families: Pyro model/guide pairs built from parts
    parts  data       priors, guides, likelihoods, networks | data sets
    config  errors registry process

The public names below load lazily (PEP 562): ``import pyro_vae`` and ``pyro-vae --help`` do
not import torch or Pyro; the first use of a name imports the module that holds it. A registry
imports the wing that fills it the first time it is asked what it holds.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from typing import Any, List

__version__ = "0.1.0"

# public name -> module that defines it (None: the name is the module itself)
_PUBLIC = {
    "Config": "config",
    "ConfigError": "errors",
    "DataError": "errors",
    "TrainingError": "errors",
    "Dataset": "data",
    "MarginalEstimate": "estimate.marginal",
    "VAE": "models.vae",
    "build": "models",
    "fit": "run.train",
    "log_marginal_likelihood": "estimate.marginal",
    "Model": "api",
    "load_run": "api",
    "make_config": "api",
    "load_data": "api",
    "plots": "viz.plots",
}
_MODULES = {"plots"}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'pyro_vae' has no attribute '{name}'")
    module = importlib.import_module(f".{_PUBLIC[name]}", __name__)
    value = module if name in _MODULES else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))


# Modules of the flat layout before the wings (0.1), by their new place. Code written against
# the old paths (``from pyro_vae.networks import Network``) keeps working, with a warning.
MOVED = {
    "ais": "estimate.ais",
    "ais_checks": "checks.ais",
    "amortization": "estimate.amortization",
    "analytic": "checks.analytic",
    "analytic_models": "checks.analytic_models",
    "check_densities": "checks.densities",
    "check_marginal": "checks.marginal",
    "check_objectives": "checks.objectives",
    "check_stats": "checks.stats",
    "check_suites": "checks.suites",
    "checkpoint": "run.checkpoint",
    "checks": "checks.harness",
    "cli_check": "cli.check",
    "cli_evaluate": "cli.evaluate",
    "cli_list": "cli.list",
    "cli_train": "cli.train",
    "config_checks": "config.checks",
    "data_mnist": "data.builtin",
    "data_record": "data.record",
    "data_user": "data.user",
    "diagnostics": "estimate.diagnostics",
    "discretized": "parts.discretized",
    "distributed": "run.distributed",
    "distributions": "parts.distributions",
    "evaluate": "estimate.evaluate",
    "figures": "viz.figures",
    "guides": "parts.guides",
    "jit_elbo": "infer.jit_elbo",
    "likelihoods": "parts.likelihoods",
    "marginal": "estimate.marginal",
    "networks": "parts.networks",
    "objectives": "infer.objectives",
    "plots": "viz.plots",
    "priors": "parts.priors",
    "rundir": "run.rundir",
    "schedules": "infer.schedules",
    "train": "run.train",
    "vae": "models.vae",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``pyro_vae.OLD`` as the module now at ``pyro_vae.MOVED[OLD]`` (the same module
    object, whose own ``__spec__`` is kept), with a DeprecationWarning naming the new path.
    """

    def find_spec(self, fullname, path=None, target=None):
        package, _, old = fullname.rpartition(".")
        if package != __name__ or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = f"{__name__}.{MOVED[spec.name.rpartition('.')[2]]}"
        warnings.warn(
            f"{spec.name} moved to {new}; import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(new)
        spec.loader_state = (
            module.__spec__
        )  # the import system sets the alias's spec on it
        return module

    def exec_module(self, module) -> None:
        """The module ran under its new name: give it back its own spec."""
        module.__spec__ = module.__spec__.loader_state


sys.meta_path.append(_MovedModules())

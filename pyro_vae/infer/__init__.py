"""Inference: the objectives SVI optimizes and what shapes them while training.

``objectives`` (Trace_ELBO, TraceMeanField_ELBO, the IWAE bound, free bits; registered in
``registry.OBJECTIVES``), ``jit_elbo`` (their TorchScript-compiled forms) and ``schedules``
(KL warm-up and cyclical schedules, the reconstruction weight, free bits).

May import: ``models``, ``parts`` and the bottom layer (``config``, ``errors``, ``registry``,
``process``).
"""

from pyro_vae.infer import objectives  # noqa: F401  (registers the objectives)
from pyro_vae.infer import trace_enum  # noqa: F401  (registers the enum objective)
from pyro_vae.infer import trace_enum_meanfield  # noqa: F401  (enum_meanfield)

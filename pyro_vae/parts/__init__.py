"""Parts: the pieces a config names and a model family wires together.

Priors p(z) (``priors``), guides q(z | x) (``guides``), likelihoods p(x | z) (``likelihoods``),
encoder trunks and decoders (``networks``), and the densities they need that torch does not have
in the form needed (``distributions``, ``discretized``). Each part is a factory function
registered in its registry (``pyro_vae.registry``); importing this wing registers them all.
A prior never knows which guide it is paired with, nor a guide which prior.

May import: the bottom layer (``config``, ``errors``, ``registry``, ``process``). Nothing here
imports a model family, an estimator or the run machinery.
"""

from pyro_vae.parts import (  # noqa: F401  (registers)
    guides,
    likelihoods,
    networks,
    priors,
)

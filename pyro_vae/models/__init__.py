"""Model families: a Pyro ``model``/``guide`` pair built from registered parts.

Each family is one module registered in ``registry.FAMILIES`` (``[model] family`` names it):
``vae`` (one latent layer z), ``hierarchical`` (L >= 2 stochastic layers),
``semi_supervised`` (M2: a class y enumerated, a style z) and ``conditional`` (the CVAE
given quadrants of an image or its label). ``family`` is the seam: the ``Family`` base class,
the latent-site declarations every family makes, and ``build``, which picks a family by name.
``baseline`` is the CVAE's deterministic baseline (no latent variable; not a family).

May import: ``parts`` and the bottom layer (``config``, ``errors``, ``registry``, ``process``).
"""

from pyro_vae.models import (  # noqa: F401  (register the families)
    conditional,
    hierarchical,
    semi_supervised,
    vae,
)
from pyro_vae.models.family import Family, LatentSite, build  # noqa: F401

"""Model families: a Pyro ``model``/``guide`` pair built from registered parts.

Each family is one module registered in ``registry.FAMILIES`` (``[model] family`` names it):
``vae``, one latent layer z;
``hierarchical``, L >= 2 stochastic layers. ``family`` is the seam: the ``Family`` base class, the
latent-site declarations every family makes, and ``build``, which picks a family by name.

May import: ``parts`` and the bottom layer (``config``, ``errors``, ``registry``, ``process``).
"""

from pyro_vae.models import hierarchical, vae  # noqa: F401  (register the families)
from pyro_vae.models.family import Family, LatentSite, build  # noqa: F401

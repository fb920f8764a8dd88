"""The ``enum`` objective: ``TraceEnum_ELBO``, the Monte Carlo ELBO with every discrete latent
site that a guide marks for parallel enumeration (``config_enumerate``) summed out exactly.

For the semi-supervised family's class y this is Kingma et al.'s (2014) U(x) =
sum_y q(y | x) [L(x, y) - log q(y | x)] computed over all K classes at once (the class values
sit in a tensor dimension left of the particle and data dimensions), instead of a
score-function estimate from a sampled y. On a model without discrete sites it equals
``Trace_ELBO``. ``enum_meanfield`` (trace_enum_meanfield.py) is the same with the closed-form
KL of each continuous site under each enumerated value.
"""

import pyro.infer
from pyro.infer import ELBO

from pyro_vae.infer.objectives import MAX_PLATE_NESTING
from pyro_vae.registry import OBJECTIVES


def enum_options(num_particles: int) -> dict:
    """The arguments every enumerating objective is built with (``enum``, ``enum_meanfield``)."""
    return dict(
        num_particles=num_particles,
        vectorize_particles=True,
        max_plate_nesting=MAX_PLATE_NESTING,
        ignore_jit_warnings=True,
        # a batch of labelled rows only, or a family without discrete sites: nothing to
        # enumerate, which is not a mistake here
        strict_enumeration_warning=False,
    )


@OBJECTIVES.register("enum")
def enum(context: None, num_particles: int = 1) -> ELBO:
    """TraceEnum_ELBO: discrete sites marked for enumeration summed out exactly."""
    return pyro.infer.TraceEnum_ELBO(**enum_options(num_particles))

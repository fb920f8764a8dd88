"""The test error of a family's classifier q(y | x), read from a trace of its guide.

For each discrete latent site the family declares (``latent_sites``), the guide's distribution
at that site is q(y | x); the predicted class is its mode, and the error rate over N labelled
rows comes with its binomial standard error sqrt(e (1 - e) / N). Kingma et al. (2014) report
this error for M2 (Table 1).
"""

import math
from typing import Dict

import torch
from pyro import poutine

from pyro_vae.errors import ConfigError


@torch.no_grad()
def classification_error(
    family, x: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000
) -> Dict[str, float]:
    """``error`` and ``stderr`` of the mode of q(y | x) against ``labels``, and ``site``."""
    sites = [s.name for s in getattr(family, "latent_sites", ()) if s.discrete]
    if not sites:
        raise ConfigError("the classification error needs a family with a class latent")
    wrong = 0
    for start in range(0, x.shape[0], batch_size):
        trace = poutine.trace(family.guide).get_trace(x[start : start + batch_size])
        fn = trace.nodes[sites[0]]["fn"]
        guess = fn.probs.argmax(-1).reshape(-1)
        wrong += int((guess.cpu() != labels[start : start + batch_size].cpu()).sum())
    n = x.shape[0]
    error = wrong / n
    return {
        "site": sites[0],
        "error": error,
        "stderr": math.sqrt(error * (1 - error) / n),
    }

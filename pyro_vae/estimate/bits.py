"""Bits per dimension: a log-likelihood (or a bound on it) in the unit image papers report.

For a likelihood that puts probability *mass* on each pixel value (binary pixels, or the 256
grey levels of 8-bit images), ``-log p(x) / (D ln 2)`` is the number of bits per pixel an
ideal coder built from the model would spend on x (Theis et al. 2016, "A note on the
evaluation of generative models"); from the ELBO it is an upper bound. For a density over
continuous values (gaussian, continuous Bernoulli) the figure has no such meaning, so it is
reported only where :func:`counts_bits` says so.
"""

import math


def counts_bits(likelihood: object) -> bool:
    """Whether ``likelihood`` gives a probability mass per pixel value (its ``binary`` or
    ``discrete`` flag), so that bits per dimension are a code length."""
    return bool(getattr(likelihood, "binary", False)) or bool(
        getattr(likelihood, "discrete", False)
    )


def bits_per_dim(log_likelihood: float, dims: int) -> float:
    """``-log_likelihood / (dims ln 2)``: nats per data point to bits per dimension."""
    return -log_likelihood / (dims * math.log(2))

"""The statistics every check suite uses: a row of the check table and the criteria it is held to.

A Monte Carlo estimate passes when |estimate - exact| < 4 standard errors, the standard error
being the estimator's own (from independent repeats or per-draw variances); an identity that holds
draw by draw passes at a float64 tolerance. ``checks.py`` re-exports these names.
"""

import math
from dataclasses import dataclass
from typing import Callable, Tuple

import torch

NUM_SE = 4.0  # a Monte Carlo estimate passes within this many standard errors of the exact value
EXACT_TOL = 1e-6  # per data point, for identities that hold for every draw


@dataclass
class CheckRow:
    """One line of the check table: a Monte Carlo (or exact) ``estimate`` of a ``quantity``, its
    ``exact`` value, the estimate's standard error (0 for deterministic quantities), whether the
    check ``passed``, and the ``criterion`` it was held to."""

    quantity: str
    estimate: float
    exact: float
    stderr: float
    passed: bool
    criterion: str = ""


def within_se(
    quantity: str, estimate: float, exact: float, stderr: float, k: float = NUM_SE
) -> CheckRow:
    """|estimate - exact| < k SE (a NaN or infinite estimate fails)."""
    passed = abs(estimate - exact) < k * stderr
    return CheckRow(quantity, estimate, exact, stderr, passed, f"|diff| < {k:g} SE")


def within_tol(
    quantity: str, estimate: float, exact: float, tol: float = EXACT_TOL
) -> CheckRow:
    """|estimate - exact| < tol, for quantities that are exact draw by draw."""
    return CheckRow(
        quantity, estimate, exact, 0.0, abs(estimate - exact) < tol, f"|diff| < {tol:g}"
    )


def repeat(
    fn: Callable[[], torch.Tensor], times: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard error of ``times`` independent draws of the estimator ``fn``."""
    draws = torch.stack([torch.as_tensor(fn()) for _ in range(times)])
    return draws.mean(0), draws.std(0) / math.sqrt(times)

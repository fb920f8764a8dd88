"""``pyro-vae check``: every estimator the library trains and evaluates with, against closed forms.

This module is the harness: the suites to run (``SUITES``: add a suite with one line), the seeded
run on one random linear-Gaussian model, and the table printer. The statistics (``CheckRow``,
``within_se``, ``within_tol``) live in ``check_stats.py`` and are re-exported here; the suites
in ``check_suites.py`` (exact identities, training), ``check_marginal.py`` (bounds, SE, ESS),
``check_objectives.py`` (every objective as ``fit`` builds it) and ``check_densities.py`` (every
guide and prior). A suite module imports from ``check_stats``, not from here (no import cycle).

Monte Carlo estimates pass when |estimate - exact| < 4 standard errors, the standard error being
the estimator's own (from independent repeats or per-draw variances); identities that hold draw
by draw pass at a float64 tolerance.
"""

import random
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional, Sequence

import numpy as np
import pyro
import torch

from pyro_vae.checks import ais as ais_checks
from pyro_vae.checks import conditional as check_conditional
from pyro_vae.checks import densities as check_densities
from pyro_vae.checks import diagnostics as check_diagnostics
from pyro_vae.checks import distributed as check_distributed
from pyro_vae.checks import enum_meanfield as check_enum_meanfield
from pyro_vae.checks import hierarchy as check_hierarchy
from pyro_vae.checks import marginal as check_marginal
from pyro_vae.checks import objectives as check_objectives
from pyro_vae.checks import semi_supervised as check_semi_supervised
from pyro_vae.checks import suites as check_suites
from pyro_vae.checks.analytic import LinearGaussian
from pyro_vae.checks.analytic_models import true_model
from pyro_vae.checks.stats import EXACT_TOL, NUM_SE, CheckRow, within_se, within_tol
from pyro_vae.process import forked_rng, resolve_device

__all__ = [
    "EXACT_TOL",
    "NUM_SE",
    "SUITES",
    "CheckRow",
    "format_table",
    "run_checks",
    "within_se",
    "within_tol",
]

SEED = 0
Suite = Callable[[LinearGaussian, torch.Tensor, torch.Generator], List[CheckRow]]
# every suite takes (truth, x, generator) and returns its rows; run in this order
SUITES: List[Suite] = [
    check_suites.exact_posterior_checks,
    check_suites.estimator_checks,
    check_objectives.objective_checks,
    check_marginal.iwae_checks,
    check_marginal.marginal_checks,
    check_densities.density_checks,
    check_suites.training_checks,
    ais_checks.ais_suite,
    check_hierarchy.hierarchy_suite,
    check_semi_supervised.semi_supervised_checks,
    check_conditional.conditional_checks,
    check_diagnostics.diagnostic_checks,
    check_distributed.distributed_checks,
    check_enum_meanfield.enum_meanfield_checks,
]


@contextmanager
def _seeded(device: torch.device, seed: int) -> Iterator[None]:
    """Seed torch, Python and NumPy (``fit`` reseeds all three), restoring their states on exit."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with forked_rng(device):
            pyro.set_rng_seed(seed)
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def run_checks(device: str = "cpu", through: Optional[Suite] = None) -> List[CheckRow]:
    """Every suite of ``SUITES`` on one random linear-Gaussian model (P = 6, D = 2, sigma = 0.5)
    and 500 data points from it, on ``device`` (``cpu``, ``cuda``, ``cuda:N`` or ``auto``),
    seeded, with Pyro's validation on; the global RNG states are restored afterwards. The checks
    are thousands of small tensor operations, which run fastest on one CPU thread.

    ``through``: stop after this suite. The suites before it still run, so its rows see the same
    random draws as in the full check (the tests that inject a bug use it to reach the row that
    must catch the bug without running the suites after it)."""
    dev = resolve_device(device)
    suites = SUITES if through is None else SUITES[: SUITES.index(through) + 1]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_checks(dev, suites)
    finally:
        torch.set_num_threads(threads)


def _run_checks(dev: torch.device, suites: Sequence[Suite]) -> List[CheckRow]:
    with _seeded(dev, SEED), pyro.validation_enabled(True):
        generator = torch.Generator().manual_seed(SEED)
        truth = true_model(generator)
        x = truth.sample(500, generator).to(dev)
        truth = truth.to(dev)
        return [row for suite in suites for row in suite(truth, x, generator)]


def format_table(rows: Sequence[CheckRow]) -> str:
    """The rows as a fixed-width text table."""
    header = ("quantity", "estimate", "exact", "stderr", "criterion", "result")
    lines = [
        (
            r.quantity,
            f"{r.estimate:.6g}",
            f"{r.exact:.6g}",
            f"{r.stderr:.2g}",
            r.criterion,
            "ok" if r.passed else "FAIL",
        )
        for r in rows
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    out = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
        for line in [header, *lines]
    ]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)

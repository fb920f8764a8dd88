"""Checks: every estimator against closed forms, and the suites of ``pyro-vae check``.

``analytic`` holds the closed forms of the linear-Gaussian latent model (torch alone, so the
ground truth never depends on the code it checks); ``analytic_models`` builds library models
from them; ``stats`` is the check table's row and criteria; ``suites``, ``objectives``,
``densities``, ``marginal`` and ``ais`` are the suites; ``harness`` runs them.

May import: every wing except ``viz`` and ``cli``.
"""

"""Estimators of a trained model: log p(x) and what the latent space does.

Importance sampling with standard errors and Pareto k-hat (``marginal``), annealed importance
sampling and BDMC (``ais``), the amortization gap (``amortization``), the ELBO's terms, KL per
dimension, active units and mutual information (``diagnostics``), and the report that
``pyro-vae evaluate`` writes (``evaluate``).

May import: ``infer``, ``models``, ``parts``, ``data`` and the bottom layer (``config``,
``errors``, ``registry``, ``process``).
"""

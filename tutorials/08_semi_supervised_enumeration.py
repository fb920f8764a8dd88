# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 8. Enumeration: the semi-supervised VAE sums its class out exactly
#
# Kingma et al.'s (2014) model "M2" adds a class $y$ to the VAE: $p(y)\,p(z)\,p(x\mid y, z)$, with
# a classifier $q(y\mid x)$ and $q(z\mid x, y)$ as guide. For an image without a label the ELBO is
#
# $$U(x) = \sum_{y} q(y\mid x)\Big[\mathbb E_{q(z\mid x,y)}\big[\log p(x\mid y,z) + \log p(y)
#   + \log p(z) - \log q(z\mid x,y)\big] - \log q(y\mid x)\Big].$$
#
# The sum has only $K$ terms. *Sampling* $y$ would need a score-function gradient for the
# classifier, with high variance; Pyro can instead **enumerate** it: `config_enumerate` marks the
# guide's `y` site, and `TraceEnum_ELBO` evaluates all $K$ values at once in a spare tensor
# dimension. We check on a small model where everything is exact that the enumerated ELBO *is*
# the sum, that sampling is only right on average, and that importance sampling with $y$ summed out
# recovers $\log p(x)$; then we train M2 on digits with 100 labels. `PYRO_VAE_SMOKE=1` shrinks it.

# %%
import os
import warnings
from pathlib import Path

import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402

from pyro_vae import config, data, models  # noqa: E402
from pyro_vae.checks.analytic_mixture import random_mixture  # noqa: E402
from pyro_vae.checks.semi_supervised import (  # noqa: E402
    linear_m2,
    set_classifier,
    set_z_guide,
)
from pyro_vae.estimate.classification import classification_error  # noqa: E402
from pyro_vae.estimate.marginal import log_marginal_likelihood  # noqa: E402
from pyro_vae.registry import OBJECTIVES  # noqa: E402
from pyro_vae.run import train  # noqa: E402
from pyro_vae.viz import plots  # noqa: E402

SMOKE = os.environ.get("PYRO_VAE_SMOKE", "0") not in ("", "0")
FIGURES = Path("figures")
FIGURES.mkdir(exist_ok=True)
pyro.enable_validation(True)
pyro.set_rng_seed(0)

# %% [markdown]
# ## A model we can solve: a mixture of linear-Gaussians
#
# $p(y) = \pi_y$, $p(z) = \mathcal N(0, I)$, $p(x\mid y,z) = \mathcal N(Wz + b_y, \sigma^2 I)$.
# Given $y$ it is probabilistic PCA, so $p(x\mid y)$, $p(y\mid x)$ and $p(z\mid x, y)$ are
# Gaussian formulas (`pyro_vae/checks/analytic_mixture.py`). We build the library's own
# `semi_supervised` family with no hidden layers and set its weights to this model; its
# $q(z\mid x, y)$ is the exact posterior and its classifier a deliberately wrong one.

# %%
generator = torch.Generator().manual_seed(0)
truth = random_mixture(generator)
x, y = truth.sample(200, generator)
m2 = linear_m2(truth, "full_rank")
set_z_guide(m2, truth, 0.0, generator)
set_classifier(m2, truth, 0.5, generator)
with torch.no_grad():
    r = m2.class_posterior(x).probs  # the (wrong) classifier's q(y | x)
# with q(z | x, y) exact, the inner expectation is log p(x | y): U(x) is a finite sum
exact_sum = (r * (truth.log_joint_y(x) - r.log())).sum(-1)
enum = OBJECTIVES.build("enum", None, {})  # TraceEnum_ELBO, as `--elbo enum` builds it
enumerated = -enum.loss(m2.model, m2.guide, x)
print(f"enumerated ELBO {enumerated:.6f}, exact sum {exact_sum.sum().item():.6f}")
assert abs(enumerated - exact_sum.sum().item()) < 1e-6 * len(x)

# %% [markdown]
# The enumerated value has no Monte Carlo error at all. Without enumeration the same guide
# samples $y$ (here: `Trace_ELBO`, which ignores the enumeration mark): right on average,
# scattered around the sum.

# %%
trace_elbo = pyro.infer.Trace_ELBO(max_plate_nesting=1)
repeats = 30 if SMOKE else 200
with warnings.catch_warnings():  # Trace_ELBO says it ignores the enumeration mark
    warnings.simplefilter("ignore", UserWarning)
    sampled = torch.tensor(
        [-trace_elbo.loss(m2.model, m2.guide, x) for _ in range(repeats)],
        dtype=torch.float64,
    )
se = sampled.std() / repeats**0.5
print(
    f"sampled y: {sampled.mean():.3f} ± {se:.3f} (sd of one estimate {sampled.std():.2f})"
)
assert abs(sampled.mean() - enumerated) < 4 * se  # unbiased ...
assert sampled.std() > 1.0  # ... but noisy
fig, ax = plt.subplots(figsize=(5, 3))
ax.hist(sampled.numpy(), bins=20, color="0.6", label="y sampled (Trace_ELBO)")
ax.axvline(enumerated, color="C3", label="y enumerated (TraceEnum_ELBO)")
ax.set_xlabel("ELBO of 200 points (nats)")
ax.legend(fontsize=8)
saved = plots.save(fig, FIGURES / "08_enumerated_vs_sampled.png")

# %% [markdown]
# ## log p(x) with y summed out
#
# `log_marginal_likelihood` runs the guide under `poutine.enum`: each draw of $z$ comes with all
# $K$ classes, and the weight is $\sum_y p(x, y, z_y)/q(z_y\mid x, y)$. With the exact
# $q(z\mid x,y)$ every weight is $p(x)$ itself, so ten draws give the exact value.

# %%
est = log_marginal_likelihood(m2.model, m2.guide, x, num_samples=10)
gap = (est.log_marginal - truth.log_marginal(x)).abs().max().item()
print(f"max |IS log p(x) - exact| = {gap:.2e}")
assert gap < 1e-6

# %% [markdown]
# ## M2 on digits with 100 labels
#
# `--family semi_supervised --elbo enum --labels 100` keeps 10 labels per digit (seeded); the
# labelled images observe $y$ and add Kingma et al.'s classification term
# $\alpha\,\log q(y\mid x)$ with $\alpha = 0.1 N$ spread over the labelled points.

# %%
cfg = config.load(
    None,
    {
        "model.family": "semi_supervised",
        "objective.name": "enum",
        "model.labels": 100,
        "model.latent_dim": 8,
        "model.hidden": [64] if SMOKE else [200],
        "train.epochs": 2 if SMOKE else 30,
        "train.lr": 3e-3,
    },
)
ds = data.load(cfg.data)
family = models.build(cfg, ds.shape)
train.fit(family, ds, cfg)
error = classification_error(family, ds.test, ds.test_labels)
print(
    f"test error of q(y|x) with 100 labels: {error['error']:.1%} ± {error['stderr']:.1%}"
)
assert error["error"] < 0.9  # better than chance (0.9), even in smoke mode
classes = torch.arange(10)
styles = family.prior().sample((4,))
rows = [("", family.decode(z.expand(10, -1), classes)) for z in styles]
saved = plots.image_grid(rows, ds.shape, FIGURES / "08_class_samples.png")

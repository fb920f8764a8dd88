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
# # 4. Priors and guides: same data, nine VAEs, changed only in the config
#
# A VAE has two distributions over the code $z$ that we choose freely:
#
# * the **prior** $p(z)$: `standard_normal` $\mathcal N(0, I)$; a learned `mixture` of Gaussians; the
#   `vamp` prior $p(z) = \frac1K\sum_k q(z\mid u_k)$, the guide evaluated at $K$ learned
#   pseudo-inputs (Tomczak & Welling 2018). With a flow guide such as `iaf`, $q(z\mid u_k)$ is the
#   full posterior, flows included, with `prior.components = "posterior"`, which this tutorial
#   sets; its density at a code $z$ inverts the flows, one latent dimension at a time, for every
#   (code, pseudo-input) pair, cheap at this tutorial's 2 dimensions and 50 pseudo-inputs but not
#   at 50 and 500. The default, `prior.components = "gaussian"`, mixes the guide's Gaussian before
#   its flows instead (a cheaper prior, no longer the posterior family; the only choice for
#   `planar` flows, which have no inverse). For guides without flows the two are the same density;
# * the **guide** $q(z\mid x)$: `diagonal` Gaussian (mean field), `full_rank` Gaussian (correlated
#   coordinates), `iaf`, a diagonal Gaussian pushed through inverse autoregressive flows (Kingma et al.
#   2016).
#
# In `pyro_vae` priors never know about guides and vice versa: every pair is two config values,
# `prior.name` and `guide.name`. We train all nine pairs with a **2-dimensional latent** so we can look
# at it, and measure each by its importance-sampled test $\log p(x)$ (tutorial 5 explains the
# estimator). Then we look for **holes**: places the prior $p(z)$ covers but where no training image
# is encoded. Codes drawn there decode to images unlike any training digit.
#
# Set `PYRO_VAE_SMOKE=1` to run in a few seconds (two epochs, few importance samples).

# %%
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import torch
from matplotlib.patches import Rectangle

from pyro_vae import config, data
from pyro_vae.estimate import diagnostics, marginal
from pyro_vae.models import vae
from pyro_vae.run import train
from pyro_vae.viz import plots

SMOKE = os.environ.get("PYRO_VAE_SMOKE", "0") not in ("", "0")
FIGURES = Path("figures")
FIGURES.mkdir(exist_ok=True)
EPOCHS = 2 if SMOKE else 60
NUM_SAMPLES = 20 if SMOKE else 500  # importance samples per test image for log p(x)
PRIOR_DRAWS = 2_000 if SMOKE else 20_000  # draws from p(z) to measure the holes
PRIORS = ["standard_normal", "mixture", "vamp"]
GUIDES = ["diagonal", "full_rank", "iaf"]
BASELINE, RICHER = ("standard_normal", "diagonal"), ("mixture", "iaf")

# %% [markdown]
# ## Nine runs, nine sets of overrides
#
# The VampPrior gets 50 pseudo-inputs: the default 500 is meant for MNIST's 50 000 images, and we
# have 1497 digits. Everything else is the library's default: a 200-200 tanh MLP, Bernoulli pixels,
# `Trace_ELBO`.

# %%
digits = data.load(config.load().data)
x_train, x_test = digits.train, digits.test


def overrides(prior, guide):
    settings = {
        "train.epochs": EPOCHS,
        "train.device": "cpu",
        "model.latent_dim": 2,
        "prior.name": prior,
        "guide.name": guide,
    }
    if prior == "vamp":
        settings["prior.num_pseudo"] = 50
        settings["prior.components"] = "posterior"  # the exact prior (see above)
    return settings


runs = {}
for prior in PRIORS:
    for guide in GUIDES:
        cfg = config.load(overrides=overrides(prior, guide))
        pyro.set_rng_seed(0)
        net = vae.build(cfg, digits.data_dim)
        metrics = train.fit(net, digits, cfg)
        pyro.set_rng_seed(1)
        estimate = marginal.log_marginal_likelihood(
            net.model, net.guide, x_test, num_samples=NUM_SAMPLES
        )
        elbo = diagnostics.elbo_terms(net, x_test)[
            "elbo"
        ]  # one guide draw per test image
        runs[prior, guide] = {
            "net": net,
            "elbo": elbo,
            "log_p": estimate.log_marginal,
            "is_se": estimate.stderr.pow(2).sum().sqrt().item() / len(x_test),
        }
        r = runs[prior, guide]
        print(
            f"{prior:16s} {guide:10s} test ELBO {elbo.mean():7.2f}   "
            f"test log p(x) {r['log_p'].mean():7.2f} "
            f"(importance-sampling SE {r['is_se']:.3f})"
        )

# %% [markdown]
# ## Check 1: every pair trains, and the bound holds
#
# Every prior-guide pair must train to a finite ELBO and a finite $\log p(x)$, and the estimate of
# $\log p(x)$ must not fall below the ELBO: it is the IWAE bound with $K$ samples, which is at least the
# ELBO in expectation. Both are noisy (the ELBO here is a one-draw Monte Carlo estimate per image), so
# we compare image by image and allow 3 standard errors of the mean difference.


# %%
def paired(a, b):
    """Mean of a - b over test images, and its standard error."""
    difference = a - b
    return (
        difference.mean().item(),
        (difference.std() / math.sqrt(len(difference))).item(),
    )


for (prior, guide), r in runs.items():
    assert (
        torch.isfinite(r["elbo"]).all() and torch.isfinite(r["log_p"]).all()
    ), f"{prior} x {guide} failed"
    gap, se = paired(r["log_p"], r["elbo"])
    assert (
        gap > -3 * se
    ), f"{prior} x {guide}: log p(x) below the ELBO by {-gap:.3f} (SE {se:.3f})"

# %% [markdown]
# ## Check 2: a richer pair is not worse than the baseline
#
# The mixture prior with the IAF guide can represent everything the standard-normal prior with the
# diagonal guide can (one mixture component at $\mathcal N(0, I)$, flows at the identity), so after
# training its test $\log p(x)$ should be at least as good. We compare image by image (a paired
# comparison: both models score the same 300 test digits), and require the mean difference to be
# above $-3$ standard errors of that mean. The argument is about *trained* models: after the two
# epochs of a smoke run the richer pair, with more parameters to fit, can still lag, so the check runs
# at full settings only.

# %%
mean, se = paired(runs[RICHER]["log_p"], runs[BASELINE]["log_p"])
print(f"log p(x) of {RICHER} minus {BASELINE}: {mean:+.3f} ± {se:.3f} nats per image")
if not SMOKE:
    assert (
        mean > -3 * se
    ), "the richer prior and guide should not be worse than the baseline"

# %% [markdown]
# ## The latent space, pair by pair
#
# Each dot is a test digit's posterior mean $\mathbb E_q[z\mid x]$ (a Monte Carlo average for the IAF
# guide), coloured by the digit's label, which the VAE never saw. Grey contours are the prior $p(z)$.
# The standard-normal prior is a single round blob; the learned priors are lumpy: they move their
# mass to where the codes are. Not every pair trains equally easily: with this seed the VampPrior
# with the full-rank guide sits on a plateau with nearly collapsed posteriors for half of training
# and ends behind the others: its codes lie along a line, one of the two latent dimensions unused
# (its panel gets a wider view: the codes drift far from the origin).

# %%
span = 4.0
axis = torch.linspace(-span, span, 61 if SMOKE else 161)
grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
fig, axes = plt.subplots(
    len(PRIORS), len(GUIDES), figsize=(12.5, 11), constrained_layout=True
)
for (prior, guide), r in runs.items():
    ax = axes[PRIORS.index(prior)][GUIDES.index(guide)]
    codes = diagnostics.posterior_means(r["net"], x_test)
    reach = max(
        span, 1.1 * codes.abs().max().item()
    )  # a pair whose codes stray far gets a wider view
    view = torch.linspace(-reach, reach, 121)
    with torch.no_grad():
        points = torch.stack(torch.meshgrid(view, view, indexing="xy"), -1).reshape(
            -1, 2
        )
        density = r["net"].prior().log_prob(points).exp().reshape(len(view), len(view))
    ax.contour(
        view.numpy(),
        view.numpy(),
        density.numpy(),
        levels=6,
        colors="grey",
        linewidths=0.7,
    )
    dots = ax.scatter(
        codes[:, 0].numpy(),
        codes[:, 1].numpy(),
        c=digits.test_labels.numpy(),
        cmap="tab10",
        s=7,
        vmin=-0.5,
        vmax=9.5,
    )
    ax.set_title(
        f"{prior} prior, {guide} guide\ntest log p(x) = {r['log_p'].mean():.2f}",
        fontsize=9,
    )
    ax.set(xlim=(-reach, reach), ylim=(-reach, reach), aspect="equal")
fig.colorbar(dots, ax=axes, ticks=range(10), label="digit label", shrink=0.6)
saved = plots.save(
    fig, FIGURES / "04_latent_by_prior_and_guide.png", dpi=90, tight=False
)

# %% [markdown]
# ## Holes in the latent space
#
# The **aggregate posterior** is where the encoder puts the training set:
# $q(z) = \frac1N \sum_n q(z\mid x_n)$. The ELBO's KL term, averaged over the data, splits into the
# information the code carries plus $\mathrm{KL}(q(z)\,\|\,p(z))$ (Hoffman & Johnson 2016): the prior is
# rewarded for matching the aggregate posterior. A standard-normal prior cannot move, so wherever
# $q(z)$ is thin the prior still draws codes: a **hole**. We call a point a hole when the aggregate
# posterior has less than $1/e$ of the prior's density there, $\log q(z) - \log p(z) < -1$.
#
# With a 2-D latent and a diagonal Gaussian guide both densities can be evaluated anywhere (the
# aggregate posterior is a mixture of 1497 Gaussians). The prior's mass in the holes is then a plain
# Monte Carlo average over draws $z \sim p(z)$, with a binomial standard error.


# %%
def log_ratio(net, z):
    """log q(z) - log p(z) at codes z (one per row); q is the training set's aggregate posterior."""
    with torch.no_grad():
        q = net.encoder(x_train).base_dist
        log_q = torch.full((len(z),), -math.inf)
        for rows in torch.split(torch.arange(len(x_train)), 250):
            parts = (
                torch.distributions.Normal(q.loc[rows, None], q.scale[rows, None])
                .log_prob(z)
                .sum(-1)
            )
            log_q = torch.logaddexp(log_q, torch.logsumexp(parts, 0))
        return log_q - math.log(len(x_train)) - net.prior().log_prob(z)


def fraction_in_holes(net, z):
    """Fraction of the codes z that lie in holes, and its binomial standard error."""
    fraction = (log_ratio(net, z) < -1).double().mean().item()
    return fraction, math.sqrt(max(fraction * (1 - fraction), 1e-12) / len(z))


pyro.set_rng_seed(4)
hole_mass = {}
for prior in PRIORS:
    net = runs[prior, "diagonal"]["net"]
    with torch.no_grad():
        draws = net.prior().sample((PRIOR_DRAWS,))
    hole_mass[prior] = fraction_in_holes(net, draws)
    print(
        f"{prior:16s} prior mass in holes {hole_mass[prior][0]:.4f} ± {hole_mass[prior][1]:.4f}"
    )

# %% [markdown]
# Held-out digits, by contrast, are encoded where training digits were: the fraction of test codes
# (posterior means) that fall into a hole must be smaller than the prior's mass there, by more than
# three standard errors. That is the check that the holes are gaps in the data, not an artefact of
# the definition.

# %%
baseline_net = runs[BASELINE]["net"]
test_in_holes = fraction_in_holes(
    baseline_net, diagnostics.posterior_means(baseline_net, x_test)
)
prior_in_holes = hole_mass["standard_normal"]
print(
    f"standard-normal prior: a prior draw lands in a hole with probability {prior_in_holes[0]:.3f}; "
    f"a test digit's code with frequency {test_in_holes[0]:.3f}"
)
assert prior_in_holes[0] - test_in_holes[0] > 3 * math.hypot(
    prior_in_holes[1], test_in_holes[1]
)

# %% [markdown]
# ## Check 3: learned priors leave fewer holes
#
# Both learned priors put less of their mass where no data is encoded than the fixed standard normal,
# by more than three standard errors. (This needs training: after the two epochs of the smoke run the
# encoder has barely spread the codes, so the check only runs at full settings.)

# %%
if not SMOKE:
    for prior in ("mixture", "vamp"):
        (fixed, se_fixed), (learned, se_learned) = (
            hole_mass["standard_normal"],
            hole_mass[prior],
        )
        assert fixed - learned > 3 * math.hypot(
            se_fixed, se_learned
        ), f"{prior} leaves as many holes"

# %% [markdown]
# ## What the holes look like
#
# Left column: $\log q(z) - \log p(z)$, red where the prior outweighs the aggregate posterior (holes
# hatched), blue where codes are dense; dots are test codes. Right column: the decoder's mean image
# $\mathbb E[x\mid z]$ on a 12 x 12 grid of codes, with red frames around cells that lie in holes.
# Framed cells inside the cloud of codes decode to blends of neighbouring digits; framed cells at
# the edges to exaggerated versions of the nearest digit: images no training digit asked the decoder
# to draw. The VampPrior's holes are fewer and smaller.

# %%
cells = torch.linspace(-3, 3, 12)
zs = torch.stack(torch.meshgrid(cells, cells.flip(0), indexing="xy"), -1).reshape(-1, 2)
fig, axes = plt.subplots(2, 2, figsize=(11, 10.5))
for row, prior in enumerate(["standard_normal", "vamp"]):
    net = runs[prior, "diagonal"]["net"]
    ax = axes[row][0]
    a, ratio = axis.numpy(), log_ratio(net, grid).reshape(len(axis), len(axis)).numpy()
    shade = ax.contourf(
        a, a, ratio.clip(-4, 4), levels=torch.linspace(-4, 4, 17).tolist(), cmap="RdBu"
    )
    ax.contourf(a, a, ratio, levels=[-1e9, -1], colors="none", hatches=["////"])
    ax.contour(a, a, ratio, levels=[-1], colors="darkred", linewidths=0.8)
    codes = diagnostics.posterior_means(net, x_test)
    ax.scatter(codes[:, 0].numpy(), codes[:, 1].numpy(), c="black", s=3)
    fig.colorbar(shade, ax=ax, label="log q(z) - log p(z)")
    ax.set(
        xlim=(-span, span),
        ylim=(-span, span),
        xlabel="z1",
        ylabel="z2",
        title=f"{prior} prior: prior mass in holes {hole_mass[prior][0]:.3f}",
    )
    with torch.no_grad():
        images = net.likelihood.mean(net.decoder(zs)).reshape(12, 12, 8, 8)
    mosaic = torch.ones(12 * 9 - 1, 12 * 9 - 1)  # a one-pixel white gap between cells
    for i in range(12):
        for j in range(12):
            mosaic[9 * i : 9 * i + 8, 9 * j : 9 * j + 8] = images[i, j]
    ax = axes[row][1]
    ax.imshow(mosaic.numpy(), cmap="gray", vmin=0, vmax=1)
    holes = (log_ratio(net, zs) < -1).reshape(12, 12)
    for i, j in holes.nonzero().tolist():
        ax.add_patch(
            Rectangle(
                (j * 9 - 0.5, i * 9 - 0.5),
                9,
                9,
                fill=False,
                edgecolor="red",
                linewidth=1.5,
            )
        )
    ax.set(
        title=f"{prior} prior: decoded grid, z in [-3, 3]^2 (red: holes)",
        xticks=[],
        yticks=[],
    )
saved = plots.save(fig, FIGURES / "04_holes.png")

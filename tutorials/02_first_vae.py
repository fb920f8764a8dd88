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
# # 2. A first VAE, the Pyro way
#
# A variational autoencoder is two probabilistic programs:
#
# * the **model** $p_\theta(x, z) = p(z)\,p_\theta(x \mid z)$: draw a code $z \sim \mathcal N(0, I)$,
#   decode it into pixel probabilities, draw the pixels;
# * the **guide** $q_\phi(z \mid x)$: an encoder network that, given an image, proposes where its
#   code lies.
#
# Stochastic variational inference (SVI) maximizes the ELBO
# $\mathcal L(\theta, \phi) = \mathbb E_{q_\phi(z\mid x)}[\log p_\theta(x, z) - \log q_\phi(z \mid x)]$
# with noisy gradients. This tutorial writes both programs by hand, trains them, then shows *why* the
# gradients work: the reparameterization trick (checked: far lower variance than the score-function
# estimator), and the closed-form KL of `TraceMeanField_ELBO` (checked: lower variance than
# `Trace_ELBO`). It ends with reconstructions and samples of the library's VAE.
#
# Set `PYRO_VAE_SMOKE=1` to run everything in a few seconds (fewer epochs and repetitions).

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from torch import nn

from pyro_vae import config, data
from pyro_vae.estimate import diagnostics
from pyro_vae.models import vae
from pyro_vae.run import train
from pyro_vae.viz import plots

SMOKE = os.environ.get("PYRO_VAE_SMOKE", "0") not in ("", "0")
FIGURES = Path("figures")
FIGURES.mkdir(exist_ok=True)
EPOCHS = 2 if SMOKE else 40  # epochs of the hand-written loop and of the library VAE
REPEATS = 30 if SMOKE else 200  # gradient draws per variance estimate
pyro.set_rng_seed(0)

# %% [markdown]
# ## The data: 8x8 handwritten digits, binarized
#
# scikit-learn's digits ship with the library, so nothing is downloaded. Pixels are thresholded at
# one half, so a Bernoulli likelihood fits them.

# %%
cfg = config.load(
    overrides={
        "train.epochs": EPOCHS,
        "train.device": "cpu",
        "objective.name": "meanfield",
    }
)
digits = data.load(cfg.data)
x_train, x_test = digits.train, digits.test
print(
    f"train {tuple(x_train.shape)}, test {tuple(x_test.shape)}, values {x_train.unique().tolist()}"
)

# %% [markdown]
# ## Model and guide, written by hand
#
# Three Pyro idioms carry the whole VAE:
#
# * `pyro.module(name, net)` registers a network's parameters with Pyro, so that SVI's optimizer sees
#   them. Forget it and the network is never trained.
# * `pyro.plate("data", N)` declares that the N rows are conditionally independent. Pyro then knows the
#   log-densities sum over rows, and sub-sampling a mini-batch stays unbiased.
# * `.to_event(1)` says that the 10 latent coordinates (and the 64 pixels) form *one* event: their
#   log-densities are summed into one number per image.
#
# The model and the guide must use the same site name (`"z"`) for the latent: that is how SVI pairs
# the guide's proposal with the model's prior.

# %%
LATENT_DIM, HIDDEN = 10, 200


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(64, HIDDEN), nn.Tanh())
        self.loc = nn.Linear(HIDDEN, LATENT_DIM)
        self.raw_scale = nn.Linear(HIDDEN, LATENT_DIM)

    def forward(self, x):
        h = self.trunk(x)
        return self.loc(h), nn.functional.softplus(self.raw_scale(h)) + 1e-5


decoder = nn.Sequential(nn.Linear(LATENT_DIM, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 64))
encoder = Encoder()


def model(x):
    pyro.module("decoder", decoder)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(LATENT_DIM), 1.0).to_event(1))
        pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)


def guide(x):
    pyro.module("encoder", encoder)
    with pyro.plate("data", x.shape[0]):
        loc, scale = encoder(x)
        pyro.sample("z", dist.Normal(loc, scale).to_event(1))


# %% [markdown]
# ## Training with SVI
#
# `SVI.step(batch)` runs the guide, replays the model on the guide's draw, forms a one-sample ELBO
# estimate and takes an Adam step on every registered parameter. It returns the *loss*, the
# negative ELBO summed over the batch.

# %%
svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), loss=Trace_ELBO())
history = []
for epoch in range(EPOCHS):
    order = torch.randperm(len(x_train))
    total = sum(
        svi.step(x_train[order[i : i + 100]]) for i in range(0, len(x_train), 100)
    )
    history.append(-total / len(x_train))
test_elbo_hand = -svi.evaluate_loss(x_test) / len(x_test)
print("hand-written VAE, train ELBO per epoch:", [round(h, 2) for h in history])
print(f"hand-written VAE, test ELBO: {test_elbo_hand:.2f} nats")
assert history[-1] > history[0], "SVI did not raise the ELBO"

# %% [markdown]
# ## The same VAE from the library
#
# `pyro_vae.models.build` wires the parts a config names into the same two programs, `vae.model` and
# `vae.guide` (one `pyro.module` for the whole VAE, the `"data"` plate, sites `"z"` and `"x"`), and
# `pyro_vae.run.train.fit` runs the SVI loop. We train it with `TraceMeanField_ELBO` (see below why).

# %%
net = vae.build(cfg, digits.data_dim)
metrics = train.fit(net, digits, cfg)
print(
    f"library VAE after {EPOCHS} epochs: test ELBO {metrics[-1]['test_elbo']:.2f} nats, "
    f"KL {metrics[-1]['kl']:.2f}, reconstruction {metrics[-1]['reconstruction']:.2f}"
)
saved = plots.training_curves(metrics, FIGURES / "02_training_curves.png")

# %% [markdown]
# ## The reparameterization trick
#
# The ELBO's gradient with respect to the guide's parameters $\phi$ needs the derivative of an
# expectation *under* $q_\phi$. Two unbiased estimators exist:
#
# * **score function** (REINFORCE): $\nabla_\phi \mathbb E_q[f(z)] = \mathbb E_q[f(z)\,\nabla_\phi
#   \log q_\phi(z)]$. It needs only $\log q$, but multiplies the gradient of $\log q$ by the whole
#   noisy value $f(z) = \log p(x, z) - \log q(z\mid x)$, tens of nats here.
# * **reparameterization** (Kingma & Welling 2014): write $z = \mu_\phi(x) + \sigma_\phi(x)\,
#   \varepsilon$ with $\varepsilon \sim \mathcal N(0, I)$, so
#   $\nabla_\phi \mathbb E_q[f(z)] = \mathbb E_\varepsilon[\nabla_\phi f(\mu + \sigma\varepsilon)]$,
#   which uses the slope of $f$, not just its value.
#
# Pyro picks the estimator from the distribution: a site whose distribution has `has_rsample = True`
# (as `Normal` does) is reparameterized; otherwise `Trace_ELBO` adds the score-function term. To
# compare, we wrap the library guide's Gaussian in a `Normal` that declares itself not
# reparameterizable. (Pyro's `.has_rsample_(False)` sets the same flag on one instance, but that
# instance is copied when the plate broadcasts it, and the flag is lost on an `Independent`; a class
# attribute survives the copy.)
#
# We measure the *total variance* of the gradient with respect to the encoder's parameters,
# $\mathbb E\lVert g - \bar g\rVert^2$, from many independent draws on one fixed batch of 100 test
# images, with its standard error.


# %%
class ScoreFunctionNormal(dist.Normal):
    """A Normal whose draws carry no gradient: Pyro estimates its gradients by the score function."""

    has_rsample = False


def score_function_guide(x, kl_weight=1.0):
    pyro.module(net.pyro_name, net)
    q = net.encoder(x).base_dist
    with pyro.plate(vae.DATA_PLATE, x.shape[0]):
        return pyro.sample(vae.LATENT, ScoreFunctionNormal(q.loc, q.scale).to_event(1))


batch = x_test[:100]
encoder_params = list(net.encoder.parameters())


def gradient_variance(elbo, guide_fn, repeats=REPEATS):
    """Total variance of the per-image loss gradient over the encoder's parameters, and its SE."""
    grads = []
    for _ in range(repeats):
        loss = elbo.differentiable_loss(net.model, guide_fn, batch) / len(batch)
        grads.append(
            torch.cat([g.flatten() for g in torch.autograd.grad(loss, encoder_params)])
        )
    g = torch.stack(grads)
    spread = ((g - g.mean(0)) ** 2).sum(1) * repeats / (repeats - 1)
    return spread.mean().item(), spread.std().item() / repeats**0.5


pyro.set_rng_seed(1)
estimators = {
    "score function\n(Trace_ELBO)": (Trace_ELBO(), score_function_guide),
    "reparameterized\n(Trace_ELBO)": (Trace_ELBO(), net.guide),
    "reparameterized\n+ analytic KL\n(TraceMeanField_ELBO)": (
        TraceMeanField_ELBO(),
        net.guide,
    ),
}
variance = {
    name: gradient_variance(elbo, guide_fn)
    for name, (elbo, guide_fn) in estimators.items()
}
for name, (value, se) in variance.items():
    print(
        f"{name.replace(chr(10), ' '):55s} gradient variance {value:10.3f} ± {se:.3f}"
    )

# %% [markdown]
# The check: the reparameterized gradient's variance is far below the score function's, and the
# difference is many standard errors wide (statistically solid, not luck of the seed).

# %%
sf, rp, mf = variance.values()
print(f"score function / reparameterized variance ratio: {sf[0] / rp[0]:.0f}")
assert sf[0] - rp[0] > 4 * (sf[1] ** 2 + rp[1] ** 2) ** 0.5
assert (
    sf[0] > 10 * rp[0]
), "the reparameterization trick should cut the variance by more than 10x"

# %% [markdown]
# ## Trace_ELBO versus TraceMeanField_ELBO
#
# The ELBO splits into a reconstruction term and a KL term,
# $\mathcal L = \mathbb E_q[\log p(x\mid z)] - \mathrm{KL}(q(z\mid x)\,\|\,p(z))$.
# `Trace_ELBO` estimates both by Monte Carlo, $\log q(z\mid x) - \log p(z)$ at the drawn $z$.
# `TraceMeanField_ELBO` uses the closed form of the KL between two Gaussians when it exists, so the
# KL part of the gradient carries no sampling noise at all. Where a latent dimension is unused
# ($q(z_d\mid x) \approx p(z_d)$) its exact KL gradient is about zero, while the Monte Carlo one is
# pure noise. The check: meanfield's gradient variance is lower, by more than 3 standard errors.

# %%
print(f"Trace_ELBO / TraceMeanField_ELBO variance ratio: {rp[0] / mf[0]:.2f}")
assert (
    rp[0] - mf[0] > 3 * (rp[1] ** 2 + mf[1] ** 2) ** 0.5
), "meanfield should have lower gradient variance"

fig, ax = plt.subplots(figsize=(6.4, 3.6))
names = list(variance)
ax.bar(
    names,
    [v for v, _ in variance.values()],
    yerr=[2 * s for _, s in variance.values()],
    color=["C3", "C0", "C2"],
    capsize=4,
)
ax.set_yscale("log")
ax.set(
    ylabel="total gradient variance (log scale)",
    title="variance of the encoder's ELBO gradient (±2 SE)\none batch of 100 test digits, trained VAE",
)
ax.tick_params(axis="x", labelsize=8)
saved = plots.save(fig, FIGURES / "02_gradient_variance.png")

# %% [markdown]
# ## Reconstructions and samples
#
# A reconstruction encodes a test image, draws one code from $q(z\mid x)$ and shows the decoder's
# pixel probabilities $\mathbb E[x\mid z]$. A sample draws $z \sim p(z)$ from the prior instead: the
# VAE as a generative model. Samples are blurrier than reconstructions: the prior puts codes where
# no training image was encoded (tutorial 4 looks at those holes).

# %%
pyro.set_rng_seed(2)
shown = x_test[:12]
saved = plots.image_grid(
    [
        ("test digits", shown),
        ("reconstructions", net.reconstruct(shown)),
        ("samples from p(z)", net.sample(12)),
    ],
    digits.image_shape,
    FIGURES / "02_reconstructions_and_samples.png",
)

# %% [markdown]
# A last sanity check: training raised the library VAE's test ELBO above what an untrained VAE of
# the same shape gets.

# %%
untrained = vae.build(cfg, digits.data_dim)
before = diagnostics.elbo_terms(untrained, x_test)["elbo"].mean().item()
print(f"test ELBO untrained {before:.2f} -> trained {metrics[-1]['test_elbo']:.2f}")
assert metrics[-1]["test_elbo"] > before

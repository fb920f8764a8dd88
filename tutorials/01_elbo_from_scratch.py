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
# # 1. The ELBO from scratch, where the truth is known
#
# Variational inference replaces an intractable posterior $p(z\mid x)$ by a tractable $q(z)$ and
# maximizes the **evidence lower bound**
#
# $$\mathrm{ELBO}(q) = \mathbb E_{q}[\log p(x, z) - \log q(z)].$$
#
# Everything in this tutorial is checked against a model whose answers are known in closed form, the
# linear-Gaussian model (probabilistic PCA):
#
# $$z \sim \mathcal N(0, 1),\qquad x \mid z \sim \mathcal N(Wz + b,\; \sigma^2 I),$$
#
# with a 1-dimensional latent $z$ and a 2-dimensional observation $x$. Its evidence is Gaussian,
# $p(x) = \mathcal N(b,\; WW^\top + \sigma^2 I)$, and so is its posterior, $p(z\mid x) =
# \mathcal N(\mu, \Sigma)$ with $\Sigma = (1 + W^\top W/\sigma^2)^{-1}$ and
# $\mu = \Sigma W^\top (x - b)/\sigma^2$. `pyro_vae.checks.analytic.LinearGaussian` has all of it.
#
# We show and check three facts: (1) $\log p(x) = \mathrm{ELBO}(q) + \mathrm{KL}(q\,\|\,p(z\mid x))$
# for *every* $q$; (2) the KL *inside* the ELBO (to the prior) is not the KL the ELBO's gap measures
# (to the posterior); (3) the ELBO, as a surface over $q$'s parameters, peaks exactly at the posterior,
# and SVI climbs it there.
#
# Set `PYRO_VAE_SMOKE=1` to run in a few seconds (fewer Monte Carlo draws and SVI steps).

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO

from pyro_vae.checks.analytic import (
    LinearGaussian,
    gaussian_kl_to_standard_normal,
)
from pyro_vae.infer import traces
from pyro_vae.viz import plots

SMOKE = os.environ.get("PYRO_VAE_SMOKE", "0") not in ("", "0")
FIGURES = Path("figures")
FIGURES.mkdir(exist_ok=True)
NUM_DRAWS = 2_000 if SMOKE else 200_000  # Monte Carlo draws for the ELBO estimate
SVI_STEPS = 500 if SMOKE else 3_000
torch.set_default_dtype(
    torch.float64
)  # closed forms are checked to 1e-10: work in double precision
pyro.set_rng_seed(0)

# %% [markdown]
# ## The model and one observation

# %%
truth = LinearGaussian(
    weight=torch.tensor([[1.2], [-0.7]]),
    bias=torch.tensor([0.5, -0.3]),
    noise_scale=0.6,
)
x = torch.tensor([[1.6, -1.2]])  # one observation, shape (N = 1, P = 2)
log_px = truth.log_marginal(x)[0].item()
post_mean, post_cov = truth.posterior(x)
mu, sd = post_mean[0, 0].item(), post_cov[0, 0].sqrt().item()
print(f"log p(x) = {log_px:.4f};  posterior p(z | x) = N({mu:.4f}, {sd:.4f}^2)")

# %% [markdown]
# ## Fact 1: log p(x) = ELBO + KL(q || p(z|x)), for every q
#
# Write $\log p(x, z) = \log p(x) + \log p(z\mid x)$ inside the ELBO's expectation:
#
# $$\mathrm{ELBO}(q) = \log p(x) - \mathbb E_q[\log q(z) - \log p(z\mid x)]
#   = \log p(x) - \mathrm{KL}(q\,\|\,p(z\mid x)).$$
#
# The KL is never negative, so the ELBO is a lower bound, and the bound is tight exactly when $q$ is
# the posterior. The closed forms of `LinearGaussian` let us check the identity for many Gaussians
# $q(z) = \mathcal N(m, s^2)$ at once, to rounding error.

# %%
g = torch.Generator().manual_seed(0)
locs = 3 * torch.randn(200, 1, generator=g)
scales = torch.exp(torch.randn(200, 1, generator=g))
xs = x.expand(200, 2)
elbos = truth.elbo(xs, locs, scales)
gaps = truth.kl_to_posterior(xs, locs, scales)
worst = (elbos + gaps - log_px).abs().max().item()
print(f"max |ELBO + KL(q || posterior) - log p(x)| over 200 random q: {worst:.2e}")
assert worst < 1e-10
assert (gaps >= 0).all() and (elbos <= log_px + 1e-12).all()

# %% [markdown]
# ### The same ELBO by Monte Carlo, with Pyro
#
# The closed form is a luxury. In general we only have the two programs, model and guide, and Pyro
# estimates the ELBO by drawing $z \sim q$. Here the guide is one fixed Gaussian,
# $q = \mathcal N(\mu + 0.5, (0.8\,s_{post})^2)$, deliberately off the posterior. Each draw gives one
# term $\log p(x, z_k) - \log q(z_k)$ (`traces.log_weights` traces both programs and returns them);
# their mean estimates the ELBO and their spread gives its standard error. `Trace_ELBO`'s own estimate
# (with as many vectorized particles) must agree too.

# %%
q_loc, q_scale = mu + 0.5, 0.8 * sd


def model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 1), 1.0).to_event(1))
        pyro.sample(
            "x",
            dist.Normal(z @ truth.weight.T + truth.bias, truth.noise_scale).to_event(1),
            obs=x,
        )


def fixed_guide(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample(
            "z", dist.Normal(torch.full((x.shape[0], 1), q_loc), q_scale).to_event(1)
        )


terms = traces.log_weights(model, fixed_guide, NUM_DRAWS, x)[:, 0]
mc, mc_se = terms.mean().item(), (terms.std() / NUM_DRAWS**0.5).item()
exact = truth.elbo(x, torch.tensor([[q_loc]]), torch.tensor([[q_scale]]))[0].item()
pyro_elbo = -Trace_ELBO(
    num_particles=NUM_DRAWS, vectorize_particles=True, max_plate_nesting=1
).loss(model, fixed_guide, x)
print(
    f"ELBO closed form {exact:.4f};  Monte Carlo {mc:.4f} ± {mc_se:.4f};  Trace_ELBO {pyro_elbo:.4f}"
)
assert abs(mc - exact) < 4 * mc_se and abs(pyro_elbo - exact) < 4 * mc_se

# %% [markdown]
# ## Fact 2: two different KLs
#
# The ELBO also splits as
#
# $$\mathrm{ELBO}(q) = \underbrace{\mathbb E_q[\log p(x\mid z)]}_{\text{fit the data}}
#   - \underbrace{\mathrm{KL}(q\,\|\,p(z))}_{\text{stay near the prior}}.$$
#
# This KL, to the **prior**, is a term we optimize: it is what `TraceMeanField_ELBO` computes in closed
# form, and what β weights in tutorial 3. The other one, $\mathrm{KL}(q\,\|\,p(z\mid x))$ to the
# **posterior**, is the gap between the bound and $\log p(x)$; we cannot compute it in general (it
# needs the posterior we are approximating), we only shrink it by raising the ELBO.
#
# They disagree completely. At $q$ = the posterior the gap is zero while the KL to the prior is not
# (the observation moved the belief, and that costs nats). At $q$ = the prior the KL to the prior is
# zero while the gap is large. Five choices of $q$ make it concrete.

# %%
candidates = {
    "posterior": (mu, sd),
    "prior N(0, 1)": (0.0, 1.0),
    "too narrow": (mu, sd / 3),
    "too wide": (mu, 2.5 * sd),
    "shifted": (mu + 0.6, sd),
}
loc = torch.tensor([[m] for m, _ in candidates.values()])
scale = torch.tensor([[s] for _, s in candidates.values()])
xc = x.expand(len(candidates), 2)
table = {
    "ELBO": truth.elbo(xc, loc, scale),
    "E_q log p(x|z)": truth.expected_log_likelihood(xc, loc, scale),
    "KL(q || prior)": gaussian_kl_to_standard_normal(loc, scale),
    "KL(q || posterior)": truth.kl_to_posterior(xc, loc, scale),
}
for i, name in enumerate(candidates):
    print(
        f"{name:14s} " + "  ".join(f"{k} {v[i].item():8.4f}" for k, v in table.items())
    )
kl_prior, kl_post = table["KL(q || prior)"], table["KL(q || posterior)"]
assert (
    kl_post[0].abs() < 1e-10 and abs(table["ELBO"][0].item() - log_px) < 1e-10
)  # tight at the posterior
assert kl_prior[0] > 0.5  # ... where the KL to the prior is far from zero
assert kl_prior[1].abs() < 1e-12 and kl_post[1] > 0.5  # and the reverse at the prior
assert torch.allclose(table["ELBO"], table["E_q log p(x|z)"] - kl_prior, atol=1e-10)

# %%
zs = torch.linspace(-3, 3, 400)


def density(m, s):
    return dist.Normal(m, s).log_prob(zs).exp().numpy()


fig, (a, b, c) = plt.subplots(1, 3, figsize=(16, 4.2))
a.plot(zs.numpy(), density(0.0, 1.0), color="grey", linewidth=2, label="prior p(z)")
a.plot(
    zs.numpy(), density(mu, sd), color="black", linewidth=2, label="posterior p(z|x)"
)
for i, (name, (m, s)) in enumerate(list(candidates.items())[2:]):
    a.plot(
        zs.numpy(), density(m, s), linestyle="--", color=f"C{i + 2}", label=f"q: {name}"
    )
a.set(xlabel="z", ylabel="density", title="prior, posterior and three imperfect q")
a.legend(fontsize=8)
names = list(candidates)
ticks = torch.arange(len(names))
b.axhline(log_px, color="black", label="log p(x) (exact)")
b.bar(
    ticks.tolist(),
    (log_px - table["ELBO"]).tolist(),
    bottom=table["ELBO"].tolist(),
    color="C3",
    alpha=0.6,
    label="gap = KL(q || posterior)",
)
b.plot(ticks.tolist(), table["ELBO"].tolist(), "o", color="C0", label="ELBO(q)")
b.set_xticks(ticks.tolist(), names, fontsize=8)
b.set(
    ylabel="nats",
    title="log p(x) = ELBO + KL(q || p(z|x))",
    ylim=(table["ELBO"].min().item() - 0.6, log_px + 0.8),
)
b.legend(fontsize=8)
c.bar(
    (ticks - 0.2).tolist(),
    kl_prior.tolist(),
    width=0.4,
    color="C1",
    label="KL(q || prior p(z)): inside the ELBO",
)
c.bar(
    (ticks + 0.2).tolist(),
    kl_post.tolist(),
    width=0.4,
    color="C3",
    label="KL(q || posterior): the ELBO's gap",
)
c.set_xticks(ticks.tolist(), names, fontsize=8)
c.set(ylabel="nats", title="the two KLs are different quantities")
c.legend(fontsize=8)
saved = plots.save(fig, FIGURES / "01_two_kls.png")

# %% [markdown]
# ## Fact 3: the ELBO surface peaks at the posterior
#
# Fix $x$ and view the ELBO as a function of $q$'s two parameters, the mean $m$ and the log standard
# deviation $\log s$. In closed form (1-D latent, $w = \lVert W\rVert^2$):
#
# $$\mathrm{ELBO}(m, s) = \log \mathcal N(x;\, Wm + b,\, \sigma^2 I) - \frac{s^2 w}{2\sigma^2}
#   - \tfrac12\big(m^2 + s^2 - 1 - \log s^2\big).$$
#
# Since $\mathrm{ELBO} = \log p(x) - \mathrm{KL}(q\,\|\,p(z\mid x))$ and the Gaussian family contains the
# posterior, the maximum is at $(m, \log s) = (\mu, \log \sqrt\Sigma)$, where it equals $\log p(x)$.
# The check: the best point of a fine grid is within one grid step of the posterior's parameters.

# %%
m_axis = torch.linspace(-1.0, 2.5, 351)
ls_axis = torch.linspace(-2.5, 0.8, 331)
mm, ll = torch.meshgrid(m_axis, ls_axis, indexing="xy")
surface = truth.elbo(
    x.expand(mm.numel(), 2), mm.reshape(-1, 1), ll.exp().reshape(-1, 1)
).reshape(mm.shape)
best = surface.argmax()
best_m, best_ls = mm.reshape(-1)[best].item(), ll.reshape(-1)[best].item()
step_m, step_ls = (m_axis[1] - m_axis[0]).item(), (ls_axis[1] - ls_axis[0]).item()
log_sd = torch.tensor(sd).log().item()
print(
    f"grid maximum at m = {best_m:.3f}, log s = {best_ls:.3f}; "
    f"posterior mu = {mu:.3f}, log sd = {log_sd:.3f}"
)
assert abs(best_m - mu) <= step_m and abs(best_ls - log_sd) <= step_ls
assert surface.max().item() <= log_px + 1e-12

# %% [markdown]
# ### SVI climbs the surface
#
# Now forget the closed form and let Pyro find the maximum from noisy one-draw gradients. The guide
# has two free parameters, registered with `pyro.param`, and starts far off (at $m=-0.7$, $s = 1.8$).
# Each SVI step draws one $z$ by the reparameterization trick and moves uphill; the path wanders
# because each gradient is a Monte Carlo estimate. Averaging the last third of the iterates (Polyak
# averaging) removes most of that noise, and the average should sit on the posterior's parameters.


# %%
def guide(x):
    loc = pyro.param("loc", torch.tensor(-0.7))
    log_scale = pyro.param("log_scale", torch.tensor(1.8).log())
    with pyro.plate("data", x.shape[0]):
        pyro.sample(
            "z", dist.Normal(loc.expand(x.shape[0], 1), log_scale.exp()).to_event(1)
        )


pyro.clear_param_store()
pyro.set_rng_seed(3)
svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), loss=Trace_ELBO())
path = []
for _ in range(SVI_STEPS):
    svi.step(x)
    path.append((pyro.param("loc").item(), pyro.param("log_scale").item()))
path = torch.tensor(path)
tail = path[-SVI_STEPS // 3 :].mean(0)
print(
    f"SVI, mean of the last third of {SVI_STEPS} steps: m = {tail[0]:.3f}, log s = {tail[1]:.3f}"
)
assert abs(tail[0] - mu) < 0.1 and abs(tail[1] - log_sd) < 0.15

# %%
fig, ax = plt.subplots(figsize=(7.5, 5.6))
levels = (log_px - torch.logspace(-2.5, 1.3, 14).flip(0)).tolist()
filled = ax.contourf(
    m_axis.numpy(),
    ls_axis.numpy(),
    surface.clamp(min=levels[0]).numpy(),
    levels=[levels[0] - 1e-9] + levels[1:] + [log_px],
    cmap="viridis",
)
fig.colorbar(
    filled, ax=ax, label="ELBO(m, log s)  [nats; levels log-spaced below the top]"
)
ax.plot(
    path[:, 0].numpy(),
    path[:, 1].numpy(),
    color="magenta",
    linewidth=0.7,
    alpha=0.8,
    label="SVI path (Trace_ELBO)",
)
ax.plot(*path[0].tolist(), "o", color="magenta", markersize=6, label="SVI start")
ax.plot(
    mu,
    log_sd,
    "*",
    color="red",
    markersize=16,
    label=f"exact posterior: ELBO = log p(x) = {log_px:.3f}",
)
ax.plot(0.0, 0.0, "s", color="orange", markersize=7, label="q = prior N(0, 1)")
ax.set(
    xlabel="m (mean of q)",
    ylabel="log s (log standard deviation of q)",
    title="the ELBO over q = N(m, s^2): its maximum is the posterior",
)
ax.legend(fontsize=8, loc="lower right")
saved = plots.save(fig, FIGURES / "01_elbo_surface.png")

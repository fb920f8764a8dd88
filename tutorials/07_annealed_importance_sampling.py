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
# # 7. Annealed importance sampling: a gold-standard log p(x)
#
# Tutorial 5 estimated $\log p(x)$ by importance sampling (IS) with the encoder $q(z\mid x)$ as the
# proposal. That estimate is only as good as the proposal: $\log \frac1K\sum_k w_k$ is biased *low*
# (Jensen), and when $q$ misses part of the posterior the missing mass shows up only in rare, huge
# weights that $K$ draws never meet. The estimate then sits nats below the truth while its standard
# error looks healthy. A poor encoder (the case where we most want to know how poor) thus makes the
# VAE look worse than it is.
#
# **Annealed importance sampling** (AIS; Neal 2001, for VAEs Wu et al. 2017) does not rely on one
# jump from $q$ to the posterior. It walks a path of distributions
#
# $$f_t(z) = q(z\mid x)^{1-\beta_t}\, p(x, z)^{\beta_t}, \qquad 0 = \beta_0 < \beta_1 < \dots <
#   \beta_T = 1,$$
#
# moving each chain with an MCMC step (here Hamiltonian Monte Carlo) that leaves $f_t$ invariant, and
# collecting the weight $\log w = \sum_t (\beta_t - \beta_{t-1})[\log p(x, z_{t-1}) - \log
# q(z_{t-1}\mid x)]$. Still $\mathbb E[w] = p(x)$, so the log-mean-exp over $M$ chains is again a
# stochastic lower bound, but a far tighter one for the same work. Run backwards from an exact
# posterior draw (available on data simulated from the model), the same path gives a stochastic
# *upper* bound: **bidirectional Monte Carlo** (BDMC; Grosse et al. 2015) sandwiches $\log p(x)$.
#
# `pyro_vae.estimate.ais` does all of it for any VAE the library builds. We check it against the exact
# linear-Gaussian $\log p(x)$, then use it on digits to split the VAE's gap $\log p(x) -
# \mathrm{ELBO}$ into its two causes (Cremer et al. 2018). Set `PYRO_VAE_SMOKE=1` to run in seconds.

# %%
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import torch

from pyro_vae import config, data
from pyro_vae.checks.analytic_models import (
    linear_vae,
    set_perturbed_diagonal_guide,
    true_model,
)
from pyro_vae.estimate import ais, amortization, marginal
from pyro_vae.models import vae
from pyro_vae.run import train
from pyro_vae.viz import plots

SMOKE = os.environ.get("PYRO_VAE_SMOKE", "0") not in ("", "0")
FIGURES = Path("figures")
FIGURES.mkdir(exist_ok=True)
NUM_POINTS = 20 if SMOKE else 100  # linear-Gaussian data points
CHAINS = 8 if SMOKE else 16  # AIS chains per data point
STEPS = [1, 30, 300] if SMOKE else [1, 3, 10, 30, 100, 300, 1000]  # annealing steps T
EPOCHS = 5 if SMOKE else 60  # digits VAE
DIGITS = 50 if SMOKE else 300  # test digits
DIGIT_STEPS = 50 if SMOKE else 500
torch.set_default_dtype(torch.float64)
pyro.set_rng_seed(0)

# %% [markdown]
# ## Part 1: a poor encoder on the linear-Gaussian model
#
# A 10-dimensional latent, 24-dimensional data, $x = Wz + b + \varepsilon$; the library's own VAE
# holds this model exactly (`analytic.linear_vae`), and its diagonal encoder is set to a deliberately
# poor one: the posterior mean map with 30% relative noise and randomly mis-scaled widths.

# %%
g = torch.Generator().manual_seed(0)
truth = true_model(g, data_dim=24, latent_dim=10, noise_scale=1.0)
x = truth.sample(NUM_POINTS, g)
exact = truth.log_marginal(x).mean().item()
net = linear_vae(truth, "diagonal")
set_perturbed_diagonal_guide(net, truth, g, spread=0.3)
with torch.no_grad():
    q = net.encoder(x).base_dist
elbo = truth.elbo(x, q.loc, q.scale).mean().item()
print(f"exact mean log p(x) {exact:.3f}; the encoder's ELBO {elbo:.3f} (closed forms)")

# %% [markdown]
# ## AIS as a path of distributions
#
# The normalized $f_t$ for a few $\beta_t$ of the sigmoid schedule (Grosse et al. 2015: small steps
# at both ends), in the latent coordinate where the encoder misses the posterior most. Both ends
# are Gaussian here, so every $f_t$ is too (precisions add: $(1-\beta)\Lambda_q + \beta\Lambda_p$).
# In one coordinate $q$ still overlaps the posterior, but over ten coordinates the mismatches
# multiply, and one importance-sampling jump from $q$ rarely lands where the posterior mass is.
# Neighbouring $f_t$ overlap closely, so each step's weight varies little, and HMC moves the chains
# as the target shifts.

# %%
post_mean, post_cov = truth.posterior(x[:1])
post_prec = torch.linalg.inv(post_cov)
q_prec, q_mean = torch.diag(q.scale[0].pow(-2)), q.loc[0]
# the coordinate where the encoder misses most, in posterior standard deviations
j = ((q_mean - post_mean[0]).abs() / post_cov.diagonal().sqrt()).argmax().item()
# both ends are Gaussian, so every f_t is: precision (1 - beta) Lq + beta Lp, and its mean
betas = ais.schedule(100)
fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
curves = []
for t in [0, 20, 40, 50, 60, 80, 100]:
    prec = (1 - betas[t]) * q_prec + betas[t] * post_prec
    cov = torch.linalg.inv(prec)
    mean = cov @ (
        (1 - betas[t]) * q_prec @ q_mean + betas[t] * post_prec @ post_mean[0]
    )
    curves.append((betas[t].item(), mean[j].item(), cov[j, j].sqrt().item()))
lo = min(m - 4 * s for _, m, s in curves)
hi = max(m + 4 * s for _, m, s in curves)
grid = torch.linspace(lo, hi, 400)
for i, (beta, m, sd) in enumerate(curves):
    dens = torch.distributions.Normal(m, sd).log_prob(grid).exp()
    a.plot(grid, dens, color=plt.cm.viridis(i / 6), label=f"beta = {beta:.2f}")
a.set(
    xlabel=f"z_{j + 1} (marginal of f_t)",
    ylabel="density",
    title="f_t from q(z|x) (beta = 0) to p(z|x) (beta = 1)",
)
a.legend(fontsize=7)
b.plot(range(101), betas, label="sigmoid")
b.plot(range(101), ais.schedule(100, "linear"), label="linear")
b.set(xlabel="t", ylabel="beta_t", title="schedules (T = 100)")
b.legend()
saved = plots.save(fig, FIGURES / "07_path.png")

# %% [markdown]
# ## Check 1: IS from the poor encoder underestimates; AIS does not, at equal compute
#
# For each $T$ we run AIS with $M$ chains and count its evaluations of $\log p(x, z)$ per data point
# (`model_evals`, gradients included), then give IS **three** draws per AIS evaluation (a gradient
# costs about two forward passes). IS stays below the truth by many standard errors, its own SE
# notwithstanding; AIS closes in on the truth as $T$ grows and ends within 4 SE of it.

# %%
rows = []
for steps in STEPS:
    pyro.set_rng_seed(steps)
    est = ais.annealed_importance_sampling(
        net.model, net.guide, x, num_steps=steps, num_chains=CHAINS
    )
    k = 3 * est.model_evals * CHAINS
    imp = marginal.log_marginal_likelihood(net.model, net.guide, x, num_samples=k)
    rows.append(
        (
            k,
            est.log_marginal.mean().item(),
            ais.mean_stderr(est.stderr),
            imp.log_marginal.mean().item(),
            ais.mean_stderr(imp.stderr),
            est.acceptance.mean().item(),
        )
    )
    print(
        f"T={steps:5d}: AIS {rows[-1][1] - exact:+.3f} ± {rows[-1][2]:.3f} "
        f"(acceptance {rows[-1][5]:.2f}) | IS with K={k}: {rows[-1][3] - exact:+.3f} "
        f"± {rows[-1][4]:.3f}  (error vs exact, nats)"
    )
k, a_mean, a_se, i_mean, i_se, _ = rows[-1]
assert abs(a_mean - exact) < 4 * a_se, "AIS is not within 4 SE of exact log p(x)"
assert (
    i_mean < exact - 4 * i_se
), "IS from the poor encoder should sit far below the truth"
assert a_mean - i_mean > 4 * math.hypot(
    a_se, i_se
), "AIS should beat IS at equal compute"
assert abs(rows[0][1] - exact) > abs(a_mean - exact) + 4 * math.hypot(rows[0][2], a_se)

# %% [markdown]
# ## Check 2: the BDMC sandwich on simulated data
#
# `ais.simulate` draws $(x, z)$ pairs from the model itself, so each $z$ is an exact posterior draw
# for its $x$. Forward AIS from the encoder bounds $\log p(x)$ from below, reverse AIS from $z$ from
# above, both in expectation; the gap between them bounds either one's error, and we can read it
# without knowing $\log p(x)$. Here we do know it: the sandwich must hold (within 4 SE), and the
# gap must shrink as $T$ grows.

# %%
pyro.set_rng_seed(11)
xs, zs = ais.simulate(net.model, NUM_POINTS, truth.data_dim, dtype=torch.float64)
exact_sim = truth.log_marginal(xs).mean().item()
sandwich = []
for steps in STEPS:
    fwd, rev = ais.bdmc(
        net.model, net.guide, xs, zs, num_steps=steps, num_chains=CHAINS
    )
    f, r = fwd.log_marginal.mean().item(), rev.log_marginal.mean().item()
    sf, sr = ais.mean_stderr(fwd.stderr), ais.mean_stderr(rev.stderr)
    sandwich.append((steps, f, r))
    print(
        f"T={steps:5d}: forward {f - exact_sim:+.3f}  reverse {r - exact_sim:+.3f}  gap {r - f:.3f}"
    )
    assert f < exact_sim + 4 * sf and r > exact_sim - 4 * sr, "the sandwich broke"
gaps = [r - f for _, f, r in sandwich]
assert gaps[-1] < gaps[0] / 10, "the BDMC gap should shrink as T grows"

fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
evals = [r[0] / 3 for r in rows]
a.errorbar(
    evals,
    [r[1] - exact for r in rows],
    yerr=[2 * r[2] for r in rows],
    marker="o",
    capsize=3,
    label="AIS (±2 SE)",
)
a.errorbar(
    [r[0] for r in rows],
    [r[3] - exact for r in rows],
    yerr=[2 * r[4] for r in rows],
    marker="s",
    capsize=3,
    label="IS, 3 draws per AIS evaluation",
)
a.axhline(0, color="black", label="exact")
a.set_xscale("log")
a.set(
    xlabel="log p(x, z) evaluations per data point",
    ylabel="estimate - exact [nats]",
    title="poor encoder: AIS vs IS",
)
a.legend(fontsize=8)
b.plot(
    STEPS,
    [f - exact_sim for _, f, _ in sandwich],
    marker="o",
    label="forward AIS (lower)",
)
b.plot(
    STEPS,
    [r - exact_sim for _, _, r in sandwich],
    marker="o",
    label="reverse AIS (upper)",
)
b.axhline(0, color="black", label="exact")
b.set_xscale("log")
b.set(
    xlabel="T (annealing steps)",
    ylabel="bound - exact [nats]",
    title="BDMC sandwich, simulated data",
)
b.legend(fontsize=8)
saved = plots.save(fig, FIGURES / "07_ais_vs_is_and_bdmc.png")

# %% [markdown]
# ## Part 2: the amortization gap on digits
#
# A VAE's $\log p(x) - \mathrm{ELBO}$ has two causes (Cremer et al. 2018). The **approximation gap**:
# even the best $q$ of the guide's family (diagonal Gaussians) is not the posterior. The
# **amortization gap**: the encoder, one network for all $x$, does not find that best $q$ for each
# point. `amortization.amortization_gap` fits a separate diagonal Gaussian to each test digit by SVI,
# starting from the encoder's, and gives
#
# $$\log p(x) - \mathrm{ELBO} = \underbrace{\log p(x) - \mathrm{ELBO}_{\text{local}}^*}_{\text{approximation}}
#   + \underbrace{\mathrm{ELBO}_{\text{local}}^* - \mathrm{ELBO}}_{\text{amortization}},$$
#
# with AIS for $\log p(x)$. Checks: ELBO $\le$ IS $\le$ AIS up to 4 SE, both gaps $\ge 0$ up to 4 SE,
# and the BDMC gap on digits simulated from the trained model is under a nat.

# %%
torch.set_default_dtype(torch.float32)
cfg = config.load(overrides={"train.epochs": EPOCHS, "train.device": "cpu"})
digits = data.load(cfg.data)
pyro.set_rng_seed(0)
model = vae.build(cfg, digits.data_dim)
train.fit(model, digits, cfg)
model.eval()
x_test = digits.test[:DIGITS]
pyro.set_rng_seed(1)
est = ais.annealed_importance_sampling(
    model.model, model.guide, x_test, num_steps=DIGIT_STEPS, num_chains=CHAINS
)
a_mean, a_se = est.log_marginal.mean().item(), ais.mean_stderr(est.stderr)
imp = marginal.log_marginal_likelihood(
    model.model, model.guide, x_test, num_samples=1000
)
i_mean, i_se = imp.log_marginal.mean().item(), ais.mean_stderr(imp.stderr)
gap = amortization.amortization_gap(model.model, model.guide, x_test)
e_mean = gap["elbo"].mean().item()
e_se = gap["elbo_stderr"].pow(2).sum().sqrt().item() / DIGITS
l_mean = gap["local_elbo"].mean().item()
l_se = gap["local_elbo_stderr"].pow(2).sum().sqrt().item() / DIGITS
xs, zs = ais.simulate(model.model, DIGITS, digits.data_dim)
fwd, rev = ais.bdmc(
    model.model, model.guide, xs, zs, num_steps=DIGIT_STEPS, num_chains=CHAINS
)
f, r = fwd.log_marginal.mean().item(), rev.log_marginal.mean().item()
print(
    f"{DIGITS} test digits: ELBO {e_mean:.3f} ± {e_se:.3f}, local ELBO {l_mean:.3f} ± {l_se:.3f}, "
    f"IS (K=1000) {i_mean:.3f} ± {i_se:.3f}, AIS (T={DIGIT_STEPS}) {a_mean:.3f} ± {a_se:.3f} "
    f"(acceptance {est.acceptance.mean():.2f})"
)
print(
    f"approximation gap {a_mean - l_mean:.3f}, amortization gap {l_mean - e_mean:.3f} nats; "
    f"BDMC on {DIGITS} simulated digits: forward {f:.3f}, reverse {r:.3f}, gap {r - f:.3f}"
)
assert i_mean > e_mean - 4 * math.hypot(i_se, e_se), "IS below the ELBO"
assert a_mean > i_mean - 4 * math.hypot(a_se, i_se), "AIS below IS"
assert l_mean > e_mean - 4 * math.hypot(l_se, e_se), "the local fit lost ELBO"
assert a_mean > l_mean - 4 * math.hypot(a_se, l_se), "AIS below the best local ELBO"
assert r - f < 1.0, "the BDMC gap on digits should be under a nat"

plots.bound_ladder(
    [1000],
    [i_mean],
    [i_se],
    e_mean,
    FIGURES / "07_digits_ladder.png",
    ais=(a_mean, a_se),
    bdmc=(f, r),
)
fig, ax = plt.subplots(figsize=(5, 3.4))
ax.bar(
    ["approximation", "amortization"],
    [a_mean - l_mean, l_mean - e_mean],
    color=["C0", "C1"],
)
ax.set(ylabel="nats per digit", title=f"AIS - ELBO = {a_mean - e_mean:.2f} nats, split")
saved = plots.save(fig, FIGURES / "07_digits_gaps.png")

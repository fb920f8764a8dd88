"""KL schedules, the reconstruction weight and free bits (schedules.py, their objective and the
VAE's site scaling) against hand-computed values and closed forms; float64, fixed seeds.
"""

import math

import pyro
import pytest
import torch
from pyro import poutine

from pyro_vae import config as cfg
from pyro_vae.checks.analytic import gaussian_kl_to_standard_normal
from pyro_vae.checks.analytic_models import (
    diagonal_guide_params,
    linear_vae,
    set_perturbed_diagonal_guide,
    true_model,
)
from pyro_vae.data import Dataset
from pyro_vae.errors import ConfigError
from pyro_vae.infer import objectives
from pyro_vae.infer.objectives import build_objective
from pyro_vae.infer.schedules import free_bits_kl, kl_weight, step_args
from pyro_vae.models.vae import LATENT, OBSERVED, VAE, build
from pyro_vae.run import train


def weights(overrides, steps, steps_per_epoch):
    config = cfg.load(None, overrides)
    return [kl_weight(config, step, steps_per_epoch) for step in range(steps)]


def test_cyclical_schedule_matches_hand_computed_weights():
    # 2 epochs x 5 steps, 2 cycles of 5 steps, rising over 2.5 steps to beta = 2
    got = weights(
        {
            "train.epochs": 2,
            "train.beta": 2.0,
            "train.kl_schedule": "cyclical",
            "train.kl_cycles": 2,
            "train.kl_cycle_ratio": 0.5,
        },
        10,
        5,
    )
    assert got == pytest.approx([0.8, 1.6, 2.0, 2.0, 2.0] * 2, abs=1e-12)
    # 10 steps in 3 cycles of ceil(10 / 3) = 4 steps, rising over the whole cycle
    got = weights(
        {
            "train.epochs": 2,
            "train.kl_schedule": "cyclical",
            "train.kl_cycles": 3,
            "train.kl_cycle_ratio": 1.0,
        },
        10,
        5,
    )
    assert got == pytest.approx(
        [0.25, 0.5, 0.75, 1.0, 0.25, 0.5, 0.75, 1.0, 0.25, 0.5], abs=1e-12
    )


def test_linear_schedule_is_the_warm_up():
    got = weights({"train.beta": 3.0, "train.kl_warmup_epochs": 1}, 6, 4)
    assert got == pytest.approx([0.75, 1.5, 2.25, 3.0, 3.0, 3.0], abs=1e-12)
    assert weights({"train.beta": 0.5}, 3, 4) == [0.5, 0.5, 0.5]


def test_fit_steps_with_the_schedule_and_the_reconstruction_weight(monkeypatch):
    seen = []
    step = train.train_step

    def spy(svi, x, weight, reconstruction_weight=1.0):
        seen.append((weight, reconstruction_weight, x.shape[0]))
        return step(svi, x, weight, reconstruction_weight)

    monkeypatch.setattr(train, "train_step", spy)
    generator = torch.Generator().manual_seed(0)
    truth = true_model(generator, data_dim=4, latent_dim=2)
    x = truth.sample(40, generator).float()
    config = cfg.load(
        None,
        {
            "model.latent_dim": 2,
            "model.hidden": [],
            "likelihood.name": "gaussian",
            "train.epochs": 2,
            "train.batch_size": 10,
            "train.device": "cpu",
            "train.kl_schedule": "cyclical",
            "train.kl_cycles": 2,
            "train.kl_cycle_ratio": 0.5,
            "train.reconstruction_weight": 0.5,
        },
    )
    vae = build(config, x.shape[1])
    metrics = train.fit(vae, Dataset("linear", x, x[:10], (1, 4)), config)
    assert [w for w, _, _ in seen] == pytest.approx([0.5, 1.0, 1.0, 1.0] * 2)
    assert {r for _, r, _ in seen} == {0.5}
    assert [m["kl_weight"] for m in metrics] == pytest.approx([1.0, 1.0])


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"train.kl_schedule": "cosine"}, "unknown \\[train\\] kl_schedule 'cosine'"),
        (
            {"train.kl_schedule": "cyclical", "train.kl_warmup_epochs": 2},
            "kl_warmup_epochs belongs to the linear schedule",
        ),
        ({"train.kl_cycles": 0}, "kl_cycles must be >= 1"),
        ({"train.kl_cycle_ratio": 0.0}, "kl_cycle_ratio must be in \\(0, 1\\]"),
        ({"train.kl_cycle_ratio": 1.5}, "kl_cycle_ratio must be in \\(0, 1\\]"),
        ({"train.reconstruction_weight": 0.0}, "reconstruction_weight must be"),
        ({"train.reconstruction_weight": math.inf}, "reconstruction_weight must be"),
        (
            {"train.reconstruction_weight": 2.0, "objective.name": "iwae"},
            "use 1 with iwae",
        ),
        ({"train.free_bits": -0.1}, "free_bits must be a number of nats >= 0"),
        (
            {"train.free_bits": 0.5, "objective.name": "iwae"},
            "free_bits needs an objective with a separate KL term",
        ),
        (
            {"train.free_bits": 0.5, "guide.name": "iaf"},
            "free_bits needs a KL that splits over latent dimensions",
        ),
        (
            {"train.free_bits": 0.5, "prior.name": "vamp"},
            "free_bits needs a KL that splits over latent dimensions",
        ),
    ],
)
def test_bad_weights_are_refused_with_a_clear_message(overrides, message):
    with pytest.raises(ConfigError, match=message):
        cfg.load(None, overrides)


def test_cli_flags_reach_the_config():
    from pyro_vae.cli.app import overrides, parser

    args = parser().parse_args(
        [
            "train",
            "--free-bits",
            "0.25",
            "--reconstruction-weight",
            "2",
            "--kl-schedule",
            "cyclical",
            "--kl-cycles",
            "3",
            "--kl-cycle-ratio",
            "0.4",
        ]
    )
    t = cfg.load(None, overrides(args)).train
    assert (t.free_bits, t.reconstruction_weight) == (0.25, 2.0)
    assert (t.kl_schedule, t.kl_cycles, t.kl_cycle_ratio) == ("cyclical", 3, 0.4)


# -- the reconstruction weight scales the "x" site, and nothing else ---------------------------


@pytest.fixture
def problem():
    generator = torch.Generator().manual_seed(5)
    truth = true_model(generator, data_dim=5, latent_dim=3, noise_scale=0.6)
    x = truth.sample(200, generator)
    vae = linear_vae(truth, "diagonal")
    set_perturbed_diagonal_guide(vae, truth, generator)
    yield truth, x, vae
    vae.release_params()


def loss_and_hand_computed(vae, x, name, jit, kl_w=0.7, rec_w=2.5):
    """One ``loss_and_grads`` call (as SVI.step makes it, weights as fit passes them) and the
    same loss by hand, -(rec_w log p(x | z) - kl_w KL), from traces of the same draw (seed 11);
    KL in closed form for meanfield, Monte Carlo for trace."""
    elbo = objectives.OBJECTIVES.build(name, None, {"jit": jit})
    pyro.set_rng_seed(11)
    loss = elbo.loss_and_grads(vae.model, vae.guide, *step_args(x, kl_w, rec_w))
    pyro.set_rng_seed(11)
    guide = poutine.trace(vae.guide).get_trace(x)
    model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x)
    rec = model.nodes[OBSERVED]["fn"].log_prob(x).sum().item()
    z = guide.nodes[LATENT]["value"]
    mc_kl = (guide.nodes[LATENT]["fn"].log_prob(z) - vae.prior().log_prob(z)).sum()
    with torch.no_grad():
        loc, scale = diagonal_guide_params(vae, x)
    kl = gaussian_kl_to_standard_normal(loc, scale).sum().item()
    expected = -(rec_w * rec - kl_w * (kl if name == "meanfield" else mc_kl.item()))
    # a loss that left the reconstruction unscaled would be off by (rec_w - 1) * rec
    assert abs((rec_w - 1) * rec) > 100
    return loss, expected


@pytest.mark.parametrize("name", ["trace", "meanfield"])
@pytest.mark.parametrize("jit", [False, True])
def test_reconstruction_weight_scales_exactly_the_reconstruction(problem, name, jit):
    _, x, vae = problem
    loss, expected = loss_and_hand_computed(vae, x, name, jit)
    assert loss == pytest.approx(expected, rel=1e-9, abs=1e-8)


@pytest.mark.parametrize("bug", ["unscaled", "kl weight too"])
def test_reconstruction_weight_test_catches_a_wrong_scale(problem, monkeypatch, bug):
    _, x, vae = problem
    model = VAE.model

    def wrong(self, x, kl_weight=1.0, reconstruction_weight=1.0):
        scale = 1.0 if bug == "unscaled" else reconstruction_weight * kl_weight
        return model(self, x, kl_weight, scale)

    monkeypatch.setattr(VAE, "model", wrong)
    loss, expected = loss_and_hand_computed(vae, x, "meanfield", False)
    assert loss != pytest.approx(expected, rel=1e-3)


# -- free bits -----------------------------------------------------------------------------------


def test_free_bits_kl_by_hand():
    kl = torch.tensor([[0.1, 1.0, 0.3], [0.3, 2.0, 0.1]], dtype=torch.float64)
    # per-dimension batch means (0.2, 1.5, 0.2), raised to 0.25: 0.25 + 1.5 + 0.25, times N = 2
    assert free_bits_kl(kl, 0.25).item() == pytest.approx(4.0, abs=1e-12)
    # particles are averaged too: (K, N, D)
    assert free_bits_kl(kl.expand(4, 2, 3), 0.25).item() == pytest.approx(4.0)
    assert free_bits_kl(kl, 0.0).item() == pytest.approx(kl.sum().item())


def free_bits_config(name, nats, particles):
    return cfg.load(
        None,
        {
            "objective.name": name,
            "objective.num_particles": particles,
            "train.free_bits": nats,
        },
    )


def free_bits_against_closed_form(vae, truth, x, name):
    """Mean and SE of 30 free-bits losses and the closed-form expected loss
    -(sum_i lambda_rec E_q log p(x_i | z) - beta N sum_d max(lambda, KL_d)); lambda lies between
    the dimensions' KLs, so that some are raised and some are not."""
    n = x.shape[0]
    with torch.no_grad():
        loc, scale = diagonal_guide_params(vae, x)
    variance = scale.pow(2)
    kl_d = (-0.5 * (1 + variance.log() - loc.pow(2) - variance)).mean(0)
    nats = kl_d.sort().values[:2].mean().item()  # between the smallest two
    assert (kl_d < nats).sum() == 1
    elbo = build_objective(free_bits_config(name, nats, 50))
    assert isinstance(elbo, objectives.FreeBitsELBO)
    kl_w, rec_w = 1.5, 0.8
    draws = torch.tensor(
        [elbo.loss(vae.model, vae.guide, *step_args(x, kl_w, rec_w)) for _ in range(30)]
    )
    rec = truth.expected_log_likelihood(x, loc, scale).sum().item()
    exact = -(rec_w * rec - kl_w * n * kl_d.clamp(min=nats).sum().item())
    return draws.mean().item(), draws.std().item() / math.sqrt(30), exact


@pytest.mark.parametrize("name", ["meanfield", "trace"])
def test_free_bits_objective_matches_the_closed_form(problem, name):
    truth, x, vae = problem
    mean, se, exact = free_bits_against_closed_form(vae, truth, x, name)
    assert abs(mean - exact) < 4 * se


@pytest.mark.parametrize(
    "bug",
    [
        "clamp the total KL",  # max(lambda D, sum_d KL_d) instead of sum_d max(lambda, KL_d)
        "clamp each data point",  # mean_i sum_d max(lambda, KL_id): not the batch average
    ],
)
def test_free_bits_closed_form_test_catches_a_wrong_clamp(problem, monkeypatch, bug):
    truth, x, vae = problem

    def wrong(kl, nats):
        n, d = kl.shape[-2:]
        if bug == "clamp the total KL":
            return n * kl.reshape(-1, d).mean(0).sum().clamp(min=nats * d)
        return n * kl.reshape(-1, n, d).clamp(min=nats).sum(-1).mean()

    monkeypatch.setattr(objectives, "free_bits_kl", wrong)
    mean, se, exact = free_bits_against_closed_form(vae, truth, x, "meanfield")
    assert abs(mean - exact) > 4 * se


def test_free_bits_gradient_is_the_closed_form_gradient(problem):
    """meanfield free bits: the reconstruction's gradient is Monte Carlo, the clamped KL's exact;
    the mean of 40 gradients against autograd of the closed form, each element within 4 SE.
    """
    truth, x, vae = problem
    with torch.no_grad():
        loc, scale = diagonal_guide_params(vae, x)
    variance = scale.pow(2)
    nats = (-0.5 * (1 + variance.log() - loc.pow(2) - variance)).mean(0).max().item()
    elbo = build_objective(free_bits_config("meanfield", 0.9 * nats, 20))
    params = list(vae.encoder.parameters())
    grads = []
    for _ in range(40):
        for p in params:
            p.grad = None
        elbo.loss_and_grads(vae.model, vae.guide, *step_args(x, 2.0, 1.0))
        grads.append(torch.cat([p.grad.reshape(-1) for p in params]))
    grads = torch.stack(grads)
    loc, scale = diagonal_guide_params(vae, x)
    variance = scale.pow(2)
    kl_d = (-0.5 * (1 + variance.log() - loc.pow(2) - variance)).mean(0)
    exact_loss = -(
        truth.expected_log_likelihood(x, loc, scale).sum()
        - 2.0 * x.shape[0] * kl_d.clamp(min=0.9 * nats).sum()
    )
    exact = torch.cat([g.reshape(-1) for g in torch.autograd.grad(exact_loss, params)])
    se = grads.std(0) / math.sqrt(40)
    assert ((grads.mean(0) - exact).abs() < 4 * se + 1e-9).all()


def test_free_bits_refuses_a_pair_whose_kl_does_not_split():
    generator = torch.Generator().manual_seed(0)
    truth = true_model(generator, data_dim=4, latent_dim=2)
    vae = linear_vae(truth, "full_rank")
    elbo = objectives.FreeBitsELBO(0.5)
    with pytest.raises(ConfigError, match="free bits needs diagonal Gaussians"):
        elbo.loss(vae.model, vae.guide, truth.sample(5, generator))
    vae.release_params()

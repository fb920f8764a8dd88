"""Objectives: the JIT-compiled ELBOs (``trace`` and ``meanfield`` with ``jit = true``, the default)."""

import itertools

import pyro
import pytest
import torch
import torch.distributions.multivariate_normal as torch_mvn
import torch.distributions.normal as torch_normal
from pyro.infer import SVI

from pyro_vae import config as cfg
from pyro_vae.models.vae import build
from pyro_vae.registry import GUIDES, OBJECTIVES, PRIORS
from pyro_vae.run.svi import make_svi
from pyro_vae.run.train import train_step

# ---- JIT ELBO: compiled once, same numbers as the eager ELBO (benchmarks/speed_train.py) ----

COMPILED_ATTR = {
    "trace": "_loss_and_surrogate_loss",
    "meanfield": "_differentiable_loss",
}


def small_vae(objective: str, prior: str = "standard_normal", guide: str = "diagonal"):
    options = {"prior.num_pseudo": 7} if prior == "vamp" else {}
    if prior == "vamp" and guide == "planar":  # no inverse: see priors.VampPrior
        options["prior.components"] = "gaussian"
    config = cfg.load(
        None,
        {
            "model.latent_dim": 3,
            "model.hidden": [12],
            "prior.name": prior,
            "guide.name": guide,
            "objective.name": objective,
            **options,
        },
    )
    return config, build(config, 10)


def binary(rows: int) -> torch.Tensor:
    return (
        torch.rand(rows, 10, generator=torch.Generator().manual_seed(3)) < 0.4
    ).float()


def compiled_functions(elbo):
    """Pyro's CompiledFunction for each argument signature seen, and their torch.jit traces."""
    return list(elbo.compiled_by_signature.values())


@pytest.mark.parametrize("objective", ["trace", "meanfield"])
def test_jit_is_the_default_and_compiles_once_over_many_svi_steps(objective):
    config, vae = small_vae(objective)
    svi, _ = make_svi(vae, config)
    elbo = svi.loss_and_grads.__self__
    assert type(elbo).__name__.startswith("Jit")
    x = binary(16)
    for step in range(5):
        train_step(
            svi, x, 0.2 + step / 10
        )  # a changing KL weight is a tensor argument: no re-trace
    (compiled,) = compiled_functions(elbo)
    assert getattr(elbo, COMPILED_ATTR[objective]) is compiled
    assert len(compiled.compiled) == 1


def test_the_meanfield_fix_reuses_its_compiled_function():
    """Pyro 1.9.2's JitTraceMeanField_ELBO re-traces on every step; ours compiles once."""
    config, vae = small_vae("meanfield")
    svi, _ = make_svi(vae, config)
    elbo = svi.loss_and_grads.__self__
    x = binary(16)
    train_step(svi, x, 1.0)
    first = elbo._differentiable_loss
    for _ in range(3):
        train_step(svi, x, 1.0)
    assert elbo._differentiable_loss is first
    assert len(first.compiled) == 1


def test_a_new_batch_shape_gets_its_own_trace():
    config, vae = small_vae("trace")
    svi, _ = make_svi(vae, config)
    elbo = svi.loss_and_grads.__self__
    losses = {rows: [] for rows in (16, 7)}
    for rows in (16, 16, 7, 16, 7):
        losses[rows].append(train_step(svi, binary(rows), 1.0))
    assert len(compiled_functions(elbo)) == 2
    assert all(
        0 < loss < 20 * rows for rows, values in losses.items() for loss in values
    )


def _traced_style_normal(shape, dtype, device):
    """The standard-normal draw that torch.distributions records when traced (torch.normal of
    zeros and ones); eager code calls .normal_(), which gives other numbers from the same seed.
    """
    zeros = torch.zeros(shape, dtype=dtype, device=device)
    return torch.normal(zeros, torch.ones_like(zeros))


@pytest.mark.parametrize("objective", ["trace", "meanfield"])
@pytest.mark.parametrize(
    "prior,guide", list(itertools.product(PRIORS.names(), GUIDES.names()))
)
def test_jit_and_eager_losses_and_gradients_agree_for_the_same_seed(
    monkeypatch, objective, prior, guide
):
    monkeypatch.setattr(torch_normal, "_standard_normal", _traced_style_normal)
    monkeypatch.setattr(torch_mvn, "_standard_normal", _traced_style_normal)
    _, vae = small_vae(objective, prior, guide)
    model, guide_fn = (
        vae.model,
        vae.guide,
    )  # one bound method each: Pyro keys its traces by id
    x = binary(16)
    eager = OBJECTIVES.build(objective, None, {"jit": False})
    jit = OBJECTIVES.build(objective, None, {"jit": True})
    for weight in (1.0, 0.3):  # beta > 0: Pyro's validation refuses a zero scale
        results = []
        for elbo in (eager, jit):
            pyro.set_rng_seed(11)
            vae.zero_grad(set_to_none=True)
            loss = elbo.loss_and_grads(model, guide_fn, x, torch.tensor(weight))
            grads = {
                n: p.grad.clone()
                for n, p in vae.named_parameters()
                if p.grad is not None
            }
            results.append(
                (loss, grads, torch.rand(()))
            )  # the next draw: same RNG consumption
        (eager_loss, eager_grads, eager_next), (jit_loss, jit_grads, jit_next) = results
        assert jit_loss == pytest.approx(eager_loss, rel=1e-5)
        assert eager_grads.keys() == jit_grads.keys()
        for name, grad in eager_grads.items():
            torch.testing.assert_close(
                jit_grads[name], grad, rtol=1e-4, atol=1e-5, msg=name
            )
        assert jit_next == eager_next


def test_compiling_leaves_the_random_stream_where_an_eager_step_would():
    config, vae = small_vae("trace")
    svi, _ = make_svi(vae, config)
    eager_config = cfg.load(
        None, {**{"model.latent_dim": 3, "model.hidden": [12]}, "objective.jit": False}
    )
    eager_vae = build(eager_config, 10)
    eager_svi = SVI(
        eager_vae.model,
        eager_vae.guide,
        make_svi(eager_vae, eager_config)[1],
        loss=OBJECTIVES.build("trace", None, {"jit": False}),
    )
    after = []
    for s in (svi, eager_svi):
        pyro.set_rng_seed(2)
        train_step(s, binary(16), 1.0)
        after.append(torch.rand(()))
    assert after[0] == after[1]


# ---- end of the JIT ELBO block ----

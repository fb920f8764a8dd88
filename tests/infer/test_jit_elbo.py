"""jit_elbo.specialized: a traced ELBO specialized to its argument signature computes what the
trace computes, bit for bit, with fewer operations, and keeps every random draw."""

import pyro
import pytest
import torch
from test_objectives import binary, small_vae

from pyro_vae.infer.jit_elbo import (
    JitTrace_ELBO,
    _hashable_args_kwargs,
    _model_ids,
    specialized,
)
from pyro_vae.infer.objectives import build_objective
from pyro_vae.infer.schedules import step_args
from pyro_vae.run.svi import make_svi


def _graphs(prior: str, guide: str, objective: str):
    """After two SVI steps: the trace Pyro keeps, the specialized copy the direct calls use,
    the parameter names and the step's arguments."""
    config, vae = small_vae(objective, prior, guide)
    vae.release_params()
    svi, _ = make_svi(vae, config)
    elbo = svi.loss_and_grads.__self__
    args = step_args(binary(6), 0.7, 1.0)
    for _ in range(2):
        svi.step(*args)
    ((graph, names),) = elbo.direct_calls.entries.values()
    (compiled,) = elbo.compiled_by_signature.values()
    key = _hashable_args_kwargs(args, _model_ids(svi.model, svi.guide))
    return compiled.compiled[key], graph, names, args


def _run(graph, names, args, seed=5):
    """The graph's outputs and the gradients of its last output, from a fixed seed, and the
    next number the random stream gives."""
    store = pyro.get_param_store()._params
    params = [store[name] for name in names]
    torch.manual_seed(seed)
    with torch.jit.optimized_execution(False):
        out = graph(*params, *args)
    out = out if isinstance(out, tuple) else (out,)
    grads = torch.autograd.grad(out[-1], params, allow_unused=True)
    return out, grads, torch.rand(())


def _same(a, b) -> bool:
    (out_a, grads_a, next_a), (out_b, grads_b, next_b) = a, b
    return (
        all(torch.equal(u, v) for u, v in zip(out_a, out_b))
        and all(
            (u is None and v is None) or torch.equal(u, v)
            for u, v in zip(grads_a, grads_b)
        )
        and torch.equal(next_a, next_b)
    )


def graph_operations(fn) -> int:
    graph = fn.graph.copy()
    torch._C._jit_pass_inline(graph)
    return sum(node.kind() != "prim::Constant" for node in graph.nodes())


@pytest.mark.parametrize("objective", ["trace", "meanfield"])
@pytest.mark.parametrize(
    "prior,guide",
    [
        ("standard_normal", "diagonal"),
        ("vamp", "diagonal"),
        ("mixture", "iaf"),
        ("flow", "full_rank"),
        ("learned_normal", "planar"),
    ],
)
def test_specialized_graph_equals_the_trace_bit_for_bit_with_fewer_operations(
    prior, guide, objective
):
    traced, fast, names, args = _graphs(prior, guide, objective)
    assert fast is not traced
    assert _same(_run(traced, names, args), _run(fast, names, args))
    assert graph_operations(fast) < graph_operations(traced)


def test_the_equality_check_catches_a_specialization_that_freezes_an_input(monkeypatch):
    """The net above fails for a copy that takes a run-time input for a constant: here a pass
    that replaces the KL weight (0.7 at these steps) by the 1 of an unweighted ELBO."""
    cse = torch._C._jit_pass_cse

    def cse_freezing_the_kl_weight(graph):
        kl_weight = list(graph.inputs())[-2]
        with graph.insert_point_guard(next(iter(graph.nodes()))):
            one = graph.insertConstant(torch.ones(()))
        kl_weight.replaceAllUsesWith(one)
        return cse(graph)

    monkeypatch.setattr(torch._C, "_jit_pass_cse", cse_freezing_the_kl_weight)
    traced, fast, names, args = _graphs("standard_normal", "diagonal", "trace")
    assert not _same(_run(traced, names, args), _run(fast, names, args))


def _two_draws(x):
    return x * torch.randn(3) + torch.randn(
        3
    )  # the same call twice: two draws, not one


def test_identical_random_draws_are_neither_merged_nor_folded():
    traced = torch.jit.trace(_two_draws, (torch.ones(3),), check_trace=False)
    fast = specialized(traced)
    assert fast is not traced
    results = []
    for fn in (traced, fast, _two_draws):
        torch.manual_seed(0)
        results.append((fn(torch.ones(3)), torch.rand(())))
    assert all(
        torch.equal(a, b) for other in results[1:] for a, b in zip(results[0], other)
    )


def test_without_torchscripts_passes_the_trace_itself_is_used(monkeypatch):
    def missing(*args):
        raise AttributeError("module 'torch._C' has no attribute '_jit_pass_peephole'")

    monkeypatch.setattr(torch._C, "_jit_pass_peephole", missing)
    traced = torch.jit.trace(lambda x: x * 2, (torch.ones(3),))
    assert specialized(traced) is traced


def _two_gradients():
    """From the same seed and parameters, the compiled trace ELBO's gradients two ways:
    through ``differentiable_loss`` (what ``TensorSVI`` differentiates: DDP, bf16,
    ``train.check_every > 1``) and through ``loss_and_grads`` (Pyro's surrogate loss, what
    ``ModuleSVI`` steps), and the two losses."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    config, vae = small_vae("trace", "standard_normal", "iaf")
    vae.release_params()
    elbo = build_objective(config)
    args = step_args(binary(6), 0.7, 1.0)
    names, params = zip(*vae.named_parameters())
    with pyro.validation_enabled(False):  # fit's default (train.validate = false)
        elbo.differentiable_loss(vae.model, vae.guide, *args)  # compiles
        torch.manual_seed(3)
        loss = elbo.differentiable_loss(vae.model, vae.guide, *args)
        through_loss = torch.autograd.grad(loss, params)
        torch.manual_seed(3)
        value = elbo.loss_and_grads(vae.model, vae.guide, *args)
    surrogate = [p.grad for p in params]
    return (
        loss.item(),
        value,
        dict(zip(names, through_loss)),
        dict(zip(names, surrogate)),
    )


def test_the_compiled_differentiable_loss_has_the_surrogate_losss_gradient():
    """Issue #25: Pyro's JitTrace_ELBO.differentiable_loss doubled the gradient (its compiled
    loss is not detached); now its value is the loss and its gradient the surrogate's.
    """
    loss, value, through_loss, surrogate = _two_gradients()
    assert loss == pytest.approx(value, rel=1e-6)
    for name, grad in surrogate.items():
        torch.testing.assert_close(through_loss[name], grad, rtol=1e-5, atol=1e-6)


def test_the_gradient_check_catches_pyros_doubled_differentiable_loss(monkeypatch):
    parent = pyro.infer.JitTrace_ELBO.differentiable_loss
    monkeypatch.setattr(JitTrace_ELBO, "differentiable_loss", parent)
    _, _, through_loss, surrogate = _two_gradients()
    for name, grad in surrogate.items():
        torch.testing.assert_close(through_loss[name], 2 * grad, rtol=1e-5, atol=1e-6)

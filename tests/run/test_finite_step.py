"""The ranks' agreement on a finite step: a non-finite sum skips the optimizer's step exactly
(parameters and Adam's state unchanged) and is what the step reports; a finite one changes
nothing. The two-rank case (a NaN on rank 1 alone) is tests/run/test_distributed.py's.
"""

import pytest
import torch
import torch.distributed as dist

from pyro_vae.run import finite_step


@pytest.fixture
def one_rank():
    """A one-process gloo group (all_reduce is then the identity)."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def stepped(loss: float, fused: bool):
    p = torch.nn.Parameter(torch.ones(3))
    options = {"fused": True} if fused else {"foreach": True}
    opt = torch.optim.Adam([p], lr=0.1, **options)
    p.grad = torch.ones(3)
    opt.step()  # a first, clean step: Adam has state to keep
    before = (p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()})
    p.grad = torch.full((3,), loss)
    reported = finite_step.agree(torch.tensor(loss), opt)
    opt.step()
    return reported, before, p.detach(), opt.state[p]


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_loss_skips_the_step_exactly(one_rank, fused, bad):
    reported, (p0, state0), p1, state1 = stepped(bad, fused)
    assert not torch.isfinite(reported)
    assert torch.equal(p0, p1)
    for key in state0:
        assert torch.equal(state0[key], state1[key]), key


@pytest.mark.parametrize("fused", [True, False])
def test_a_finite_loss_steps_as_without_the_agreement(one_rank, fused):
    reported, (p0, _), p1, state1 = stepped(2.0, fused)
    assert reported.item() == 2.0
    assert not torch.equal(p0, p1) and state1["step"].item() == 2


def test_the_test_sees_a_step_that_is_not_skipped(one_rank, monkeypatch):
    """The injected bug: an agreement that reports but does not skip; the parameters move."""
    monkeypatch.setattr(finite_step, "_fused", lambda optimizer: False)
    real = finite_step.agree

    def no_skip(loss, optimizer):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"]]
        out = real(loss, optimizer)
        for g in optimizer.param_groups:
            for p, grad in zip(g["params"], grads):
                p.grad = grad
        return out

    monkeypatch.setattr(finite_step, "agree", no_skip)
    _, (p0, _), p1, _ = stepped(float("inf"), fused=False)
    assert not torch.equal(p0, p1)

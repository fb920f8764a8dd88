"""Under torchrun, every rank agrees on whether a step is finite before any rank takes it.

A NaN on one rank alone (a bad shard, an overflow) must stop every rank at the same step with
the same message: otherwise the rank that saw it stops and the others wait in their next
collective until gloo or NCCL gives up with a traceback. After the backward pass (where DDP has
already averaged the gradients) each rank adds its loss into one all-reduced sum,

    S = sum_r L_r,    finite(S)  <=>  every L_r is finite,

so one extra scalar all-reduce gives every rank the same verdict. When S is not finite the
optimizer step is skipped on every rank (parameters and Adam's moments stay as they were), and
the step reports S instead of its own loss: the training loop's finiteness check, which runs at
the same steps on every rank, then stops every rank at the same step with the same value.

The skip needs no host synchronisation with torch's fused Adam (``ModuleOptimizer``'s default
on the CPU and CUDA): it reads the verdict as its ``found_inf`` tensor, as under
``torch.amp.GradScaler``. Other optimizers read the verdict on the host and drop the gradients
(an optimizer skips parameters whose gradient is ``None``).
"""

import torch
import torch.distributed as dist


def agree(loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """All-reduce this rank's (detached) ``loss``; make ``optimizer``'s next step a no-op on
    every rank when the sum is not finite. Returns ``loss`` when the sum is finite, else the
    sum (the same non-finite value on every rank)."""
    total = loss.detach().clone()
    dist.all_reduce(total)
    finite = torch.isfinite(total)
    if _fused(optimizer):
        optimizer.found_inf = (~finite).to(torch.float32).reshape(())
    elif not bool(finite):
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
    return torch.where(finite, loss, total)


def _fused(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` is a fused torch optimizer (which honours ``found_inf``)."""
    return bool(optimizer.defaults.get("fused"))

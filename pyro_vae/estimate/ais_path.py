"""The geometric path that AIS (``ais.py``) anneals along, for one batch of points and M chains.

The HMC state is every latent site of the model at once (all layers of a hierarchical family),
flattened into one vector per (chain, point) in the model's site order::

    z = [z_a, z_b, ...]                 (sites in the order the model samples them)
    log p(x, z)  from the model traced conditioned on every site (``log_joint``)
    log r(z)     from the proposal program traced conditioned on every site: the guide's
                 q(z_a, z_b, ... | x), factors such as q(z_2 | z_1) included, or the prior p(z)

A family with one latent site takes the shortcut of the proposal site's own distribution (traced
once). Every latent site must be continuous, with one event dimension, and the guide's latent
sites must be the model's.
"""

from typing import Callable, Dict, List

import pyro
import torch
from pyro import poutine

from pyro_vae.errors import ConfigError
from pyro_vae.infer.traces import PARTICLE_PLATE, log_prob_per_datapoint
from pyro_vae.models.family import OBSERVED, latent_names

PROPOSALS = ("guide", "prior")


class Path:
    """log p(x, z) and log r(z) along the path for points ``x`` (N, P) and ``chains`` chains."""

    def __init__(self, model: Callable, guide: Callable, x, chains: int, proposal: str):
        if proposal not in PROPOSALS:
            raise ValueError(f"proposal must be one of {PROPOSALS}, got '{proposal}'")
        self.model, self.x, self.chains = model, x, chains
        prior = poutine.block(model, hide=[OBSERVED])
        self.program = guide if proposal == "guide" else prior
        with pyro.plate(PARTICLE_PLATE, chains, dim=-2):
            trace = poutine.trace(self.program).get_trace(x)
            model_trace = poutine.trace(prior).get_trace(x)
        self.names = latent_names(model_trace)
        self._check(trace, latent_names(trace))
        self.sizes = [trace.nodes[n]["value"].shape[-1] for n in self.names]
        fns = [trace.nodes[n]["fn"] for n in self.names]
        self.proposal = fns[0] if len(fns) == 1 else None  # batch shape (M, N)
        self.initial = self.join([trace.nodes[n]["value"] for n in self.names])
        try:
            self.stddev = self.join([fn.stddev.expand(fn.shape()) for fn in fns])
        except NotImplementedError:
            self.stddev = None
        self.evals = 0

    def _check(self, trace, proposal_names: List[str]) -> None:
        if sorted(proposal_names) != sorted(self.names) or not self.names:
            raise ConfigError(
                f"annealed importance sampling needs the proposal's latent sites to be the "
                f"model's; the proposal has {', '.join(proposal_names) or 'none'}, the model "
                f"{', '.join(self.names) or 'none'}"
            )
        for name in self.names:
            fn = trace.nodes[name]["fn"]
            if fn.has_enumerate_support or len(fn.event_shape) != 1:
                raise ConfigError(
                    f"annealed importance sampling needs continuous latent sites with one "
                    f"event dimension; site '{name}' has {type(fn).__name__} with event "
                    f"shape {tuple(fn.event_shape)}"
                )

    def join(self, parts: List[torch.Tensor]) -> torch.Tensor:
        return parts[0] if len(parts) == 1 else torch.cat(parts, -1)

    def split(self, z: torch.Tensor) -> Dict[str, torch.Tensor]:
        return dict(zip(self.names, z.split(self.sizes, -1)))

    def sample(self) -> torch.Tensor:
        """z_0 ~ r: a fresh draw (the single site's distribution; else the proposal traced)."""
        with torch.no_grad():
            if self.proposal is not None:
                return self.proposal.sample()
            with pyro.plate(PARTICLE_PLATE, self.chains, dim=-2):
                trace = poutine.trace(self.program).get_trace(self.x)
            return self.join([trace.nodes[n]["value"] for n in self.names])

    def _conditioned(self, program: Callable, z: torch.Tensor):
        conditioned = poutine.condition(program, data=self.split(z))
        with pyro.plate(PARTICLE_PLATE, self.chains, dim=-2):
            trace = poutine.trace(conditioned).get_trace(self.x)
        trace.compute_log_prob()
        return trace

    def log_joint(self, z: torch.Tensor) -> torch.Tensor:
        """log p(x, z) per (chain, point), shape (M, N)."""
        self.evals += 1
        return log_prob_per_datapoint(self._conditioned(self.model, z))

    def log_proposal(self, z: torch.Tensor) -> torch.Tensor:
        """log r(z) per (chain, point), shape (M, N)."""
        if self.proposal is not None:
            return self.proposal.log_prob(z)
        trace = self._conditioned(self.program, z)  # the z sites are now observed ones
        return sum(trace.nodes[name]["log_prob"] for name in self.names)

    def terms(self, z: torch.Tensor):
        """log p(x, z), log r(z) and their gradients in z."""
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            lj, lr = self.log_joint(z), self.log_proposal(z)
            gj = torch.autograd.grad(lj.sum(), z)[0]
            gr = torch.autograd.grad(lr.sum(), z)[0]
        return lj.detach(), lr.detach(), gj, gr

"""Training objectives: which ELBO estimator ``SVI`` optimizes.

* ``trace``: ``Trace_ELBO``, the Monte Carlo ELBO E_q[log p(x, z) - log q(z | x)].
* ``meanfield``: ``TraceMeanField_ELBO``, the same with the KL(q || p) term in closed form
  where torch/Pyro has one (a Monte Carlo estimate otherwise).
* ``iwae``: the importance-weighted bound of Burda et al. (2016), per data point,
  sum_i log (1/K) sum_k w_ik, optionally with the doubly-reparameterized gradient (DReG) of
  Tucker et al. (2019).

beta weighting and KL warm-up are not objectives: the VAE scales its ``"z"`` site (see vae.py).
Particles are always vectorized. ``jit=True`` compiles the ELBO with ``torch.jit.trace``
(static model structure; a new trace per distinct non-tensor argument).
"""
import math

import pyro.infer
import torch
from pyro.infer import ELBO

from .marginal import log_prob_per_datapoint, vectorized_traces
from .registry import OBJECTIVES

MAX_PLATE_NESTING = 1


class JitTraceMeanField_ELBO(pyro.infer.JitTraceMeanField_ELBO):
    """Pyro 1.9.2's ``JitTraceMeanField_ELBO`` stores its compiled loss as
    ``_differentiable_loss`` but looks for ``_loss_and_surrogate_loss``, so it re-traces the
    model on every step. This subclass reuses the compiled function it stored."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        compiled = getattr(self, "_differentiable_loss", None)
        if compiled is None:
            return super().differentiable_loss(model, guide, *args, **kwargs)
        return compiled(*args, _pyro_model_id=id(model), _pyro_guide_id=id(guide), **kwargs)


class IWAE(ELBO):
    """The importance-weighted bound, log-mean-exp over particles for each data point in the
    plate ``"data"``. Pyro's ``RenyiELBO(alpha=0)`` takes the log-mean-exp of whole-batch
    weights instead, which is not this bound for a batch of independent data points.

    With ``dreg``, the guide's gradient is sum_k w~_k^2 (d log w_k / d z_k)(d z_k / d phi)
    (w~: normalized weights), which has no score-function term and stays informative as K grows;
    it needs guides whose density can be evaluated at any z (not planar flows)."""

    def __init__(self, num_particles: int = 5, dreg: bool = False, plate: str = "data"):
        super().__init__(num_particles=num_particles, vectorize_particles=True,
                         max_plate_nesting=MAX_PLATE_NESTING)
        self.dreg = dreg
        self.plate = plate

    def _get_trace(self, model, guide, args, kwargs):
        return vectorized_traces(model, guide, self.num_particles, args, kwargs)

    def _log_weights(self, model, guide, args, kwargs):
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        log_p = log_prob_per_datapoint(model_trace, self.plate)
        log_w = log_p - log_prob_per_datapoint(guide_trace, self.plate)
        return log_w, guide_trace

    def _bound(self, log_w: torch.Tensor) -> torch.Tensor:
        return (torch.logsumexp(log_w, 0) - math.log(self.num_particles)).sum()

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        return -self._bound(self._log_weights(model, guide, args, kwargs)[0])

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        log_w, guide_trace = self._log_weights(model, guide, args, kwargs)
        loss = -self._bound(log_w)
        if self.dreg:
            self._dreg_surrogate(model, guide, log_w, guide_trace, args, kwargs).backward()
        else:
            loss.backward()
        return loss.item()

    def _dreg_surrogate(self, model, guide, log_w, guide_trace, args, kwargs) -> torch.Tensor:
        """A scalar whose gradient is DReG for the guide and the IWAE gradient for the model."""
        weights = torch.softmax(log_w.detach(), 0)
        values = {
            name: site["value"]
            for name, site in guide_trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"]
        }
        leaves = {name: v.detach().requires_grad_() for name, v in values.items()}
        conditioned = (pyro.poutine.condition(model, data=leaves), pyro.poutine.condition(guide, data=leaves))
        try:
            model_trace, guide_trace = vectorized_traces(*conditioned, self.num_particles, args, kwargs)
            log_q = log_prob_per_datapoint(guide_trace, self.plate)
        except NotImplementedError:
            raise ValueError(
                "the DReG estimator needs a guide whose density can be evaluated at any z; "
                "this guide's flow has no inverse (use dreg = false or another guide)"
            ) from None
        log_p = log_prob_per_datapoint(model_trace, self.plate)
        grads = torch.autograd.grad(
            (weights ** 2 * (log_p - log_q)).sum(), list(leaves.values()), retain_graph=True
        )
        guide_part = sum((g.detach() * values[name]).sum() for name, g in zip(leaves, grads))
        model_part = (weights * log_p).sum()
        return -(guide_part + model_part)


@OBJECTIVES.register("trace")
def trace(context: None, num_particles: int = 1, jit: bool = False) -> ELBO:
    """Trace_ELBO (Monte Carlo ELBO)."""
    cls = pyro.infer.JitTrace_ELBO if jit else pyro.infer.Trace_ELBO
    return cls(num_particles=num_particles, vectorize_particles=True,
               max_plate_nesting=MAX_PLATE_NESTING, ignore_jit_warnings=True)


@OBJECTIVES.register("meanfield")
def meanfield(context: None, num_particles: int = 1, jit: bool = False) -> ELBO:
    """TraceMeanField_ELBO (closed-form KL where available)."""
    cls = JitTraceMeanField_ELBO if jit else pyro.infer.TraceMeanField_ELBO
    return cls(num_particles=num_particles, vectorize_particles=True,
               max_plate_nesting=MAX_PLATE_NESTING, ignore_jit_warnings=True)


@OBJECTIVES.register("iwae")
def iwae(context: None, num_particles: int = 5, dreg: bool = False) -> ELBO:
    """Importance-weighted bound with K = num_particles (optionally DReG gradients)."""
    return IWAE(num_particles=num_particles, dreg=dreg)

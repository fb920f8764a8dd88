"""Training objectives: which ELBO estimator ``SVI`` optimizes.

* ``trace``: ``Trace_ELBO``, the Monte Carlo ELBO E_q[log p(x, z) - log q(z | x)].
* ``meanfield``: ``TraceMeanField_ELBO``, the same with the KL(q || p) term in closed form
  where torch/Pyro has one (a Monte Carlo estimate otherwise).
* ``iwae``: the importance-weighted bound of Burda et al. (2016), per data point,
  sum_i log (1/K) sum_k w_ik, optionally with the doubly-reparameterized gradient (DReG) of
  Tucker et al. (2019).

beta weighting and KL warm-up are not objectives: the VAE scales its ``"z"`` site by the weight
beta (times the warm-up factor) in model and guide (see vae.py). For ``trace`` and ``meanfield``
that multiplies exactly the KL term: E_q[log p(x | z)] - beta KL(q(z | x) || p(z)). For ``iwae``
there is no separate KL term: the scaled site tempers every importance weight inside the
log-mean-exp,

    log w_k = log p(x | z_k) + beta (log p(z_k) - log q(z_k | x)),
    bound   = sum_i log (1/K) sum_k w_ik,

which is the beta-ELBO only for K = 1; for K > 1 it is not the IWAE bound minus (beta - 1)
times a KL. ``IWAE`` warns (``TemperedWeightsWarning``) on its first step when any site is
scaled, so a run that combines it with beta != 1 or warm-up says what it optimizes.
Particles are always vectorized. ``jit=True`` (the default for ``trace`` and ``meanfield``)
compiles the ELBO with TorchScript (see jit_elbo.py).
"""

import math
import warnings

import pyro.infer
import torch
from pyro.infer import ELBO
from pyro.poutine.util import site_is_subsample

from pyro_vae.errors import ConfigError
from pyro_vae.infer.jit_elbo import (  # noqa: F401  (re-exported: the JIT ELBOs)
    JitTrace_ELBO,
    JitTraceMeanField_ELBO,
    _DirectCalls,
    compiled_once,
    signature,
)
from pyro_vae.infer.schedules import free_bits_kl
from pyro_vae.infer.traces import (
    log_prob_per_datapoint,
    trace_log_weights,
    vectorized_traces,
)
from pyro_vae.registry import OBJECTIVES

MAX_PLATE_NESTING = 1


class TemperedWeightsWarning(UserWarning):
    """The IWAE objective ran with scaled sample sites (beta or KL warm-up): its weights are
    tempered, not its KL term (see the module docstring)."""


class IWAE(ELBO):
    """The importance-weighted bound, log-mean-exp over particles for each data point in the
    plate ``"data"``. Pyro's ``RenyiELBO(alpha=0)`` takes the log-mean-exp of whole-batch
    weights instead, which is not this bound for a batch of independent data points.

    Site scales (``poutine.scale``: the VAE's beta and warm-up weight on ``"z"``) multiply the
    sites' log-densities inside each log-weight, log w = log p(x | z) + beta (log p(z) -
    log q(z | x)); the first call checks the scales and warns (``TemperedWeightsWarning``)
    when one is not 1.

    With ``dreg``, the guide's gradient is sum_k w~_k^2 (d log w_k / d z_k)(d z_k / d phi)
    (w~: normalized weights), which has no score-function term and stays informative as K grows;
    it needs guides whose density can be evaluated at any z (not planar flows)."""

    def __init__(self, num_particles: int = 5, dreg: bool = False, plate: str = "data"):
        super().__init__(
            num_particles=num_particles,
            vectorize_particles=True,
            max_plate_nesting=MAX_PLATE_NESTING,
        )
        self.dreg = dreg
        self.plate = plate
        self._scales_checked = False

    def _get_trace(self, model, guide, args, kwargs):
        return vectorized_traces(model, guide, self.num_particles, args, kwargs)

    def _log_weights(self, model, guide, args, kwargs):
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        if not self._scales_checked:
            self._scales_checked = True
            _warn_if_tempered(model_trace, guide_trace)
        return trace_log_weights(model_trace, guide_trace, self.plate), guide_trace

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
            self._dreg_surrogate(
                model, guide, log_w, guide_trace, args, kwargs
            ).backward()
        else:
            loss.backward()
        return loss.item()

    def _dreg_surrogate(
        self, model, guide, log_w, guide_trace, args, kwargs
    ) -> torch.Tensor:
        """A scalar whose gradient is DReG for the guide and the IWAE gradient for the model."""
        weights = torch.softmax(log_w.detach(), 0)
        values = {
            name: site["value"]
            for name, site in guide_trace.nodes.items()
            if site["type"] == "sample"
            and not site["is_observed"]
            and not site_is_subsample(site)
        }
        leaves = {name: v.detach().requires_grad_() for name, v in values.items()}
        conditioned = (
            pyro.poutine.condition(model, data=leaves),
            pyro.poutine.condition(guide, data=leaves),
        )
        try:
            model_trace, guide_trace = vectorized_traces(
                *conditioned, self.num_particles, args, kwargs
            )
            log_q = log_prob_per_datapoint(guide_trace, self.plate)
        except (NotImplementedError, KeyError):  # planar flows cache their samples only
            raise ValueError(
                "the DReG estimator needs a guide whose density can be evaluated at any z; "
                "this guide's flow has no inverse (use dreg = false or another guide)"
            ) from None
        log_p = log_prob_per_datapoint(model_trace, self.plate)
        grads = torch.autograd.grad(
            (weights**2 * (log_p - log_q)).sum(),
            list(leaves.values()),
            retain_graph=True,
        )
        guide_part = sum(
            (g.detach() * values[name]).sum() for name, g in zip(leaves, grads)
        )
        model_part = (weights * log_p).sum()
        return -(guide_part + model_part)


def _warn_if_tempered(*traces) -> None:
    """Warn once when a sample site of these traces carries a scale other than 1."""
    scaled = {}
    for trace in traces:
        for name, site in trace.nodes.items():
            if site["type"] == "sample" and not site_is_subsample(site):
                scale = torch.as_tensor(site["scale"]).detach()
                if scale.ne(1).any():
                    scaled[name] = (
                        scale.flatten()[0].item() if scale.numel() == 1 else None
                    )
    if scaled:
        listed = ", ".join(
            f"'{n}' by {'varying factors' if v is None else f'{v:g}'}"
            for n, v in scaled.items()
        )
        warnings.warn(
            f"the iwae objective runs with scaled sites ({listed}; beta or KL warm-up): each "
            f"importance weight is tempered, log w = log p(x|z) + beta (log p(z) - log q(z|x)) "
            f"inside the log-mean-exp, which is not a KL term scaled by beta (it is the "
            f"beta-ELBO only for K = 1); use beta = 1 and no warm-up for the IWAE bound",
            TemperedWeightsWarning,
            stacklevel=2,
        )


class FreeBitsELBO(ELBO):
    """The negative free-bits objective (Kingma et al. 2016; see schedules.py)::

        -(sum_i lambda_rec E_q[log p(x_i | z)] - lambda_KL N sum_d max(lambda, KL_d))

    with KL_d dimension d's KL(q(z_d | x) || p(z_d)) averaged over the mini-batch (and the
    particles): in closed form with ``analytic_kl`` (as TraceMeanField_ELBO), else the Monte Carlo
    log q(z_d | x) - log p(z_d) at the guide's draws (as Trace_ELBO). The weights are the scales
    of the ``"x"`` and ``"z"`` sites. Every latent site must be a diagonal Gaussian in the guide
    and in the model (the KL then splits over dimensions). Not compiled: ``jit`` is ignored.
    """

    def __init__(self, nats: float, num_particles: int = 1, analytic_kl: bool = False):
        super().__init__(
            num_particles=num_particles,
            vectorize_particles=True,
            max_plate_nesting=MAX_PLATE_NESTING,
        )
        self.nats = nats
        self.analytic_kl = analytic_kl

    def _get_trace(self, model, guide, args, kwargs):
        return vectorized_traces(model, guide, self.num_particles, args, kwargs)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        reconstruction, penalty = 0.0, 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if site["is_observed"]:
                reconstruction = reconstruction + site["log_prob"].sum()
                continue
            q_site = guide_trace.nodes[name]
            q, p = _diagonal_normal(q_site["fn"], name), _diagonal_normal(
                site["fn"], name
            )
            if self.analytic_kl:
                kl = torch.distributions.kl_divergence(q, p)
            else:
                kl = q.log_prob(q_site["value"]) - p.log_prob(q_site["value"])
            penalty = penalty + q_site["scale"] * free_bits_kl(kl, self.nats)
        return -(reconstruction / self.num_particles - penalty)

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()


def _diagonal_normal(fn, name: str) -> torch.distributions.Normal:
    """The per-dimension Normal of a diagonal Gaussian site (``Normal(...).to_event(1)``)."""
    base = getattr(fn, "base_dist", None)
    if (
        isinstance(fn, torch.distributions.Independent)
        and fn.reinterpreted_batch_ndims == 1
        and isinstance(base, torch.distributions.Normal)
    ):
        return base
    raise ConfigError(
        f"free bits needs diagonal Gaussians at site '{name}' in guide and model (the KL must "
        f"split over latent dimensions), got {type(fn).__name__}; set train.free_bits = 0"
    )


def build_objective(config, eager: bool = False) -> ELBO:
    """The loss ``fit`` optimizes: the configured objective from the registry, or, with
    ``train.free_bits`` > 0, the free-bits objective with its particles (closed-form KL for
    ``meanfield``). ``eager`` turns TorchScript off where the objective has a ``jit`` option.
    """
    name, options = config.objective.name, dict(config.objective.options)
    if eager and "jit" in OBJECTIVES.defaults(name):
        options["jit"] = False
    if config.train.free_bits > 0:
        OBJECTIVES.check_options(name, options)
        return FreeBitsELBO(
            config.train.free_bits,
            options.get("num_particles", 1),
            analytic_kl=name == "meanfield",
        )
    return OBJECTIVES.build(name, None, options)


def _vectorized(cls: type, num_particles: int) -> ELBO:
    return cls(
        num_particles=num_particles,
        vectorize_particles=True,
        max_plate_nesting=MAX_PLATE_NESTING,
        ignore_jit_warnings=True,
    )


@OBJECTIVES.register("trace")
def trace(context: None, num_particles: int = 1, jit: bool = True) -> ELBO:
    """Trace_ELBO (Monte Carlo ELBO); ``jit`` compiles it (see the module docstring)."""
    return _vectorized(JitTrace_ELBO if jit else pyro.infer.Trace_ELBO, num_particles)


@OBJECTIVES.register("meanfield")
def meanfield(context: None, num_particles: int = 1, jit: bool = True) -> ELBO:
    """TraceMeanField_ELBO (closed-form KL where available); ``jit`` compiles it."""
    cls = JitTraceMeanField_ELBO if jit else pyro.infer.TraceMeanField_ELBO
    return _vectorized(cls, num_particles)


@OBJECTIVES.register("iwae")
def iwae(context: None, num_particles: int = 5, dreg: bool = False) -> ELBO:
    """Importance-weighted bound with K = num_particles (optionally DReG gradients)."""
    return IWAE(num_particles=num_particles, dreg=dreg)

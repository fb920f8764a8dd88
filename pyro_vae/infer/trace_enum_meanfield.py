"""The ``enum_meanfield`` objective: ``TraceEnum_ELBO`` (discrete sites marked for parallel
enumeration summed out exactly) with ``TraceMeanField_ELBO``'s closed-form KL for every
continuous latent site that has one. Pyro's ``TraceMeanField_ELBO`` does not enumerate, and
``TraceEnum_ELBO`` never uses a closed-form KL; this class does both.

For the semi-supervised family's unlabelled x (Kingma et al. 2014, U(x))::

    U(x) = sum_y q(y | x) [ E_q(z|x,y)[log p(x | y, z)] + log p(y)
                            - KL(q(z | x, y) || p(z)) - log q(y | x) ]

with the sum over y exact (as ``enum``) and the KL in closed form for every y at once, where
``enum`` has the one-draw estimate log p(z) - log q(z | x, y) in its place. Both are unbiased
for the same ELBO and the same gradient; only the Monte Carlo noise differs. The z-term's own
noise goes, and with it its correlation with the reconstruction term's: near the posterior,
enum's sampled z-term cancels much of that noise, and this ELBO estimate is then the noisier
(on the digits M2 its SD was 1.8 times enum's, its gradients' total variance 0.6 times:
benchmarks/README.md, "enum_meanfield").

How. ``TraceEnum_ELBO._get_trace`` returns packed traces (``Trace.pack_tensors``: each site's
log-density with its dimensions named), and ``_compute_dice_elbo`` adds, per plate ordinal,
every model site's packed ``log_prob`` and minus every guide site's, each weighted by the Dice
factors of the guide sites upstream (for an enumerated y: q(y | x), over its enumeration
dimension). This class substitutes, at a site z that qualifies, the model's packed term by

    -s KL(q(z | ...) || p(z | ...))      (s: the site's scale, masked as the site is)

computed from the two sites' distributions, and the guide's by 0. Their batch shapes carry the
enumeration dimension of every enumerated site upstream, so the KL is one value per enumerated
y (and particle, and data point), and Dice weights it by q(y | x) as it weighted the sampled
term. s is ``poutine.scale`` (the semi-supervised family's ``kl_weight``) times the plate's
subsample scale N / B.

A site qualifies when it is a latent site of model and guide, reparameterized
(``has_rsample``), not enumerated, its model density does not depend on a site the model
itself enumerates, and torch/Pyro registers KL(q || p) for the pair
(``torch.distributions.kl_divergence``). Elsewhere the sampled term stays, as
``TraceMeanField_ELBO`` falls back: e.g. a ``full_rank`` guide against a ``standard_normal``
prior (no KL of a MultivariateNormal to an Independent Normal is registered), VampPriors and
flow priors.

Refused (``ConfigError``): a qualifying site scaled differently in model and guide (its two
terms are then not one KL); a qualifying site z drawn in the model after a latent w that the
guide draws after z. p(z | w) may then depend on a w the guide draws from z, and the KL at a
fixed w is not E_q[log p(z | w) - log q(z)]; it is the bias for which the hierarchical family
refuses ``meanfield`` with bottom-up inference. (Pyro's ``TraceMeanField_ELBO`` only warns when
the orders differ.) The order is the sufficient condition Pyro uses: the traces do not show the
true dependencies.
"""

from typing import Dict, List, Optional, Set

import torch
from pyro.distributions.util import scale_and_mask
from pyro.infer import ELBO, TraceEnum_ELBO
from pyro.ops import packed
from pyro.poutine import Trace
from pyro.poutine.util import site_is_subsample
from torch.distributions import kl_divergence

from pyro_vae.errors import ConfigError
from pyro_vae.infer.trace_enum import enum_options
from pyro_vae.registry import OBJECTIVES

Site = Dict


class TraceEnumMeanField_ELBO(TraceEnum_ELBO):
    """TraceEnum_ELBO with the closed-form KL of each qualifying continuous latent site,
    per enumerated value (see the module's docstring). ``replaced`` names the sites whose
    term the last trace replaced."""

    replaced: List[str] = []

    def _get_trace(self, model, guide, args, kwargs):
        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        enumerated = _model_enumerated_symbols(model_trace, guide_trace)
        replaced = []
        for name, model_site in model_trace.nodes.items():
            guide_site = guide_trace.nodes.get(name)
            if not _qualifies(model_site, guide_site, enumerated):
                continue
            kl = closed_form_kl(model_site, guide_site)
            if kl is not None:
                _check_scales(model_site, guide_site)
                replaced.append((name, model_site, guide_site, kl))
        if replaced:
            check_order(model_trace, guide_trace, [name for name, *_ in replaced])
        for _, model_site, guide_site, kl in replaced:
            replace_terms(model_site, guide_site, kl)
        self.replaced = [name for name, *_ in replaced]
        return model_trace, guide_trace


def _model_enumerated_symbols(model_trace: Trace, guide_trace: Trace) -> Set[str]:
    """The dimension symbols of the sites the model enumerates itself (not in the guide)."""
    return {
        site["infer"]["_enumerate_symbol"]
        for name, site in model_trace.nodes.items()
        if site["type"] == "sample"
        and name not in guide_trace.nodes
        and site["infer"].get("_enumerate_dim") is not None
    }


def _qualifies(model_site: Site, guide_site: Optional[Site], enumerated: Set) -> bool:
    """A latent, reparameterized, non-enumerated site of both traces whose model term does
    not depend on a site the model enumerates."""
    if (
        guide_site is None
        or model_site["type"] != "sample"
        or model_site["is_observed"]
        or site_is_subsample(model_site)
        or guide_site["infer"].get("_enumerate_dim") is not None
        or not guide_site["fn"].has_rsample
    ):
        return False
    return enumerated.isdisjoint(model_site["packed"]["log_prob"]._pyro_dims)


def _check_scales(model_site: Site, guide_site: Site) -> None:
    m_scale, g_scale = model_site["scale"], guide_site["scale"]
    if not torch.equal(torch.as_tensor(m_scale), torch.as_tensor(g_scale)):
        raise ConfigError(
            f"objective 'enum_meanfield' needs site '{model_site['name']}' scaled alike in "
            f"model and guide (poutine.scale) to replace its two terms by one KL; scale both "
            f"or use objective 'enum'"
        )


def closed_form_kl(model_site: Site, guide_site: Site) -> Optional[torch.Tensor]:
    """s KL(q || p) at the site, masked as the site is, with the shape of the site's
    log-density terms (enumeration, particle and plate dimensions); None when no KL is
    registered for the pair."""
    try:
        kl = kl_divergence(guide_site["fn"], model_site["fn"])
    except NotImplementedError:
        return None
    shape = torch.broadcast_shapes(
        kl.shape,
        model_site["unscaled_log_prob"].shape,
        guide_site["unscaled_log_prob"].shape,
    )
    return scale_and_mask(kl.expand(shape), guide_site["scale"], guide_site["mask"])


def replace_terms(model_site: Site, guide_site: Site, kl: torch.Tensor) -> None:
    """The model's packed term becomes -KL, the guide's 0 (with its dimensions kept, which
    ``_compute_model_factors`` reads)."""
    symbols = {
        **guide_site["infer"]["_dim_to_symbol"],
        **model_site["infer"]["_dim_to_symbol"],
    }
    model_site["packed"]["log_prob"] = packed.neg(packed.pack(kl, symbols))
    old = guide_site["packed"]["log_prob"]
    zero = old.new_zeros(()).expand(old.shape)
    zero._pyro_dims = old._pyro_dims
    guide_site["packed"]["log_prob"] = zero


def _latent_order(trace: Trace, other: Trace) -> List[str]:
    return [
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
        and name in other.nodes
        and not site["is_observed"]
        and not site_is_subsample(site)
    ]


def check_order(model_trace: Trace, guide_trace: Trace, replaced: List[str]) -> None:
    """Refuse a replaced site z that the model draws after a latent w the guide draws after
    z (p(z | w) may depend on a w drawn from z in the guide)."""
    model_order = _latent_order(model_trace, guide_trace)
    guide_order = _latent_order(guide_trace, model_trace)
    for name in replaced:
        before = model_order[: model_order.index(name)]
        after = set(guide_order[guide_order.index(name) + 1 :])
        late = [w for w in before if w in after]
        if late:
            raise ConfigError(
                f"objective 'enum_meanfield' would be biased: site '{name}' is drawn after "
                f"'{late[0]}' in the model but before it in the guide, so p({name} | "
                f"{late[0]}) may depend on a value the guide draws from {name} and its "
                f"closed-form KL is not the ELBO's term; use objective 'enum' (or 'trace'), "
                f"or draw the guide's sites in the model's order"
            )


@OBJECTIVES.register("enum_meanfield")
def enum_meanfield(context: None, num_particles: int = 1) -> ELBO:
    """TraceEnum_ELBO with the closed-form KL of continuous sites under each enumerated value
    (TraceMeanField's KL where registered, the sampled term elsewhere)."""
    return TraceEnumMeanField_ELBO(**enum_options(num_particles))

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyro_vae import config as cfg
from pyro_vae import data
from pyro_vae.errors import ConfigError
from pyro_vae.models.vae import DATA_PLATE, LATENT, OBSERVED, build


@pytest.fixture
def digits():
    return data.load(cfg.DataConfig())


def small_vae(digits, **overrides):
    config = cfg.load(None, {"model.latent_dim": 3, "model.hidden": [32], **overrides})
    return build(config, digits.data_dim)


def test_model_and_guide_sites_and_shapes(digits):
    vae = small_vae(digits)
    x = digits.train[:5]
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(
        x
    )
    z = guide_trace.nodes[LATENT]
    assert (
        z["value"].shape == (5, 3)
        and z["fn"].event_shape == (3,)
        and z["fn"].batch_shape == (5,)
    )
    obs = model_trace.nodes[OBSERVED]
    assert (
        obs["is_observed"]
        and torch.equal(obs["value"], x)
        and obs["fn"].event_shape == (64,)
    )
    for site in (z, obs, model_trace.nodes[LATENT]):
        assert [f.name for f in site["cond_indep_stack"]] == [DATA_PLATE]
    model_params = {n for n, s in model_trace.nodes.items() if s["type"] == "param"}
    guide_params = {n for n, s in guide_trace.nodes.items() if s["type"] == "param"}
    named = dict(vae.named_parameters())
    assert {n.split("$$$")[0] for n in model_params} <= {
        f"{vae.pyro_name}.{part}" for part in ("decoder", "likelihood", "prior")
    }
    assert {n.split("$$$")[0] for n in guide_params} == {f"{vae.pyro_name}.encoder"}
    # together the two programs register every parameter, each once
    assert len(model_params | guide_params) == len(named)
    assert len(model_params) + len(guide_params) == len(named)


def test_the_vampprior_model_registers_the_encoder_it_runs(digits):
    vae = small_vae(digits, **{"prior.name": "vamp", "prior.num_pseudo": 3})
    x = digits.train[:2]
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(
        x
    )
    model_parts = {
        n.split("$$$")[0] for n, s in model_trace.nodes.items() if s["type"] == "param"
    }
    assert {
        f"{vae.pyro_name}.{p}" for p in ("encoder", "decoder", "prior")
    } <= model_parts


def test_two_vaes_do_not_share_the_param_store(digits):
    a, b = small_vae(digits), small_vae(digits)
    x = digits.train[:4]
    pyro.infer.SVI(a.model, a.guide, pyro.optim.Adam({"lr": 0.1}), Trace_ELBO()).step(x)
    before = [p.detach().clone() for p in b.parameters()]
    poutine.trace(b.model).get_trace(x)
    assert all(torch.equal(p, q) for p, q in zip(before, b.parameters()))
    assert a.pyro_name != b.pyro_name


def test_beta_scales_only_the_kl(digits):
    """With the same draws, loss(beta) = -reconstruction + beta * KL for every beta: beta
    multiplies the KL term and leaves the reconstruction term alone."""
    vae = small_vae(digits)
    x = digits.train[:20]
    elbo = Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)

    def loss(beta):
        pyro.set_rng_seed(3)
        return elbo.loss(vae.model, vae.guide, x, beta)

    pyro.set_rng_seed(3)
    guide_trace = poutine.trace(pyro.plate("p", 3, dim=-2)(vae.guide)).get_trace(x)
    model_trace = poutine.trace(
        poutine.replay(pyro.plate("p", 3, dim=-2)(vae.model), trace=guide_trace)
    ).get_trace(x)
    rec = model_trace.nodes[OBSERVED]["fn"].log_prob(x).sum().item() / 3
    kl = (
        guide_trace.nodes[LATENT]["fn"]
        .log_prob(guide_trace.nodes[LATENT]["value"])
        .sum()
        - model_trace.nodes[LATENT]["fn"]
        .log_prob(guide_trace.nodes[LATENT]["value"])
        .sum()
    ).item() / 3
    for beta in (1e-3, 0.5, 1.0, 4.0):
        assert loss(beta) == pytest.approx(-rec + beta * kl, rel=1e-5)


def test_trace_and_meanfield_agree_in_expectation(digits):
    """Both estimate the same ELBO; compare their means over independent repeats within 4 SE."""
    vae = small_vae(digits)
    x = digits.train[:50]
    estimates = {}
    for cls in (Trace_ELBO, TraceMeanField_ELBO):
        elbo = cls(num_particles=20, vectorize_particles=True, max_plate_nesting=1)
        losses = torch.tensor([elbo.loss(vae.model, vae.guide, x) for _ in range(40)])
        estimates[cls.__name__] = (losses.mean(), losses.std() / 40**0.5)
    (m1, s1), (m2, s2) = estimates.values()
    assert abs(m1 - m2) < 4 * (s1**2 + s2**2) ** 0.5
    assert s2 < s1  # the closed-form KL removes part of the Monte Carlo noise


def test_reconstruct_sample_and_kl_analytic_flag(digits):
    vae = small_vae(digits)
    x = digits.test[:4]
    assert vae.reconstruct(x).shape == (4, 64) and vae.sample(6).shape == (6, 64)
    assert 0 <= vae.sample(6).min() and vae.sample(6).max() <= 1
    assert vae.kl_is_analytic(x)
    assert not small_vae(digits, **{"prior.name": "mixture"}).kl_is_analytic(x)
    assert not small_vae(digits, **{"guide.name": "iaf"}).kl_is_analytic(x)


def swap_decoder_and_fit(digits):
    """Swap the decoder after construction, train one (JIT-compiled) epoch; the new decoder's
    parameters before training and the VAE."""
    config = cfg.load(
        None,
        {
            "model.latent_dim": 3,
            "model.hidden": [32],
            "train.epochs": 1,
            "train.batch_size": 50,
        },
    )
    vae = build(config, digits.shape)
    vae.decoder = torch.nn.Sequential(
        torch.nn.Linear(3, 16), torch.nn.ELU(), torch.nn.Linear(16, 64)
    )
    before = [p.detach().clone() for p in vae.decoder.parameters()]
    small = data.Dataset("digits", digits.train[:200], digits.test[:50], (8, 8))
    from pyro_vae.run.train import fit

    fit(vae, small, config)
    return before, vae


def test_a_swapped_decoder_is_the_one_trained(digits):
    before, vae = swap_decoder_and_fit(digits)
    assert all(not torch.equal(a, b) for a, b in zip(before, vae.decoder.parameters()))


def test_stale_cached_parts_break_the_swap(digits, monkeypatch):
    """Injected bug (the VAE as it was): the parts registered by the model are the ones it was
    built with, cached at construction. Training after a swap then fails with the TorchScript
    message of issue #14 (the new decoder's weights are not registered parameters)."""
    from pyro_vae.models.vae import VAE

    cached = {}

    def stale(self):
        return cached.setdefault(id(self), VAE._with_parameters(self, ["decoder"]))

    monkeypatch.setattr(VAE, "_model_parts", property(stale))
    real_init = VAE.__init__

    def init(self, *args):
        real_init(self, *args)
        stale(self)

    monkeypatch.setattr(VAE, "__init__", init)
    with pytest.raises(RuntimeError, match="requires grad as a constant"):
        swap_decoder_and_fit(digits)


def registered_decoder_params(vae, x):
    trace = poutine.trace(vae.model).get_trace(x)
    prefix = f"{vae.pyro_name}.decoder$$$"
    return {
        n[len(prefix) :]: s["value"]
        for n, s in trace.nodes.items()
        if s["type"] == "param" and n.startswith(prefix)
    }


def test_swapping_replaces_the_part_in_the_param_store(digits, monkeypatch):
    """After a swap, ``pyro.module`` registers the new module's own tensors, not the old ones
    left in Pyro's param store under the same names; injected bug: nothing released."""
    x = digits.train[:4]
    for release in (True, False):
        vae = small_vae(digits)
        registered_decoder_params(vae, x)  # the old decoder is now in the store
        if not release:
            monkeypatch.setattr(vae, "release_params", lambda part="": None)
        vae.decoder = torch.nn.Sequential(
            torch.nn.Linear(3, 32), torch.nn.Linear(32, 64)
        )
        new = dict(vae.decoder.named_parameters())
        seen = registered_decoder_params(vae, x)
        assert seen.keys() == new.keys()
        assert all(seen[k] is new[k] for k in new) is release


def test_swapping_in_a_wrong_part_is_refused(digits):
    vae = small_vae(digits)
    with pytest.raises(ConfigError, match=r"maps z of shape \(2, 3\) to \(2, 10\)"):
        vae.decoder = torch.nn.Linear(3, 10)
    with pytest.raises(ConfigError, match="decoder fails on z of shape"):
        vae.decoder = torch.nn.Linear(5, 64)
    with pytest.raises(ConfigError, match="must be a torch.nn.Module, got function"):
        vae.decoder = lambda z: z
    vamp = small_vae(digits, **{"prior.name": "vamp", "prior.num_pseudo": 3})
    with pytest.raises(ConfigError, match="no gaussian method"):
        vamp.encoder = torch.nn.Linear(64, 3)


def test_a_swapped_encoder_is_the_one_the_vampprior_runs(digits):
    from pyro_vae.parts.guides import DiagonalGuide

    vae = small_vae(digits, **{"prior.name": "vamp", "prior.num_pseudo": 3})
    vae.encoder = DiagonalGuide(vae.arch)
    z = torch.randn(5, 3)
    components = vae.encoder.gaussian(vae.prior.pseudo_inputs)
    expected = torch.logsumexp(
        torch.stack([components.log_prob(zi) for zi in z]), -1
    ) - torch.log(torch.tensor(3.0))
    torch.testing.assert_close(vae.prior().log_prob(z), expected)

"""The hierarchical family: its sites, its config errors, and everything downstream of the seam
(SVI with every objective, free bits per layer, warm-up, IS/AIS, resume, the Python API).
"""

import pyro
import pytest
import torch
from pyro import poutine

from pyro_vae import api
from pyro_vae import config as cfg
from pyro_vae import data, models
from pyro_vae.errors import ConfigError
from pyro_vae.estimate.ais import annealed_importance_sampling
from pyro_vae.estimate.diagnostics import elbo_terms
from pyro_vae.estimate.marginal import log_marginal_likelihood
from pyro_vae.infer.objectives import build_objective
from pyro_vae.infer.schedules import step_args
from pyro_vae.models.family import DATA_PLATE, LatentSite
from pyro_vae.models.hierarchical import HierarchicalVAE
from pyro_vae.run.train import fit

SMALL = {"model.family": "hierarchical", "model.hidden": [16]}


def _config(**overrides):
    return cfg.load(None, {**SMALL, **overrides})


def _in_plate(trace, name):
    return any(f.name == DATA_PLATE for f in trace.nodes[name]["cond_indep_stack"])


@pytest.mark.parametrize("inference", ["bottom_up", "ladder", "coupled"])
@pytest.mark.parametrize("prior", ["standard_normal", "mixture", "vamp", "flow"])
def test_every_prior_on_top_builds_with_sites_in_the_data_plate(inference, prior):
    config = _config(
        **{
            "model.inference": inference,
            "prior.name": prior,
            "model.latent_layers": [6, 4, 3],
        }
    )
    family = models.build(config, 64)
    assert isinstance(family, HierarchicalVAE)
    assert family.latent_sites == tuple(
        LatentSite(f"z{i + 1}", s) for i, s in enumerate([6, 4, 3])
    )
    x = (torch.rand(5, 64) < 0.3).float()
    guide = poutine.trace(family.guide).get_trace(x)
    model = poutine.trace(poutine.replay(family.model, trace=guide)).get_trace(x)
    for name in ("z1", "z2", "z3", "x"):
        assert _in_plate(model, name)
    for name in ("z1", "z2", "z3"):
        assert _in_plate(guide, name)
        assert guide.nodes[name]["value"].shape == (5, family.sizes[int(name[1]) - 1])
    loss = build_objective(config).loss(family.model, family.guide, *step_args(x, 1.0))
    assert torch.isfinite(torch.tensor(loss))
    family.release_params()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model.latent_layers": [5]}, "at least 2 stochastic layers"),
        ({"model.latent_layers": [5, 0]}, "latent_layers must be a list of positive"),
        ({"model.inference": "sideways"}, "unknown \\[model\\] inference 'sideways'"),
        ({"model.inference": "ladder", "guide.name": "iaf"}, "needs guide 'diagonal'"),
        ({"objective.name": "meanfield"}, "biased with bottom-up inference"),
        (  # refused when the model is built, before a run directory exists
            {"objective.name": "enum_meanfield"},
            "'enum_meanfield' \\(closed-form KL\\) is biased with bottom-up inference",
        ),
        (
            {"model.inference": "coupled", "network.name": "conv"},
            "needs network 'mlp', not 'conv'",
        ),
        (
            {"model.family": "vae", "model.latent_layers": [4, 2]},
            "family 'vae' has one",
        ),
    ],
)
def test_bad_options_get_one_line_errors(overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        models.build(_config(**overrides), 64)
    assert "\n" not in str(err.value)


def test_kl_weight_scales_every_layer_in_model_and_guide():
    family = models.build(_config(), 64)
    x = torch.zeros(3, 64)
    guide = poutine.trace(family.guide).get_trace(x, 0.25)
    model = poutine.trace(poutine.replay(family.model, trace=guide)).get_trace(x, 0.25)
    for trace in (guide, model):
        assert [float(trace.nodes[n]["scale"]) for n in ("z1", "z2")] == [0.25, 0.25]
    assert float(model.nodes["x"]["scale"]) == 1.0


def test_free_bits_apply_per_layer_and_dimension():
    """With lambda above every KL_d, the penalty is N lambda (D_1 + D_2) whatever the draws."""
    nats = 1e3
    config = _config(**{"train.free_bits": nats, "model.latent_layers": [3, 2]})
    family = models.build(config, 64)
    x = (torch.rand(7, 64) < 0.3).float()
    pyro.set_rng_seed(1)
    loss = build_objective(config).loss(family.model, family.guide, *step_args(x, 1.0))
    pyro.set_rng_seed(1)
    guide = poutine.trace(family.guide).get_trace(x)
    model = poutine.trace(poutine.replay(family.model, trace=guide)).get_trace(x)
    reconstruction = model.nodes["x"]["fn"].log_prob(x).sum().item()
    assert loss == pytest.approx(-reconstruction + 7 * nats * (3 + 2), rel=1e-6)


@pytest.mark.slow  # (the quick tier stays under 3 minutes; CI runs it)
@pytest.mark.parametrize(
    "inference, objective",
    [
        ("bottom_up", "trace"),
        ("ladder", "meanfield"),
        ("ladder", "iwae"),
        ("coupled", "meanfield"),
    ],
)
def test_it_trains_and_elbo_is_ais_come_in_order(inference, objective, tmp_path):
    config = _config(
        **{
            "model.inference": inference,
            "objective.name": objective,
            "train.epochs": 3,
            "train.kl_warmup_epochs": 0 if objective == "iwae" else 2,
            "model.latent_layers": [8, 4],
        }
    )
    ds = data.load(config.data)
    family = models.build(config, ds.shape)
    metrics = fit(family, ds, config, run_dir=tmp_path / "run")
    assert metrics[-1]["test_elbo"] > metrics[0]["test_elbo"]
    x = ds.test[:12]
    elbo = elbo_terms(family, x, num_samples=100)["elbo"].mean().item()
    est = log_marginal_likelihood(family.model, family.guide, x, num_samples=300)
    ais = annealed_importance_sampling(
        family.model, family.guide, x, num_steps=60, num_chains=8
    )
    is_mean, is_se = (
        est.log_marginal.mean().item(),
        est.stderr.pow(2).mean().sqrt().item(),
    )
    assert elbo <= is_mean + 4 * is_se
    ais_se = ais.stderr.pow(2).mean().sqrt().item()
    assert is_mean <= ais.log_marginal.mean().item() + 4 * (is_se + ais_se) + 0.1
    family.release_params()


def test_coupled_inference_reads_the_layer_above_in_guide_and_decoder():
    """Tomczak & Welling's coupling: q(z_1 | x, z_2) and p(x | z_1, z_2) both change with z_2
    (z_1 and x held fixed), and the guide draws z_2 first, as the model does."""
    config = _config(**{"model.inference": "coupled", "model.latent_layers": [4, 3]})
    family = models.build(config, 64)
    assert family.encoders[0].loc.in_features > 0
    x = (torch.rand(5, 64) < 0.3).float()
    guide = poutine.trace(family.guide).get_trace(x)
    assert [n for n in guide.nodes if n in ("z1", "z2")] == ["z2", "z1"]
    z1, z2 = (guide.nodes[n]["value"] for n in ("z1", "z2"))
    other = z2 + 1.0
    inputs = [torch.cat([x, z], -1) for z in (z2, other)]
    q = [family.encoders[0](i).base_dist.loc for i in inputs]
    assert not torch.allclose(q[0], q[1])
    p = [family.decoder(family.decoder_input([z1, z])) for z in (z2, other)]
    assert not torch.allclose(p[0], p[1])
    assert family.kl_is_analytic(x)  # z_2 is drawn first: TraceMeanField_ELBO is exact
    assert family.decode(torch.zeros(2, 3)).shape == (2, 64)
    assert family.reconstruct(x).shape == (5, 64) and family.sample(3).shape == (3, 64)
    family.release_params()


def test_resume_continues_the_run(tmp_path):
    config = _config(**{"train.epochs": 2})
    ds = data.load(config.data)
    first = models.build(config, ds.shape)
    fit(first, ds, config, run_dir=tmp_path)
    first.release_params()
    more = cfg.load(None, {**SMALL, "train.epochs": 3})
    again = models.build(more, ds.shape)
    metrics = fit(again, ds, more, run_dir=tmp_path, resume=True)
    assert [m["epoch"] for m in metrics] == [1, 2, 3]


def test_the_python_api_encodes_the_top_layer_and_decodes_it():
    model = api.Model(
        family="hierarchical", latent_layers=[6, 3], hidden=[16], epochs=2
    )
    model.fit("digits")
    x = model._data.test[:5]
    mean, draws = model.encode(x, num_samples=4)
    assert mean.shape == (5, 3) and draws.shape == (4, 5, 3)
    assert model.decode(mean).shape == (5, 64)
    assert model.sample(4).shape == (4, 64)
    report = model.evaluate(x, num_samples=50)
    assert set(report["layers"]) == {"z1", "z2"}
    assert report["active_units"] == sum(
        v["active_units"] for v in report["layers"].values()
    )


@pytest.mark.slow
def test_the_command_line_trains_evaluates_and_lists_it(tmp_path, capsys):
    """`pyro-vae train --family hierarchical` out of the box (but short), then `evaluate
    --method both`: ELBO <= IS <= AIS within their errors, and per-layer diagnostics."""
    import json

    from pyro_vae.cli.app import main

    run = tmp_path / "h"
    small = ["--epochs", "3", "--set", "model.hidden=[32]"]
    assert main(["train", "--family", "hierarchical", *small, "--out", str(run)]) == 0
    assert (run / "latent_traversal.png").is_file() and (run / "samples.png").is_file()
    assert (
        main(
            [
                "evaluate",
                str(run),
                "--method",
                "both",
                "--num-samples",
                "200",
                "--limit",
                "30",
                "--ais-steps",
                "40",
                "--ais-chains",
                "8",
                "--amortization-gap",
            ]
        )
        == 0
    )
    result = json.loads((run / "evaluation.json").read_text())
    gaps = result["ais"]["amortization"]  # every layer fitted per point (issue #28)
    assert gaps["local_elbo"] > gaps["elbo"]
    is_value, is_se = result["log_marginal"], result["log_marginal_stderr"]
    ais = result["ais"]
    assert result["elbo"] <= is_value + 4 * is_se
    assert is_value <= ais["value"] + 4 * (is_se + ais["stderr"]) + 0.1
    assert set(result["layers"]) == {"z1", "z2"}
    assert main(["list"]) == 0
    assert "hierarchical" in capsys.readouterr().out

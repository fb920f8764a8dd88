"""CUDA: training, evaluation, and checkpoints that move between a GPU and the CPU. Skipped without CUDA."""

import pytest
import torch

from pyro_vae import config as cfg
from pyro_vae import data
from pyro_vae.estimate.evaluate import evaluate
from pyro_vae.estimate.marginal import log_marginal_likelihood
from pyro_vae.models.vae import build
from pyro_vae.run import checkpoint
from pyro_vae.run.loading import load_run
from pyro_vae.run.train import CHECKPOINT_FILE, fit

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def cuda_run(tmp_path, **overrides):
    config = cfg.load(
        None,
        {
            "model.latent_dim": 4,
            "model.hidden": [32],
            "train.epochs": 2,
            "train.batch_size": 250,
            "train.device": "cuda",
            **overrides,
        },
    )
    ds = data.load(config.data)
    vae = build(config, ds.data_dim)
    return config, ds, vae, fit(vae, ds, config, run_dir=tmp_path)


def test_short_training_on_cuda_keeps_everything_on_the_gpu(tmp_path):
    config, ds, vae, metrics = cuda_run(tmp_path)
    assert all(p.is_cuda for p in vae.parameters())
    assert len(metrics) == 2 and all(
        torch.isfinite(torch.tensor(m["test_elbo"])) for m in metrics
    )
    assert metrics[-1]["test_elbo"] > metrics[0]["test_elbo"] - 5


def test_evaluation_on_cuda(tmp_path):
    config, ds, vae, _ = cuda_run(tmp_path)
    x = ds.test[:64].cuda()
    report = evaluate(vae, x, num_samples=100)
    assert report["n"] == 64
    assert (
        report["elbo"]
        <= report["log_marginal"] + 4 * (report["log_marginal_stderr"] or 0) + 1e-3
    )
    estimate = log_marginal_likelihood(vae.model, vae.guide, x, num_samples=50)
    assert estimate.log_marginal.is_cuda and torch.isfinite(estimate.log_marginal).all()


def test_a_cuda_checkpoint_loads_on_the_cpu_with_the_same_log_density(tmp_path):
    config, ds, vae, _ = cuda_run(tmp_path)
    x = ds.test[:32]
    torch.manual_seed(0)
    on_gpu = vae.encoder(x.cuda()).log_prob(torch.zeros(32, 4, device="cuda")).cpu()
    state = checkpoint.load(tmp_path / CHECKPOINT_FILE, map_location="cpu")
    assert all(t.device.type == "cpu" for t in state["model"].values())
    cpu_vae = build(cfg.from_dict(state["config"]), ds.data_dim)
    cpu_vae.load_state_dict(state["model"])
    on_cpu = cpu_vae.encoder(x).log_prob(torch.zeros(32, 4))
    torch.testing.assert_close(on_cpu, on_gpu, rtol=1e-4, atol=1e-4)
    # the model's joint log-density at fixed z agrees too
    z = torch.randn(32, 4)
    gpu_lik = vae.likelihood(vae.decoder(z.cuda())).log_prob(x.cuda()).cpu()
    cpu_lik = cpu_vae.likelihood(cpu_vae.decoder(z)).log_prob(x)
    torch.testing.assert_close(cpu_lik, gpu_lik, rtol=1e-4, atol=1e-3)
    _, loaded, _ = load_run(tmp_path, device="cpu")
    assert all(p.device.type == "cpu" for p in loaded.parameters())


def test_auto_picks_cuda_and_training_stays_there():
    from pyro_vae.process import resolve_device

    assert resolve_device("auto").type == "cuda"
    config = cfg.load(
        None,
        {"model.hidden": [32], "train.epochs": 1, "train.batch_size": 250},
    )
    ds = data.load(config.data)
    vae = build(config, ds.data_dim)
    fit(vae, ds, config)
    assert all(p.is_cuda for p in vae.parameters())


def test_the_loss_kept_on_the_gpu_trains_like_the_per_step_sync(tmp_path):
    """train.check_every = 50 (no loss.item() per step) gives the per-step run's parameters."""
    runs = []
    for every in (1, 50):
        config = cfg.load(
            None,
            {
                "model.hidden": [32],
                "train.epochs": 1,
                "train.batch_size": 250,
                "train.device": "cuda",
                "train.check_every": every,
            },
        )
        ds = data.load(config.data)
        vae = build(config, ds.data_dim)
        fit(vae, ds, config)
        runs.append([p.detach().cpu() for p in vae.parameters()])
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_bf16_autocast_keeps_the_test_elbo_within_its_standard_error(tmp_path):
    """The same trained model and the same draws: the bf16 test ELBO is within one standard
    error of the fp32 one (the figure gpu_check.sh reports)."""
    import pyro

    from pyro_vae.estimate.diagnostics import elbo_terms
    from pyro_vae.run.train import autocast

    config, ds, vae, _ = cuda_run(tmp_path)
    x = ds.test.cuda()
    values = {}
    for precision in ("fp32", "bf16"):
        pyro.set_rng_seed(0)
        with autocast(x.device, precision), torch.no_grad():
            values[precision] = elbo_terms(vae, x)["elbo"].float()
    se = values["fp32"].std() / values["fp32"].numel() ** 0.5
    assert abs(values["bf16"].mean() - values["fp32"].mean()) < se
    config, ds, vae, metrics = cuda_run(
        tmp_path / "bf16", **{"train.precision": "bf16"}
    )
    assert torch.isfinite(torch.tensor(metrics[-1]["test_elbo"]))

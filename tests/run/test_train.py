import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from pyro_vae import config as cfg
from pyro_vae import data
from pyro_vae.errors import ConfigError, TrainingError
from pyro_vae.models.vae import build
from pyro_vae.process import resolve_device
from pyro_vae.run import checkpoint
from pyro_vae.run.svi import ModuleOptimizer
from pyro_vae.run.train import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    fit,
    kl_weight,
    learning_rate,
)

TIMING = ("seconds",)


def digits_run(**overrides):
    config = cfg.load(
        None,
        {
            "model.latent_dim": 4,
            "model.hidden": [32],
            "train.epochs": 4,
            "train.batch_size": 250,
            "train.eval_every": 1,  # every epoch scored (the default's budget: test_epoch_eval)
            **overrides,
        },
    )
    ds = data.load(config.data)
    return config, ds, build(config, ds.data_dim)


def strip_timing(metrics):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in metrics]


def test_short_training_improves_the_elbo():
    config, ds, vae = digits_run(**{"train.epochs": 8, "train.lr": 3e-3})
    metrics = fit(vae, ds, config)
    assert [m["epoch"] for m in metrics] == list(range(1, 9))
    assert metrics[-1]["test_elbo"] > metrics[0]["test_elbo"] + 3
    assert metrics[-1]["train_elbo"] > metrics[0]["train_elbo"] + 3
    for m in metrics:
        assert m["test_elbo"] == pytest.approx(m["reconstruction"] - m["kl"], abs=1e-3)


def test_same_seed_same_metrics_and_other_seed_differs():
    first = strip_timing(fit(*_vae_data_config(seed=5)))
    second = strip_timing(fit(*_vae_data_config(seed=5)))
    other = strip_timing(fit(*_vae_data_config(seed=6)))
    assert first == second
    assert first != other


def test_build_is_deterministic_and_leaves_the_global_rng_alone():
    config, ds, vae = digits_run(**{"train.seed": 3})
    state = torch.get_rng_state()
    again = build(config, ds.data_dim)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(vae.parameters(), again.parameters()))
    other = build(cfg.load(None, {**_overrides(config), "train.seed": 4}), ds.data_dim)
    assert not torch.equal(next(vae.parameters()), next(other.parameters()))


def _vae_data_config(seed):
    config, ds, vae = digits_run(**{"train.seed": seed, "train.epochs": 2})
    return vae, ds, config


def test_kl_warmup_schedule():
    config = cfg.load(None, {"train.beta": 2.0, "train.kl_warmup_epochs": 2})
    weights = [kl_weight(config, step, steps_per_epoch=5) for step in range(12)]
    assert weights[0] == pytest.approx(0.2) and weights[4] == pytest.approx(1.0)
    assert weights[9] == pytest.approx(2.0) and weights[11] == pytest.approx(2.0)
    assert all(a < b for a, b in zip(weights[:10], weights[1:10]))
    assert kl_weight(cfg.load(None, {"train.beta": 0.5}), 0, 5) == 0.5


def test_learning_rate_decays_per_epoch_and_is_recorded():
    config, ds, vae = digits_run(
        **{"train.lr": 0.01, "train.lr_decay": 0.5, "train.epochs": 3}
    )
    assert [learning_rate(config, e) for e in (1, 2, 3)] == [0.01, 0.005, 0.0025]
    metrics = fit(vae, ds, config)
    assert [row["lr"] for row in metrics] == [0.01, 0.005, 0.0025]
    with pytest.raises(ConfigError, match=r"lr_decay must be in \(0, 1\]"):
        cfg.load(None, {"train.lr_decay": 1.5})


def test_module_optimizer_is_one_fused_adam_that_matches_the_loop_implementation():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)
    )
    twin = [p.detach().clone().requires_grad_() for p in net.parameters()]
    ours = ModuleOptimizer(net, lr=0.01)
    assert ours.optimizer.defaults["fused"] is True
    loop = torch.optim.Adam(twin, lr=0.01, foreach=False)
    for _ in range(3):
        grads = [torch.randn_like(p) for p in twin]
        for p, q, g in zip(net.parameters(), twin, grads):
            p.grad, q.grad = g.clone(), g.clone()
        ours(set(net.parameters()))
        loop.step()
        assert all(p.grad is None for p in net.parameters())
    for p, q in zip(net.parameters(), twin):
        torch.testing.assert_close(p, q)
    with pytest.raises(TrainingError, match="register every network with pyro.module"):
        ours({torch.nn.Parameter(torch.zeros(1))})


def test_resume_in_process_gives_identical_metrics(tmp_path):
    config, ds, vae = digits_run()
    full = fit(vae, ds, config, tmp_path / "full")
    short = cfg.load(None, {**_overrides(config), "train.epochs": 2})
    fit(build(short, ds.data_dim), ds, short, tmp_path / "part")
    resumed = fit(
        build(config, ds.data_dim), ds, config, tmp_path / "part", resume=True
    )
    assert strip_timing(resumed) == strip_timing(full)
    lines = (tmp_path / "part" / METRICS_FILE).read_text().splitlines()
    assert strip_timing([json.loads(line) for line in lines]) == strip_timing(full)


def _overrides(config):
    return {
        f"{s}.{k}": v
        for s, values in config.to_dict().items()
        for k, v in values.items()
    }


def test_resume_refuses_a_changed_config_or_a_finished_run(tmp_path):
    config, ds, vae = digits_run(**{"train.epochs": 1})
    fit(vae, ds, config, tmp_path)
    other = cfg.load(None, {**_overrides(config), "train.lr": 0.5, "train.epochs": 3})
    with pytest.raises(
        TrainingError, match="differs from the checkpoint's in train.lr"
    ):
        fit(build(other, ds.data_dim), ds, other, tmp_path, resume=True)
    with pytest.raises(TrainingError, match="already finished 1 epochs"):
        fit(build(config, ds.data_dim), ds, config, tmp_path, resume=True)
    with pytest.raises(TrainingError, match="no checkpoint at"):
        fit(build(config, ds.data_dim), ds, config, tmp_path / "empty", resume=True)


def test_checkpoint_contents_load_with_weights_only(tmp_path):
    config, ds, vae = digits_run(**{"train.epochs": 1})
    fit(vae, ds, config, tmp_path)
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert state["epoch"] == 1 and set(state) == {
        "epoch",
        "model",
        "optimizer",
        "rng",
        "metrics",
        "config",
    }
    assert set(state["rng"]) == {"torch", "cuda", "numpy", "python"}
    assert cfg.from_dict(state["config"]) == config
    rebuilt = build(config, ds.data_dim)
    rebuilt.load_state_dict(state["model"])
    assert all(
        torch.equal(a, b)
        for a, b in zip(rebuilt.state_dict().values(), vae.state_dict().values())
    )


def test_a_crash_mid_write_leaves_the_old_checkpoint_loadable(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    checkpoint.save(path, {"epoch": 1, "w": torch.ones(3)})

    def torn_save(obj, f):
        f.write(b"partial bytes of a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, {"epoch": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert checkpoint.load(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [
        "c.pt"
    ]  # no temporary file left behind


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    config, ds, vae = digits_run(**{"train.epochs": 3})
    from pyro_vae.run.svi import ModuleSVI

    real_step, calls = ModuleSVI.step, {"n": 0}
    steps_per_epoch = len(ds.train) // 250

    def step(self, *args, **kwargs):
        calls["n"] += 1
        loss = real_step(self, *args, **kwargs)
        return float("nan") if calls["n"] == steps_per_epoch + 2 else loss

    monkeypatch.setattr(ModuleSVI, "step", step)
    with pytest.raises(TrainingError) as err:
        fit(vae, ds, config, tmp_path)
    assert "the loss became nan at epoch 2, step 2" in str(err.value)
    assert "last checkpoint (epoch 1) is intact" in str(
        err.value
    ) and "learning rate" in str(err.value)
    assert checkpoint.load(tmp_path / CHECKPOINT_FILE)["epoch"] == 1


def test_device_cuda_without_a_gpu_is_refused():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


def test_grey_data_is_refused_for_bernoulli():
    config, ds, vae = digits_run(**{"data.binarize": False})
    from pyro_vae.errors import DataError

    with pytest.raises(DataError, match="the training data is not binary"):
        fit(vae, ds, config)


def _cli(*args, cwd):
    env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    return [sys.executable, "-m", "pyro_vae.cli", *args], dict(cwd=cwd, env=env)


@pytest.mark.slow
def test_kill_9_then_resume_matches_an_uninterrupted_run(tmp_path):
    common = [
        "train",
        "--epochs",
        "8",
        "--latent-dim",
        "4",
        "--set",
        "model.hidden=[256, 256]",
        "--batch-size",
        "50",
        "--no-progress",
    ]
    cmd, kw = _cli(*common, "--out", "full", cwd=tmp_path)
    subprocess.run(cmd, check=True, capture_output=True, **kw)
    cmd, kw = _cli(*common, "--out", "killed", cwd=tmp_path)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw
    )
    metrics = tmp_path / "killed" / METRICS_FILE
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(metrics.read_text().splitlines())
    assert 3 <= done < 8
    cmd, kw = _cli(*common, "--out", "killed", "--resume", cwd=tmp_path)
    subprocess.run(cmd, check=True, capture_output=True, **kw)

    def rows(run):
        return strip_timing(
            [
                json.loads(x)
                for x in (tmp_path / run / METRICS_FILE).read_text().splitlines()
            ]
        )

    assert len(rows("killed")) == 8
    assert rows("killed") == rows("full")


def test_best_checkpoint_follows_the_validation_elbo(tmp_path):
    from pyro_vae.run.train import BEST_FILE

    config, ds, vae = digits_run(**{"train.epochs": 3})
    ds.valid = ds.test[:100]
    metrics = fit(vae, ds, config, tmp_path)
    best_epoch = max(metrics, key=lambda m: m["valid_elbo"])["epoch"]
    assert checkpoint.load(tmp_path / BEST_FILE)["epoch"] == best_epoch
    assert all("valid_elbo" in m for m in metrics)


def _svi_run(objective, svi_class, steps=6):
    """Losses and final weights of ``steps`` steps of ``svi_class`` on a fixed seed."""
    import pyro
    from pyro.infer import SVI  # noqa: F401

    from pyro_vae.run.svi import make_svi

    pyro.clear_param_store()
    config = cfg.load(None, {"model.latent_dim": 3, "model.hidden": [16], **objective})
    vae = build(config, 12)
    vae.release_params()
    svi, optimizer = make_svi(vae, config)
    elbo = svi.loss.__self__  # SVI keeps the ELBO's bound loss_and_grads
    svi = svi_class(vae.model, vae.guide, optimizer, loss=elbo)
    pyro.set_rng_seed(4)
    x = (torch.rand(40, 12, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    losses = []
    for i in range(steps):
        rows = (
            x[:8] if i % 3 == 0 else x[10:30]
        )  # two batch shapes, two compiled graphs
        losses.append(svi.step(rows, torch.tensor(0.5 + i / 10), torch.tensor(1.0)))
    return elbo, losses, [p.detach().clone() for p in vae.parameters()]


@pytest.mark.parametrize(
    "objective",
    [{}, {"objective.name": "meanfield"}, {"objective.jit": False}],
    ids=["trace-jit", "meanfield-jit", "trace-eager"],
)
def test_module_svi_steps_exactly_as_pyro_svi(objective):
    """``ModuleSVI`` (no param-capture trace after its first step, compiled graphs called
    directly) gives the losses and weights of Pyro's own ``SVI.step``, bit for bit."""
    from pyro.infer import SVI

    from pyro_vae.run.svi import ModuleSVI

    elbo, fast_losses, fast_params = _svi_run(objective, ModuleSVI)
    _, slow_losses, slow_params = _svi_run(objective, SVI)
    assert fast_losses == slow_losses
    assert all(torch.equal(a, b) for a, b in zip(fast_params, slow_params))
    if "objective.jit" not in objective:  # the direct path really ran, once per shape
        assert len(elbo.direct_calls.entries) == 2


def test_module_svi_check_catches_a_direct_call_that_loses_the_gradients(monkeypatch):
    """The net above fails when the direct call hands the graph copies of the parameters
    (the loss is right, but no gradient reaches the VAE's weights)."""
    from pyro.infer import SVI

    from pyro_vae.infer import objectives
    from pyro_vae.run.svi import ModuleSVI

    def call_with_copies(self, key, args):
        entry = None if key is None else self.entries.get(key)
        if entry is None:
            return None
        graph, names = entry
        store = objectives.pyro.get_param_store()
        copies = [store[n].detach().clone().requires_grad_() for n in names]
        return graph(*copies, *args)

    monkeypatch.setattr(objectives._DirectCalls, "call", call_with_copies)
    _, fast_losses, fast_params = _svi_run({}, ModuleSVI)
    monkeypatch.undo()
    _, slow_losses, slow_params = _svi_run({}, SVI)
    assert not all(torch.equal(a, b) for a, b in zip(fast_params, slow_params))


def test_module_svi_first_step_still_refuses_foreign_parameters():
    """The first step keeps SVI's param capture, so a parameter outside the VAE is refused."""
    import pyro

    from pyro_vae.run.svi import ModuleSVI

    config, ds, vae = digits_run()
    vae.release_params()

    def model(x):
        pyro.param("stray", torch.zeros(()))
        return vae.model(x)

    svi = ModuleSVI(model, vae.guide, ModuleOptimizer(vae, 1e-3), loss=_eager_elbo())
    with pytest.raises(TrainingError, match="not the VAE's parameters"):
        svi.step(ds.train[:10])


def _eager_elbo():
    from pyro.infer import Trace_ELBO

    return Trace_ELBO(max_plate_nesting=1)


def test_the_nan_message_names_binarized_data_under_a_grey_likelihood():
    from pyro_vae.run.train import _binarized_hint, _check_finite

    losses = torch.tensor([1.0, float("nan")], dtype=torch.float64)
    for overrides, named in (
        ({"likelihood.name": "gaussian", "data.binarize": True}, True),
        ({"likelihood.name": "gaussian"}, False),  # auto: grey data, not binarized
        ({}, False),  # bernoulli on binarized data is as it should be
    ):
        config, ds, vae = digits_run(**overrides)
        with pytest.raises(TrainingError) as err:
            _check_finite(losses, 0, 1, 3, 1e-3, _binarized_hint(config, vae))
        assert ("binarized data (data.binarize = true)" in str(err.value)) == named
        assert "epoch 3, step 2" in str(err.value)

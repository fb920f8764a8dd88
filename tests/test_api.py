"""The public Python API: the README example, Model, make_config, load_run, lazy import."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import pyro_vae
from pyro_vae import api
from pyro_vae.cli.app import main
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.registry import GUIDES

README = Path(__file__).resolve().parents[1] / "README.md"
SMALL = dict(latent_dim=2, hidden=[16], epochs=1, batch_size=50)


def binary_rows(n=200, d=16, seed=0):
    return (np.random.default_rng(seed).random((n, d)) < 0.3).astype(np.float32)


def readme_python_block() -> str:
    text = README.read_text()
    section = text[text.index("## Python") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_python_example_runs_as_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_python_block(), "README.md", "exec"), {})
    assert (tmp_path / "runs/python/data.json").is_file()
    assert (tmp_path / "figures/latent_traversal.png").is_file()


def test_all_lists_names_that_resolve():
    assert "Model" in pyro_vae.__all__ and "load_run" in pyro_vae.__all__
    for name in pyro_vae.__all__:
        assert getattr(pyro_vae, name) is not None, name
    with pytest.raises(AttributeError):
        pyro_vae.no_such_name


def heavy_modules_after(statement: str):
    """The heavy modules a fresh interpreter holds after running ``statement``."""
    code = (
        f"import sys; {statement}; "
        "print(sorted(m for m in ('torch', 'pyro', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_importing_the_cli_imports_neither_torch_nor_pyro():
    assert heavy_modules_after("import pyro_vae, pyro_vae.cli") == "[]"
    helped = subprocess.run(
        [sys.executable, "-m", "pyro_vae.cli", "--help"], capture_output=True, text=True
    )
    assert helped.returncode == 0 and "train" in helped.stdout


@pytest.mark.slow
def test_the_import_check_sees_an_eager_import():
    """Injected bug: a package that imports its parts eagerly (as it did) fails the check."""
    eager = "import pyro_vae, pyro_vae.cli; from pyro_vae import vae"
    assert heavy_modules_after(eager) == "['numpy', 'pyro', 'torch']"


def test_make_config_maps_keywords_to_sections_and_refuses_unknown_ones():
    c = api.make_config(latent_dim=3, epochs=2, prior={"name": "mixture"}, lr=0.01)
    assert (c.model.latent_dim, c.train.epochs, c.prior.name, c.train.lr) == (
        3,
        2,
        "mixture",
        0.01,
    )
    with pytest.raises(ConfigError, match="unknown option 'latnt_dim'.*latent_dim"):
        api.make_config(latnt_dim=3)
    with pytest.raises(ConfigError, match="unknown prior"):
        api.make_config(prior="nope")


def test_fit_on_numpy_records_python_arrays_and_evaluate_refuses_to_guess(
    tmp_path, capsys
):
    x = binary_rows()
    model = api.Model(**SMALL).fit(x, run_dir=tmp_path / "run")
    assert model.config.data.dataset == "python" and model.shape == (16,)
    record = (tmp_path / "run/data.json").read_text()
    assert "arrays given from Python, not stored" in record
    assert main(["evaluate", str(tmp_path / "run"), "--num-samples", "5"]) == 2
    err = capsys.readouterr().err
    assert "arrays given from Python" in err and err.count("\n") == 1
    assert main(["sample", str(tmp_path / "run"), "--num", "4"]) == 0
    assert (tmp_path / "run/sample_grid.png").is_file()
    loaded = api.load_run(tmp_path / "run")
    z = torch.zeros(3, 2)
    assert torch.allclose(loaded.decode(z), model.decode(z))


def test_inputs_of_any_float_dtype_and_numpy_or_torch_score_the_same():
    x = binary_rows()
    model = api.Model(**SMALL).fit(x)
    scores = []
    for given in (x[:20], x[:20].astype(np.float64), torch.tensor(x[:20]).half()):
        torch.manual_seed(0)
        scores.append(model.log_marginal_likelihood(given, num_samples=20).log_marginal)
    assert scores[0].shape == (20,)
    assert torch.equal(scores[0], scores[1]) and torch.equal(scores[0], scores[2])
    report = model.evaluate(x[:20], num_samples=20)
    assert report["n"] == 20 and np.isfinite(report["log_marginal"])
    with pytest.raises(DataError, match="shape"):
        model.log_marginal_likelihood(np.zeros((3, 9), np.float32))


def mean_agrees_with_samples(mean, samples):
    """E_q[z|x] within 4 standard errors of the average of independent draws (the SE also
    counts the Monte Carlo error of the mean of flow guides, api.MEAN_DRAWS draws)."""
    se = samples.std(0) * (1 / len(samples) + 1 / api.MEAN_DRAWS) ** 0.5
    return bool(((samples.mean(0) - mean).abs() < 4 * se).all())


@pytest.mark.parametrize("guide", GUIDES.names())
def test_encode_gives_the_posterior_mean_and_samples_for_every_guide(guide):
    x = binary_rows(100)
    model = api.Model(**SMALL, guide=guide).fit(x)
    mean, samples = model.encode(x[:7], num_samples=400)
    assert mean.shape == (7, 2) and samples.shape == (400, 7, 2)
    assert mean_agrees_with_samples(mean, samples)
    assert model.decode(mean).shape == (7, 16) and model.sample(5).shape == (5, 16)


def test_encode_mean_net_catches_a_wrong_mean(monkeypatch):
    """Injected bug: posterior_means returning the mean plus one must fail the check above."""
    from pyro_vae.estimate import diagnostics

    x = binary_rows(100)
    model = api.Model(**SMALL).fit(x)
    real = diagnostics.posterior_means
    monkeypatch.setattr(
        diagnostics, "posterior_means", lambda v, r, n: real(v, r, n) + 1
    )
    mean, samples = model.encode(x[:7], num_samples=400)
    assert not mean_agrees_with_samples(mean, samples)


def test_fit_a_data_set_by_name_and_a_shape_mismatch_is_refused():
    model = api.Model(**SMALL).fit("digits")
    assert model.shape == (1, 8, 8) and model.config.data.dataset == "digits"
    with pytest.raises(DataError, match="built for examples of shape"):
        model.fit(binary_rows(d=10))
    with pytest.raises(ConfigError, match="call fit"):
        api.Model().sample(2)


def test_arrays_split_into_train_valid_test_by_the_config_and_labels_follow():
    x = binary_rows(100)
    labels = np.arange(100)
    model = api.Model(**SMALL, valid_fraction=0.2, test_fraction=0.1, split_seed=5)
    ds = api.load_data(x, labels=labels, config=model.config)
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (70, 20, 10)
    assert torch.equal(ds.test, torch.tensor(x[ds.test_labels.numpy()]))
    again = api.load_data(
        torch.tensor(x), labels=torch.tensor(labels), config=model.config
    )
    assert torch.equal(again.test_labels, ds.test_labels)


def registry_sizes_in_a_fresh_process(prelude: str = "") -> str:
    code = (
        f"{prelude}; from pyro_vae import registry as r; "
        "print([len(x.names()) > 0 for x in "
        "(r.PRIORS, r.GUIDES, r.LIKELIHOODS, r.OBJECTIVES, r.DATASETS)])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@pytest.mark.slow
def test_registries_list_their_parts_without_importing_them_first():
    """Tests parametrize over PRIORS.names() at collection: a lazy package import must not
    leave the registries empty there (the all-pairs test collapsed to nothing)."""
    assert registry_sizes_in_a_fresh_process("import sys") == str([True] * 5)


def test_the_registry_check_catches_registries_that_do_not_load():
    """Injected bug: registries that never import the parts."""
    prelude = (
        "from pyro_vae import registry; registry.Registry._load = lambda self: None"
    )
    assert registry_sizes_in_a_fresh_process(prelude) == str([False] * 5)

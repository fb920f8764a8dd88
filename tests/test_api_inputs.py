"""The Python API refuses bad input with the library's own exceptions, saying what to pass
(issue 26, group 4), and converts what the README promises (any float dtype)."""

import numpy as np
import pytest
import torch

import pyro_vae
from pyro_vae.errors import ConfigError, DataError, PyroVAEError

X = (np.random.default_rng(0).random((40, 6)) < 0.3).astype(np.float32)


def small(**options) -> pyro_vae.Model:
    return pyro_vae.Model(latent_dim=2, hidden=[8], epochs=1, batch_size=20, **options)


@pytest.fixture(scope="module")
def fitted() -> pyro_vae.Model:
    return small().fit(X)


@pytest.mark.parametrize(
    "x, message",
    [
        ([[0.0, 1.0], [1.0]] * 10, "x is a ragged list (rows of different lengths)"),
        (
            torch.empty(40, 6, device="meta"),
            "x is a meta tensor, which holds no values",
        ),
        (np.zeros((40, 0)), "holds examples of no values (shape (4, 0))"),
        (np.zeros((40, 3), dtype=complex), "holds complex128 values"),
        ("not data", "unknown dataset 'not data'"),
    ],
)
def test_fit_refuses_with_the_library_errors(x, message):
    with pytest.raises(PyroVAEError) as err:
        small().fit(x)
    assert message in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "convert",
    [
        lambda x: x.tolist(),
        lambda x: torch.tensor(x).bfloat16(),
        lambda x: torch.tensor(x).half(),
        lambda x: torch.tensor(x).double().to_sparse(),
    ],
    ids=["list", "bfloat16", "float16", "sparse"],
)
def test_fit_converts_lists_and_any_float_tensor(convert, fitted):
    model = small().fit(convert(X))
    assert model.shape == (6,)
    # the same rows as the float32 array: the same split, the same training data
    assert torch.equal(model._data.train, fitted._data.train)
    lp = fitted.log_marginal_likelihood(convert(X[:3]), num_samples=4)
    assert lp.log_marginal.shape == (3,)


def test_labels_from_python_are_validated():
    with pytest.raises(
        DataError, match="labels holds 39 labels for the 40 examples of 'x'"
    ):
        small().fit(X, labels=list(range(39)))
    small().fit(X, labels=list(range(40)))  # a plain list of ints is fine


def test_decode_with_the_wrong_latent_width(fitted):
    for z in (torch.zeros(3, 4), torch.zeros(3, 3), torch.zeros(4)):
        with pytest.raises(DataError) as err:
            fitted.decode(z)
        assert str(err.value) == (
            f"decode(z) takes latents of shape (n, 2) (the model's top latent layer has 2 "
            f"dimensions); got "
            f"shape {tuple(z.shape)}"
        )
    assert fitted.decode(torch.zeros(3, 2)).shape == (3, 6)
    assert fitted.decode([0.0, 0.0]).shape == (1, 6)


@pytest.mark.parametrize("num", [-1, 0, 1.5, True, "3"])
def test_sample_needs_a_positive_whole_number(fitted, num):
    with pytest.raises(ConfigError) as err:
        fitted.sample(num)
    assert str(err.value) == (
        f"sample(num) takes a whole number of samples >= 1, got {num!r}"
    )
    assert fitted.sample(3).shape == (3, 6)

"""Shared fixtures: every test starts seeded, with an empty param store and validation on."""

import os
from pathlib import Path

import pyro
import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(
    1
)  # the tests' tensors are small: threads only add overhead on 2 cores

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def fresh_pyro():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    yield
    pyro.clear_param_store()


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` beside the repository; tests that need it skip without it."""
    if not (SHARED_DATA / "binarized_mnist_test.amat.gz").is_file():
        pytest.skip(f"no shared data at {SHARED_DATA}")
    return SHARED_DATA


def has_cuda() -> bool:
    return torch.cuda.is_available()


@pytest.fixture
def cli_error(capsys):
    """``cli_error(argv, status=2)``: run the CLI, assert it exits with ``status`` after one
    ``error:`` line and no traceback, and return that line's message."""
    from pyro_vae.cli.app import main

    def run(argv, status: int = 2) -> str:
        assert main(argv) == status, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: "), err
        assert "Traceback" not in err
        return err[len("error: ") : -1]

    return run

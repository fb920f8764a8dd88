"""``pyro-vae check``: the table it prints, its exit status, its device handling."""

import random

import numpy as np
import pytest
import torch

from pyro_vae import checks as C
from pyro_vae.cli import main

QUANTITIES = [
    "exact guide: max |log w - log p(x)|",
    "exact guide: 1-sample Trace_ELBO / N",
    "exact guide: 1-sample TraceMeanField_ELBO / N",
    "Trace_ELBO / N",
    "TraceMeanField_ELBO / N",
    "TraceMeanField KL(q || p(z)) / N",
    "max |ELBO + KL(q || p(z|x)) - log p(x)|",
    "MC KL(q || p(z|x)) / N",
    "d(-ELBO)/d loc.weight",
    "d(-ELBO)/d raw_scale.bias",
    "IWAE_1 / N = ELBO",
    "IWAE_1000 / N in (ELBO, log p(x)]",
    "IWAE_1000 - IWAE_100 / N > 0",
    "SVI-trained linear VAE: mean log p(x)",
]


@pytest.fixture(autouse=True)
def one_thread():
    """Many small tensor ops: on a shared machine one thread is much faster than torch's pool."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_check_command_prints_a_passing_table_and_leaves_the_rngs_alone(capsys):
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].split() == [
        "quantity",
        "estimate",
        "exact",
        "stderr",
        "criterion",
        "result",
    ]
    rows = lines[2:-1]
    assert len(rows) == 21 and all(row.endswith("ok") for row in rows), out
    assert lines[-1] == "21 passed, 0 failed"
    for quantity in QUANTITIES:
        assert quantity in out, quantity
    assert "FAIL" not in out
    assert torch.equal(torch.get_rng_state(), states[0])
    assert random.getstate() == states[1] and np.array_equal(
        np.random.get_state()[1], states[2]
    )


def test_format_table_marks_failures():
    rows = [
        C.CheckRow("a quantity", 1.0, 1.5, 0.1, False, "|diff| < 4 SE"),
        C.CheckRow("another", 2.0, 2.0, 0.0, True, "|diff| < 1e-06"),
    ]
    lines = C.format_table(rows).splitlines()
    assert len(lines) == 4 and set(lines[1]) == {"-", " "}
    assert lines[2].startswith("a quantity") and lines[2].endswith("FAIL")
    assert lines[3].endswith("ok") and "1e-06" in lines[3]
    # columns line up
    assert lines[0].index("estimate") == lines[2].index("1 ") == lines[3].index("2 ")


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="needs a machine without a CUDA GPU"
)
def test_check_on_cuda_without_a_gpu_is_a_clear_error(capsys):
    assert main(["check", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "error: device 'cuda' was asked for but no CUDA GPU is visible"
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_checks_pass_on_cuda():
    rows = C.run_checks("cuda")
    failed = [row for row in rows if not row.passed]
    assert len(rows) == 21 and not failed, C.format_table(failed)

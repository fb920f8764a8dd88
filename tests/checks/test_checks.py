"""``pyro-vae check``: the table it prints, its exit status, its device handling, the parts it
covers, and a mutation test: each of six bugs injected in memory makes it fail (issue #13.6).
"""

import inspect
import random
import textwrap

import numpy as np
import pyro.distributions.transforms as T
import pytest
import torch
from pyro.distributions.transforms.planar import ConditionedPlanar

from pyro_vae.checks import densities as check_densities
from pyro_vae.checks import marginal as check_marginal
from pyro_vae.checks import objectives as check_objectives
from pyro_vae.checks import suites as check_suites
from pyro_vae.checks import harness as C
from pyro_vae.checks import stats as check_stats
from pyro_vae.cli.app import main
from pyro_vae.estimate import marginal
from pyro_vae.infer import objectives
from pyro_vae.models import vae
from pyro_vae.registry import GUIDES, OBJECTIVES, PRIORS

QUANTITIES = [
    "exact guide: max |log w - log p(x)|",
    "exact guide: trace, jit=True: -loss / N",
    "exact guide: meanfield, jit=False: -loss / N",
    "exact guide: iwae, num_particles=5, dreg=True: -loss / N",
    "TraceMeanField KL(q || p(z)) / N",
    "max |ELBO + KL(q || p(z|x)) - log p(x)|",
    "MC KL(q || p(z|x)) / N",
    "trace, jit: loss / N",
    "meanfield, no jit: d loss along random direction",
    "meanfield, jit, warm-up step 10/40, beta 2: KL weight at step 10",
    "trace, jit, cyclical step 13/20: loss / N",
    "meanfield, free bits: loss / N",
    "iwae K=10: DReG vs plain gradient along exact-gradient direction",
    "IWAE_1 / N = ELBO",
    "IWAE_1000 / N in (ELBO, log p(x)]",
    "IWAE_1000 - IWAE_100 / N > 0",
    "SE: empirical sd of repeats / reported SE",
    "ESS / K: reported / closed form",
    "guide iaf: max |log density - (log base - log|det J|)|",
    "prior flow: integral of the density",
    "SVI-trained linear VAE: mean log p(x)",
]
NUM_ROWS = (
    150  # 77 + 11 AIS + 32 hierarchical + 7 enum and M2 + 5 diagnostics + 1 distributed
)
# + 5 enum_meanfield (its exact-guide row and checks/enum_meanfield.py's 4) + 12 CVAE


@pytest.fixture(autouse=True)
def one_thread():
    """Many small tensor ops: on a shared machine one thread is much faster than torch's pool."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
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
    assert len(rows) == NUM_ROWS and all(row.endswith("ok") for row in rows), out
    assert lines[-1] == f"{NUM_ROWS} passed, 0 failed"
    for quantity in QUANTITIES:
        assert quantity in out, quantity
    # a row for every registered objective, guide and prior
    for name in OBJECTIVES.names():
        assert f"exact guide: {name}" in out, name
    for name in GUIDES.names():
        assert f"guide {name}:" in out, name
    for name in PRIORS.names():
        assert f"prior {name}:" in out, name
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


def test_harness_names_stay_importable_and_a_suite_is_one_line(monkeypatch):
    for name in ("CheckRow", "within_se", "within_tol", "run_checks", "format_table"):
        assert hasattr(C, name), name
    assert C.CheckRow is check_stats.CheckRow
    # a non-finite estimate fails, and so does one more than 4 SE off
    assert not C.within_se("q", float("nan"), 0.0, 1.0).passed
    assert (
        not C.within_se("q", 4.01, 0.0, 1.0).passed
        and C.within_se("q", 3.99, 0.0, 1.0).passed
    )

    def extra(truth, x, generator):
        return [C.within_tol("an added suite", 1.0, 0.0)]

    monkeypatch.setattr(C, "SUITES", [extra])
    rows = C.run_checks()
    assert [r.quantity for r in rows] == ["an added suite"] and not rows[0].passed


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
    assert len(rows) == NUM_ROWS and not failed, C.format_table(failed)


# -- the mutation test: six bugs that passed `pyro-vae check` before issue #13 ---------------------


def _mutate_source(monkeypatch, owner, name: str, old: str, new: str) -> None:
    """Replace ``owner.name`` (a function or method) by its own source with ``old`` -> ``new``,
    compiled in its module's namespace: the bug is injected into the real code."""
    function = getattr(owner, name)
    source = textwrap.dedent(inspect.getsource(function))
    assert source.count(old) == 1, f"{old!r} not found once in {name}"
    namespace = {}
    exec(source.replace(old, new), vars(inspect.getmodule(function)), namespace)
    monkeypatch.setattr(owner, name, namespace[name])


def _iwae_without_log_k(monkeypatch):
    _mutate_source(
        monkeypatch,
        objectives.IWAE,
        "_bound",
        "- math.log(self.num_particles)",
        "",
    )


def _dreg_with_w_not_w_squared(monkeypatch):
    _mutate_source(
        monkeypatch,
        objectives.IWAE,
        "_dreg_surrogate",
        "(weights**2 * (log_p - log_q))",
        "(weights * (log_p - log_q))",
    )


def _jit_loss_times_1_1(monkeypatch):
    compiled = objectives.JitTrace_ELBO.loss_and_surrogate_loss

    def scaled(self, *args, **kwargs):
        loss, surrogate = compiled(self, *args, **kwargs)
        return 1.1 * loss, surrogate

    monkeypatch.setattr(objectives.JitTrace_ELBO, "loss_and_surrogate_loss", scaled)


def _beta_scales_the_reconstruction(monkeypatch):
    _mutate_source(
        monkeypatch,
        vae.VAE,
        "model",
        "poutine.scale(scale=reconstruction_weight)",
        "poutine.scale(scale=reconstruction_weight * kl_weight)",
    )


def _halved_flow_log_det(transform):
    def inject(monkeypatch):
        exact = transform.log_abs_det_jacobian
        monkeypatch.setattr(
            transform,
            "log_abs_det_jacobian",
            lambda self, x, y: 0.5 * exact(self, x, y),
        )

    return inject


def _doubled_se(monkeypatch):
    _mutate_source(
        monkeypatch,
        marginal._Accumulator,
        "result",
        "return log_marginal, stderr, ess",
        "return log_marginal, 2 * stderr, ess",
    )


# each bug, a row that must catch it (the report lists them) and the suite that holds the row:
# the check runs through that suite only (the suites before it too, so the draws are the same)
MUTATIONS = {
    "iwae without -log K": (
        _iwae_without_log_k,
        "exact guide: iwae, num_particles=5: -loss / N",
        check_suites.exact_posterior_checks,
    ),
    "DReG with w~ instead of w~^2": (
        _dreg_with_w_not_w_squared,
        "iwae K=10: DReG vs plain gradient along exact-gradient direction",
        check_objectives.objective_checks,
    ),
    "JIT loss x 1.1": (
        _jit_loss_times_1_1,
        "exact guide: trace, jit=True: -loss / N",
        check_suites.exact_posterior_checks,
    ),
    "beta also scales the reconstruction": (
        _beta_scales_the_reconstruction,
        "trace, jit, beta 2, lambda_rec 0.5: loss / N",
        check_objectives.objective_checks,
    ),
    "iaf / flow prior log|det J| halved": (
        _halved_flow_log_det(T.AffineAutoregressive),
        "guide iaf: max |log density - (log base - log|det J|)|, autograd J",
        check_densities.density_checks,
    ),
    "planar log|det J| halved": (
        _halved_flow_log_det(ConditionedPlanar),
        "guide planar: max |log density - (log base - log|det J|)|, autograd J",
        check_densities.density_checks,
    ),
    "reported SE doubled": (
        _doubled_se,
        "SE: empirical sd of repeats / reported SE, K=200, 20 runs",
        check_marginal.marginal_checks,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("bug", list(MUTATIONS))
def test_check_fails_under_each_injected_bug(monkeypatch, bug):
    inject, catcher, suite = MUTATIONS[bug]
    inject(monkeypatch)
    rows = C.run_checks(through=suite)
    failed = {row.quantity: row for row in rows if not row.passed}
    assert catcher in failed, C.format_table(list(failed.values()))


def test_flow_prior_log_det_halved_is_caught_by_its_jacobian_row(monkeypatch):
    """The flow prior's density uses the inverse of the same transform as iaf: its own row must
    fail too (the density suite alone, to keep this fast)."""
    _halved_flow_log_det(T.AffineAutoregressive)(monkeypatch)
    generator = torch.Generator().manual_seed(0)
    rows = check_densities.density_checks(None, torch.zeros(1), generator)
    failed = [row.quantity for row in rows if not row.passed]
    assert any(q.startswith("prior flow: max |log density") for q in failed), failed

"""The check rows of ``checks/diagnostics.py`` pass on the library and fail, naming
themselves, under bugs injected into the estimators they hold (mutation tests). (Not
test_diagnostics.py: tests/estimate has one, and pytest needs unique basenames.)"""

import pytest
import torch

from pyro_vae.checks import diagnostics as rows
from pyro_vae.checks.analytic_models import true_model
from pyro_vae.checks.harness import SUITES
from pyro_vae.estimate import diagnostics, pareto
from pyro_vae.parts import discretized


@pytest.fixture(scope="module")
def model():
    generator = torch.Generator().manual_seed(0)
    truth = true_model(generator)
    return truth, truth.sample(500, generator)


def failing(checked, name: str):
    """The names of the failed rows; every row must name what it checks."""
    assert checked and all(name in r.quantity for r in checked)
    return [r.quantity for r in checked if not r.passed]


def khat(seed: int = 0):
    return rows.khat_rows(torch.Generator().manual_seed(seed))


def test_the_rows_are_registered_and_pass(model):
    assert rows.diagnostic_checks in SUITES
    truth, x = model
    assert not failing(khat(), "Pareto k-hat")
    assert not failing(rows.discretized_logistic_rows(), "discretized logistic")
    assert not failing([rows.mutual_information_row(truth, x)], "mutual information")


def test_khat_rows_catch_a_fit_without_its_shrinkage(monkeypatch):
    real = pareto._fit_pareto_shapes

    def unshrunk(x):
        n = x.shape[-1]
        return (real(x) - 5.0 / (n + 10.0)) * (n + 10.0) / n

    monkeypatch.setattr(pareto, "_fit_pareto_shapes", unshrunk)
    assert failing(khat(), "Pareto k-hat")


def test_khat_rows_catch_a_fit_on_the_log_scale(monkeypatch):
    real = pareto._fit_pareto_shapes
    monkeypatch.setattr(pareto, "_fit_pareto_shapes", lambda x: real(torch.log1p(x)))
    assert failing(khat(), "Pareto k-hat")


def test_discretized_logistic_rows_catch_swapped_tails(monkeypatch):
    real = discretized._log_bin

    def swapped(k, a, b, width):
        flipped = torch.where(k == 0, discretized.LEVELS, torch.where(k == 255, 0, k))
        return real(flipped.to(k.dtype), a, b, width)

    monkeypatch.setattr(discretized, "_log_bin", swapped)
    assert failing(rows.discretized_logistic_rows(), "discretized logistic")


def test_discretized_logistic_rows_catch_a_wrong_bin_width(monkeypatch):
    real = discretized._log_bin
    monkeypatch.setattr(
        discretized, "_log_bin", lambda k, a, b, width: real(k, a, b, 0.5 * width)
    )
    failed = failing(rows.discretized_logistic_rows(), "discretized logistic")
    assert "discretized logistic: bins sum to 1" in failed


@pytest.mark.parametrize(
    "bug",
    [lambda v: v + 0.25, lambda v: 0.9 * v],
    ids=["plus_quarter_nat", "times_0.9"],
)
def test_mutual_information_row_catches_a_biased_estimate(model, monkeypatch, bug):
    real = diagnostics.mutual_information

    def biased(*args, **kwargs):
        result = dict(real(*args, **kwargs))
        result["mutual_information"] = bug(result["mutual_information"])
        return result

    monkeypatch.setattr(diagnostics, "mutual_information", biased)
    truth, x = model
    assert failing([rows.mutual_information_row(truth, x)], "mutual information")

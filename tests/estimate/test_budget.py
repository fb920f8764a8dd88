"""AIS sizes that cannot fit are refused before allocating (issue 26, group 3): one
``error:`` line naming the flag, through the real command line."""

import inspect

import pytest

from pyro_vae.cli.app import main
from pyro_vae.config import sizes

GIB = 2**30
FAST = ["--latent-dim", "2", "--set", "model.hidden=[16]", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("budget") / "run"
    assert main(["train", *FAST, "--epochs", "1", "--out", str(out)]) == 0
    return out


HALF = "more than half of this machine's 16 GiB of memory; use a smaller value"


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--ais-steps", str(10**12)],
            "--ais-steps 1000000000000 means a schedule of 1000000000001 inverse "
            f"temperatures, about 7.28 TiB, {HALF}",
        ),
        (
            ["--ais-chains", str(10**9)],
            "--ais-chains 1000000000 means at least 1000000000 chains of 456 numbers each "
            f"in one batch, about 1.66 TiB, {HALF}",
        ),
        (
            ["--bdmc", str(10**9)],
            "--bdmc 1000000000 means 1000000000 simulated points of 456 numbers each in "
            f"one pass, about 1.66 TiB, {HALF}",
        ),
    ],
)
def test_ais_sizes_that_cannot_fit(run, cli_error, monkeypatch, flags, message):
    monkeypatch.setattr(sizes, "memory_bytes", lambda: 16 * GIB)
    argv = ["evaluate", str(run), "--method", "ais", "--limit", "2", *flags]
    assert cli_error(argv) == message
    # the net: on a machine with far more memory the same settings pass the check
    from pyro_vae.estimate import budget
    from pyro_vae.run.loading import load_run

    _, vae, _ = load_run(run, need_data=False)
    monkeypatch.setattr(sizes, "memory_bytes", lambda: 2**60)
    budget.check_ais_memory(vae, 10**12, 10**9, 10**9)


def test_ais_sizes_are_refused_before_the_other_estimates(run, monkeypatch):
    """The check runs first: an evaluation that would spend minutes on importance sampling
    before AIS refuses at once (the IS estimate is never reached)."""
    from pyro_vae.errors import ConfigError
    from pyro_vae.estimate import evaluate as evaluation
    from pyro_vae.run.loading import load_run

    _, vae, data = load_run(run)
    monkeypatch.setattr(sizes, "memory_bytes", lambda: 16 * GIB)
    monkeypatch.setattr(evaluation, "importance_sampled", lambda *a, **k: 1 / 0)
    for method in ("ais", "both"):
        with pytest.raises(ConfigError, match="--ais-chains"):
            evaluation.evaluate(
                vae, data.test[:2], 5, method=method, ais_options={"num_chains": 10**9}
            )
    # the early check fills in the same defaults that ais_evaluation has
    from pyro_vae.estimate import budget

    signature = inspect.signature(evaluation.ais_evaluation)
    defaults = {k: signature.parameters[k].default for k in budget.AIS_DEFAULTS}
    assert defaults == budget.AIS_DEFAULTS


def test_values_per_row_counts_the_decoder_output_and_the_linear_layers(run):
    from pyro_vae.estimate import budget
    from pyro_vae.run.loading import load_run

    _, vae, _ = load_run(run, need_data=False)
    # digits: D = 64, Bernoulli (1 number per pixel); linear layers 64->16, the guide's
    # 16->2 and 16->2, decoder 2->16->64
    assert budget.values_per_row(vae) == 2 * (64 * 2 + 16 + 2 + 2 + 16 + 64)

"""Importance-sampled log p(x) against the linear-Gaussian closed form (float64)."""

import math
import platform
import subprocess
import sys
import textwrap

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.ops.stats import fit_generalized_pareto

from pyro_vae.checks.analytic_models import (
    linear_vae,
    set_exact_posterior_guide,
    set_perturbed_diagonal_guide,
    true_model,
)
from pyro_vae.estimate import chunks as chunk_module
from pyro_vae.estimate import marginal, pareto
from pyro_vae.estimate.marginal import log_marginal_likelihood
from pyro_vae.infer.objectives import IWAE
from pyro_vae.infer.traces import log_weights


@pytest.fixture
def truth():
    return true_model(torch.Generator().manual_seed(7))


@pytest.fixture
def x(truth):
    return truth.sample(40, torch.Generator().manual_seed(8))


def test_exact_posterior_gives_the_exact_value_and_ess_equal_to_k(truth, x):
    vae = linear_vae(truth, "full_rank")
    set_exact_posterior_guide(vae, truth)
    estimate = log_marginal_likelihood(
        vae.model, vae.guide, x, num_samples=300, particle_batch_size=70
    )
    torch.testing.assert_close(
        estimate.log_marginal, truth.log_marginal(x), rtol=0, atol=1e-9
    )
    torch.testing.assert_close(
        estimate.ess, torch.full_like(estimate.ess, 300.0), rtol=1e-9, atol=0
    )
    assert (estimate.stderr < 1e-6).all()


def test_imperfect_guide_converges_within_4_standard_errors(truth, x):
    vae = linear_vae(truth, "diagonal")
    set_perturbed_diagonal_guide(
        vae, truth, torch.Generator().manual_seed(9), spread=0.3
    )
    estimate = log_marginal_likelihood(vae.model, vae.guide, x, num_samples=5000)
    exact = truth.log_marginal(x)
    assert (estimate.ess < 5000).all() and (
        estimate.ess >= 1
    ).all()  # an imperfect guide wastes draws
    # the mean over points, with the standard error of a mean
    mean_se = estimate.stderr.pow(2).sum().sqrt() / len(x)
    assert abs(estimate.log_marginal.mean() - exact.mean()) < 4 * mean_se
    # each point where the delta-method standard error is trustworthy (ESS of 100 or more; with a
    # few dominant weights it underestimates the error)
    z = (estimate.log_marginal - exact) / estimate.stderr
    trusted = estimate.ess >= 100
    assert trusted.sum() >= 30 and (z[trusted].abs() < 4).all(), z
    # the imperfect guide's ELBO is clearly below: importance sampling closed the gap
    loc, scale = vae.encoder(x).base_dist.loc, vae.encoder(x).base_dist.scale
    assert truth.elbo(x, loc, scale).mean() < exact.mean() - 100 * mean_se


def test_chunking_does_not_change_the_answer_for_the_exact_guide(truth, x):
    vae = linear_vae(truth, "full_rank")
    set_exact_posterior_guide(vae, truth)
    a = log_marginal_likelihood(
        vae.model, vae.guide, x, num_samples=64, batch_size=7, particle_batch_size=5
    )
    b = log_marginal_likelihood(vae.model, vae.guide, x, num_samples=64)
    torch.testing.assert_close(a.log_marginal, b.log_marginal, rtol=0, atol=1e-9)
    assert a.log_marginal.shape == (40,)


def _estimates(vae, x, seed, **options):
    torch.manual_seed(seed)
    estimate = log_marginal_likelihood(
        vae.model, vae.guide, x, 120, max_pairs=90, **options
    )
    return estimate, torch.rand(3)  # the random stream after the call


@pytest.mark.parametrize("guide", ["diagonal", "full_rank"])
def test_compiled_chunks_give_the_eager_estimates_and_leave_the_stream_alike(
    truth, x, guide
):
    """jit=True (TorchScript per chunk shape, three shapes here) draws what the eager
    chunks draw: the same estimates and k-hats (to 1e-6: in float64 the trace keeps shape
    arithmetic such as d log(2 pi) in float32) and the same random stream afterwards."""
    vae = linear_vae(truth, guide)
    if guide == "diagonal":
        set_perturbed_diagonal_guide(vae, truth, torch.Generator().manual_seed(1))
    eager, eager_after = _estimates(vae, x[:7], 3, jit=False)
    compiled, compiled_after = _estimates(vae, x[:7], 3, jit=True)
    for field in ("log_marginal", "stderr", "ess", "khat"):
        assert torch.allclose(
            getattr(compiled, field), getattr(eager, field), rtol=1e-6, equal_nan=True
        ), field
    assert torch.equal(compiled_after, eager_after)
    assert not torch.equal(
        compiled.log_marginal, _estimates(vae, x[:7], 4)[0].log_marginal
    )


def test_compiled_chunks_check_catches_a_compile_that_draws_from_the_real_stream(
    truth, x, monkeypatch
):
    """The net above fails when compiling is not done on a forked random stream."""
    vae = linear_vae(truth, "diagonal")
    eager, eager_after = _estimates(vae, x[:7], 3, jit=False)

    def compile_on_the_real_stream(self, k, xb):
        fn = pyro.ops.jit.trace(
            lambda v: log_weights(self.model, self.guide, k, v), ignore_warnings=True
        )
        fn(xb)
        return fn

    monkeypatch.setattr(marginal.ChunkWeights, "_compile", compile_on_the_real_stream)
    compiled, compiled_after = _estimates(vae, x[:7], 3, jit=True)
    assert not torch.equal(compiled_after, eager_after)
    assert not torch.allclose(compiled.log_marginal, eager.log_marginal)


def _compiled_and_eager_after_an_update(truth, x, swap=False):
    """A chunk compiled, then every parameter changed in place (as an optimizer step or
    load_state_dict does): the compiled chunk's weights and the eager ones, on the same draws.
    ``swap`` injects a bug: the guide's loc and scale weights (same shape) fed in each
    other's place."""
    vae = linear_vae(truth, "diagonal")
    weights = marginal.ChunkWeights(vae.model, vae.guide, compile=True, required=True)
    weights(6, x[:4])
    (chunk,) = weights.compiled.values()
    if swap:
        i, j = (
            next(k for k, n in enumerate(chunk.names) if n.endswith(suffix))
            for suffix in ("encoder$$$loc.weight", "encoder$$$raw_scale.weight")
        )
        chunk.names[i], chunk.names[j] = chunk.names[j], chunk.names[i]
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    torch.manual_seed(5)
    compiled = weights(6, x[:4])
    torch.manual_seed(5)
    return compiled, log_weights(vae.model, vae.guide, 6, x[:4])


def test_compiled_chunks_feed_the_stores_current_parameters_in_the_graphs_order(
    truth, x
):
    compiled, eager = _compiled_and_eager_after_an_update(truth, x)
    torch.testing.assert_close(compiled, eager, rtol=1e-6, atol=0)


def test_compiled_chunk_check_catches_parameters_fed_in_the_wrong_order(truth, x):
    compiled, eager = _compiled_and_eager_after_an_update(truth, x, swap=True)
    assert (compiled - eager).abs().max() > 1e-3


def test_compiling_is_automatic_from_enough_chunks_and_falls_back_for_untraceable_programs(
    truth, x, monkeypatch
):
    vae = linear_vae(truth, "diagonal").float()  # the same parameters, now float32
    made = []
    real = marginal.ChunkWeights.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(marginal.ChunkWeights, "__init__", spy)
    x32 = x.float()
    log_marginal_likelihood(
        vae.model, vae.guide, x32[:2], 100, max_pairs=100
    )  # 2 chunks of (100 particles, 1 row): eager
    (weights,) = made  # one automatic instance, kept with the model
    assert weights.compile is None and not weights.compiled
    log_marginal_likelihood(vae.model, vae.guide, x32[:1], 4500, max_pairs=100)  # 45
    assert not weights.compiled  # 2 + 45 chunks of that shape seen; 48 repay it
    log_marginal_likelihood(vae.model, vae.guide, x32[:1], 200, max_pairs=100)
    assert len(made) == 1 and len(weights.compiled) == 1  # the calls counted together
    log_marginal_likelihood(vae.model, vae.guide, x32[:4], 2500, max_pairs=100)  # 100
    assert len(made) == 1 and len(weights.compiled) == 1  # the same shape: reused
    vae.eval()  # another mode: a fresh instance, nothing traced in the old mode reused
    log_marginal_likelihood(vae.model, vae.guide, x32[:1], 100, max_pairs=100)
    assert len(made) == 2 and not made[1].compiled
    vae.train()
    assert not marginal.worth_compiling(10**6, 100, torch.float64)  # float64: eager
    assert marginal.worth_compiling(73, 5000, torch.float32)
    assert not marginal.worth_compiling(72, 5000, torch.float32)
    assert marginal.worth_compiling(48, 1, torch.float32)
    assert not marginal.worth_compiling(47, 1, torch.float32)

    def data_dependent_guide(x):  # Python control flow on a value: not traceable
        with pyro.plate("data", x.shape[0]):
            loc = torch.zeros(x.shape[0], 2) + (1.0 if x.sum() > 0 else -1.0)
            pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample(
                "z", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1)
            )
            pyro.sample(
                "x", dist.Normal(z.sum(-1, keepdim=True), 1.0).to_event(1), obs=x
            )

    data = torch.randn(3, 1)
    monkeypatch.setattr(
        marginal.ChunkWeights,
        "_compile",
        lambda *a: (_ for _ in ()).throw(RuntimeError),
    )
    auto = log_marginal_likelihood(model, data_dependent_guide, data, 50, max_pairs=1)
    assert made[-1].compile is False and torch.isfinite(auto.log_marginal).all()
    with pytest.raises(RuntimeError):
        log_marginal_likelihood(model, data_dependent_guide, data, 50, jit=True)


def test_dreg_guide_gradient_vanishes_at_the_exact_posterior(truth, x):
    """At q = p(z|x) every log-weight is log p(x) whatever z is, so DReG's guide gradient is 0
    exactly (the plain IWAE guide gradient is 0 only in expectation)."""
    vae = linear_vae(truth, "full_rank")
    set_exact_posterior_guide(vae, truth)
    IWAE(num_particles=8, dreg=True).loss_and_grads(vae.model, vae.guide, x)
    for name, p in vae.encoder.named_parameters():
        assert p.grad.abs().max() < 1e-8, name
    for p in vae.parameters():
        p.grad = None
    IWAE(num_particles=8, dreg=False).loss_and_grads(vae.model, vae.guide, x)
    assert max(p.grad.abs().max() for p in vae.encoder.parameters()) > 1e-3


def test_any_pyro_model_with_a_data_plate_works():
    """A model/guide pair written by hand (not this library's), with a non-default plate name."""
    data = torch.randn(5)

    def model(x):
        with pyro.plate("points", x.shape[0]):
            z = pyro.sample("mu", dist.Normal(0.0, 1.0))
            pyro.sample("obs", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("points", x.shape[0]):
            pyro.sample("mu", dist.Normal(x / 2, 0.5**0.5))  # the exact posterior

    estimate = log_marginal_likelihood(
        model, guide, data, num_samples=10, plate="points"
    )
    exact = dist.Normal(0.0, 2**0.5).log_prob(data)
    torch.testing.assert_close(estimate.log_marginal.float(), exact, rtol=0, atol=1e-5)


def test_global_latents_are_refused_with_an_explanation():
    def model(x):
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(0.0, scale), obs=x)

    def guide(x):
        pyro.sample("scale", dist.LogNormal(0.0, 0.5))

    with pytest.raises(ValueError, match="site 'scale' is outside the plate 'data'"):
        log_weights(model, guide, 4, torch.randn(3))
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        log_marginal_likelihood(model, guide, torch.randn(3), num_samples=0)


def test_cpu_evaluation_prepares_the_heap(truth, x, monkeypatch):
    """``log_marginal_likelihood`` itself sets the process's heap up on the CPU, so direct
    callers of the Python function get it (and so ``evaluate``, which calls it)."""
    from pyro_vae import process

    vae = linear_vae(truth, "diagonal")
    monkeypatch.setattr(process, "_heap_prepared", False)
    log_marginal_likelihood(vae.model, vae.guide, x, 10)
    assert process._heap_prepared


def test_heap_check_catches_a_marginal_that_skips_the_preparation(
    truth, x, monkeypatch
):
    from pyro_vae import process

    vae = linear_vae(truth, "diagonal")
    monkeypatch.setattr(process, "_heap_prepared", False)
    monkeypatch.setattr(marginal, "prepare_heap", lambda: None)
    log_marginal_likelihood(vae.model, vae.guide, x, 10)
    assert not process._heap_prepared


@pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
    reason="glibc's allocator",
)
@pytest.mark.slow
def test_prepared_heap_reuses_chunk_sized_temporaries_without_page_faults():
    # three 16 MB tensors alive at once, then freed, 20 times: an evaluation chunk's pattern.
    # In a fresh process glibc handed them back to the OS and faulted them in again in 1 to 20
    # of the 20 rounds, varying from run to run; after prepare_heap they are reused.
    code = textwrap.dedent("""
        import resource, torch
        from pyro_vae import evaluate, process  # the modules pyro-vae evaluate imports
        process.prepare_heap()
        def rounds(n):
            for _ in range(n):
                a, b, c = (torch.ones(4 * 2**20) for _ in range(3))
                del a, b, c
        rounds(2)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        rounds(20)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        """)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    one_tensor = 16 * 2**20 // 4096  # pages
    assert int(done.stdout) <= one_tensor + 64


# -- Pareto k-hat: when the standard error can be trusted -----------------------------------------


def guide_scaled(truth, widen):
    """The exact posterior mean with diagonal scales ``widen`` times the posterior marginal sd."""
    vae = linear_vae(truth, "diagonal")
    set_perturbed_diagonal_guide(
        vae, truth, torch.Generator().manual_seed(9), spread=0.0, widen=widen
    )
    return vae


def test_khat_is_small_for_a_wide_proposal_and_large_for_a_narrow_one(truth, x):
    wide = guide_scaled(truth, 2.0)
    estimate = log_marginal_likelihood(wide.model, wide.guide, x, num_samples=5000)
    assert (estimate.khat < 0.5).all(), estimate.khat
    narrow = guide_scaled(truth, 0.25)
    estimate = log_marginal_likelihood(narrow.model, narrow.guide, x, num_samples=5000)
    assert estimate.khat.mean() > 0.7 and (estimate.khat > 0.7).float().mean() > 0.8
    # why it matters: there the delta-method SE is too small (2-SE coverage far below 95%)
    z = (estimate.log_marginal - truth.log_marginal(x)) / estimate.stderr
    assert (z.abs() < 2).float().mean() < 0.6


def psis_khat(log_w: torch.Tensor) -> float:
    """Pyro's psis_diagnostic procedure, on all K log-weights of one data point at once."""
    k = log_w.shape[0]
    log_w = torch.sort(log_w.double() - log_w.max())[0]
    cutoff_index = -int(math.ceil(min(0.2 * k, 3.0 * math.sqrt(k)))) - 1
    cutoff = max(math.log(1.0e-15), log_w[cutoff_index].item())
    tail = log_w[log_w > cutoff]
    return fit_generalized_pareto(tail.exp() - math.exp(cutoff))[0]


def khat_from_recorded_draws(truth, x, monkeypatch, rows=3, batch_size=3):
    """k-hat from chunked streaming (``batch_size`` rows, 100 particles per chunk), and from
    Pyro's procedure on the same draws' full log-weights."""
    vae = guide_scaled(truth, 0.5)
    chunks = []

    def recording(*args, **kwargs):
        chunks.append(log_weights(*args, **kwargs))
        return chunks[-1]

    monkeypatch.setattr(marginal, "log_weights", recording)  # the validation pass
    monkeypatch.setattr(chunk_module, "log_weights", recording)  # the eager chunks
    estimate = log_marginal_likelihood(
        vae.model,
        vae.guide,
        x[:rows],
        num_samples=700,
        batch_size=batch_size,
        particle_batch_size=100,
    )
    per_batch = [torch.cat(chunks[i : i + 7]) for i in range(1, len(chunks), 7)]
    full = torch.cat(
        per_batch, dim=1
    )  # the first call was the one-particle validation pass
    assert full.shape == (700, rows)
    return estimate.khat, torch.tensor([psis_khat(full[:, i]) for i in range(rows)])


def test_streamed_khat_is_pyros_khat_of_all_the_weights(truth, x, monkeypatch):
    streamed, reference = khat_from_recorded_draws(truth, x, monkeypatch)
    torch.testing.assert_close(streamed, reference.double(), rtol=0, atol=1e-6)


def test_khat_fitted_in_blocks_across_row_batches_is_each_rows_own(
    truth, x, monkeypatch
):
    """Row batches of 3 and fits every 4 rows or more: blocks [0, 6), [6, 10) straddle the
    batches, and each row's k-hat is still Pyro's on that row's own weights."""
    monkeypatch.setattr(marginal, "KHAT_BLOCK", 4)
    streamed, reference = khat_from_recorded_draws(truth, x, monkeypatch, rows=10)
    torch.testing.assert_close(streamed, reference.double(), rtol=0, atol=1e-6)


def test_khat_block_check_catches_tails_written_to_the_wrong_rows(
    truth, x, monkeypatch
):
    """Injected bug: each block is fitted on the tails of the rows before it."""
    monkeypatch.setattr(marginal, "KHAT_BLOCK", 4)
    fit = marginal.pareto_khat
    monkeypatch.setattr(
        marginal, "pareto_khat", lambda top, k: fit(top.roll(1, dims=1), k)
    )
    streamed, reference = khat_from_recorded_draws(truth, x, monkeypatch, rows=10)
    assert (streamed - reference).abs().max() > 0.01, (streamed, reference)


def test_streamed_khat_check_catches_a_tail_kept_from_the_last_chunk_only(
    truth, x, monkeypatch
):
    """Injected bug: the accumulator forgets the earlier chunks' largest weights."""
    add = marginal._Accumulator.add

    def forgetful(self, log_w):
        self.top = None
        add(self, log_w)

    monkeypatch.setattr(marginal._Accumulator, "add", forgetful)
    streamed, reference = khat_from_recorded_draws(truth, x, monkeypatch)
    assert (streamed - reference).abs().max() > 0.01, (streamed, reference)


def _batched_and_per_row_fits(tails):
    batched = pareto._fit_pareto_shapes(tails)
    per_row = torch.tensor(
        [fit_generalized_pareto(t)[0] for t in tails], dtype=torch.float64
    )
    return batched, per_row


def pareto_tails():
    """Rows of tails as pareto_khat hands them over: the M largest of K weights relative to
    the largest, minus the (M+1)-th, for log-weights of several spreads and K."""
    g = torch.Generator().manual_seed(3)
    for k, spread in [(60, 0.5), (100, 2.0), (1000, 1.0), (5000, 3.0)]:
        m = pareto.tail_size(k)
        log_w = torch.randn(6, k, generator=g, dtype=torch.float64) * spread
        top = torch.sort(log_w, dim=-1, descending=True).values[:, : m + 1]
        top = top - top[:, :1]
        yield top[:, :m].exp() - top[:, m:].exp()


def test_all_rows_at_once_fit_is_pyros_fit_per_row():
    """pareto_khat fits every row whose M weights are all above the threshold at once."""
    for tails in pareto_tails():
        batched, per_row = _batched_and_per_row_fits(tails)
        torch.testing.assert_close(batched, per_row, rtol=0, atol=1e-12)


def test_all_rows_at_once_fit_check_catches_unsorted_tails(monkeypatch):
    """Injected bug: the batched fit skips sorting, so its quantile-based candidates come
    from the wrong order statistics."""

    class NoSort:
        def __getattr__(self, name):
            return getattr(torch, name)

        @staticmethod
        def sort(t, dim=-1, descending=False):
            return torch.return_types.sort((t, None))

    monkeypatch.setattr(pareto, "torch", NoSort())
    differences = [
        (lambda b, r: (b - r).abs().nan_to_num(math.inf).max())(
            *_batched_and_per_row_fits(t)
        )
        for t in pareto_tails()
    ]
    assert max(differences) > 1e-3


def test_khat_is_nan_when_k_is_too_small_or_not_asked_for(truth, x):
    vae = guide_scaled(truth, 1.0)
    assert log_marginal_likelihood(vae.model, vae.guide, x, 40).khat.isnan().all()
    off = log_marginal_likelihood(vae.model, vae.guide, x, 100, khat=False)
    assert off.khat.isnan().all()
    on = log_marginal_likelihood(vae.model, vae.guide, x, 100)
    assert on.khat.isfinite().all()


def test_forked_rng_saves_the_cuda_devices_its_values_live_on():
    """The device list ``process.forked_rng`` hands to ``torch.random.fork_rng``: the CUDA
    devices of the tensors and devices given (no GPU needed to name them), nothing for the CPU
    or for other arguments; and the CPU stream is left as it was."""
    from pyro_vae.process import cuda_devices, forked_rng

    devices = [torch.device("cuda", 1), torch.device("cuda"), torch.device("cpu")]
    assert cuda_devices([*devices, torch.zeros(2), 3.0, torch.device("cuda", 1)]) == [
        0,
        1,
    ]
    assert cuda_devices([torch.zeros(1), 2]) == []
    before = torch.get_rng_state()
    with forked_rng(torch.zeros(1)):
        torch.rand(5)
    assert torch.equal(torch.get_rng_state(), before)


# -- the reported standard error is the spread of repeated estimates -------------------------


def se_ratio(truth, x, repeats: int = 20, k: int = 200) -> float:
    """sqrt(mean over points of var(repeated estimates) / mean reported SE^2): 1 when the
    reported SE is the estimator's sd (20 repeats x 10 points: about 5% noise)."""
    vae = linear_vae(truth, "diagonal")
    set_perturbed_diagonal_guide(
        vae, truth, torch.Generator().manual_seed(9), spread=0.0, widen=1.5
    )
    pyro.set_rng_seed(11)
    runs = [
        log_marginal_likelihood(vae.model, vae.guide, x[:10], num_samples=k)
        for _ in range(repeats)
    ]
    values = torch.stack([r.log_marginal for r in runs])
    reported = torch.stack([r.stderr for r in runs]).pow(2).mean(0)
    return (values.var(0) / reported).mean().sqrt().item()


def test_the_reported_standard_error_is_the_spread_of_repeated_estimates(truth, x):
    assert 0.8 < se_ratio(truth, x) < 1.25


def test_the_standard_error_test_catches_a_doubled_standard_error(
    truth, x, monkeypatch
):
    real = marginal._Accumulator.result

    def doubled(self, k):
        log_marginal, stderr, ess = real(self, k)
        return log_marginal, 2 * stderr, ess

    monkeypatch.setattr(marginal._Accumulator, "result", doubled)
    assert not 0.8 < se_ratio(truth, x) < 1.25

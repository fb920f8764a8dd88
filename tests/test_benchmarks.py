"""The benchmark scripts run end to end (tiny sizes) and write the figures their README names.
All slow: they time real work, at least a few seconds each."""

import json
import math
import sys
from pathlib import Path

import pyro
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
sys.path.insert(
    0, str(Path(__file__).resolve().parent / "infer")
)  # test_jit_elbo's helper

import speed_eval  # noqa: E402
import speed_parts  # noqa: E402
import speed_train  # noqa: E402
from test_jit_elbo import graph_operations  # noqa: E402

from pyro_vae.registry import GUIDES, OBJECTIVES, PRIORS  # noqa: E402

pytestmark = pytest.mark.slow


def test_speed_eval_runs_and_writes_its_figures(tmp_path):
    path = tmp_path / "eval.json"
    summary = speed_eval.main(
        "--device cpu --images 2 --num-samples 20 10 --max-pairs 10 --rounds 1 --pairs 1"
        " --json".split() + [str(path)]
    )
    assert json.loads(path.read_text()) == json.loads(json.dumps(summary))
    assert summary["ratio_device"] == "cpu" and summary["ratio_vs_torch"] > 0
    by_k = summary["ratio_vs_torch_by_k_and_budget"]
    assert set(by_k) == {"20", "10"} and all(
        set(r) == {"10", "5000"} for r in by_k.values()
    )
    first, second = summary["one_process"]
    assert (first["num_samples"], first["images"]) == (20, 2)
    assert (second["num_samples"], second["images"]) == (10, 4)  # the same pairs per K
    fresh = summary["fresh_processes"]
    for name in ("library", "torch"):
        assert math.isfinite(first[name]["mean_log_marginal"])
        assert first[name]["images_per_s"] > 0 and fresh[name]["images_per_s"] > 0
        assert fresh[name]["page_faults_per_image"] >= 0
    assert fresh["library_no_prepare_heap"]["images_per_s"] > 0
    assert summary["ratio_vs_torch_fresh_processes"] > 0
    assert summary["prepare_heap_speedup_fresh_processes"] > 0
    assert set(summary["ratio_vs_fair_plain"]) == {"20", "10"}
    assert summary["ratio_vs_fair_plain"]["20"] == summary["ratio_vs_torch"]


def _library_and_plain(k: int):
    cpu = torch.device("cpu")
    vae, x = speed_eval.make_vae(cpu), speed_eval.images(3, cpu)
    pyro.set_rng_seed(0)
    library = speed_eval.library_estimate(vae, x, k)
    pyro.set_rng_seed(0)
    return library, speed_eval.torch_estimate(vae, x, k)


def test_the_fair_plain_sampler_computes_the_librarys_numbers_on_the_same_draws():
    """The baseline does the library's algebra: same seed, same estimates (one image per
    chunk at K = 5000, a matrix-vector product; 50 images per chunk at K = 100)."""
    for k in (5000, 100):
        library, plain = _library_and_plain(k)
        torch.testing.assert_close(plain, library, rtol=1e-6, atol=0)


def test_the_fair_plain_check_catches_a_baseline_at_another_chunk_budget(monkeypatch):
    """Injected bug: the plain sampler chunks at another budget than the library (2 of the 3
    images per chunk at K = 100), so it draws its noise in another order."""
    monkeypatch.setattr(speed_eval, "default_max_pairs", lambda device: 200)
    library, plain = _library_and_plain(100)
    assert (plain - library).abs().max() > 1e-3


def test_speed_train_reports_the_same_optimizer_ratio_per_batch_size(tmp_path):
    path = tmp_path / "train.json"
    summary = speed_train.main(
        "--device cpu --batch-sizes 10 20 --rounds 2 --steps 3 --no-eager --json".split()
        + [str(path)]
    )
    assert json.loads(path.read_text()) == json.loads(json.dumps(summary))
    assert set(summary["ratio_vs_torch_same_optimizer"]) == {"10", "20"}
    assert set(summary["ratio_vs_torch"]) == {"10", "20"}
    result = summary["results"][0]["library"]
    for label in ("ratio_vs_torch_same_optimizer", "ratio_vs_torch"):
        assert result[f"{label}_min"] <= result[label] <= result[f"{label}_max"]
    assert summary["results"][0]["clock"] == "cpu"


def test_speed_parts_quick_writes_a_ratio_for_every_part(tmp_path):
    path = tmp_path / "parts.json"
    summary = speed_parts.main(["--quick", "--json", str(path)])
    written = json.loads(path.read_text())
    assert written["train"] == summary["train"] and written["eval"] == summary["eval"]
    parts = [f"prior={n}" for n in PRIORS.names() if n != "standard_normal"]
    parts += [f"guide={n}" for n in GUIDES.names() if n != "diagonal"]
    assert set(written["eval"]) == set(parts)
    parts += [f"objective={n}" for n in OBJECTIVES.names() if n != "trace"]
    assert set(written["train"]) == set(parts)
    ratios = list(written["train"].values()) + list(written["eval"].values())
    assert all(math.isfinite(r) and r > 0 for r in ratios)


def test_speed_eval_chunk_costs_measure_each_shape_eager_and_compiled(tmp_path):
    path = tmp_path / "chunks.json"
    summary = speed_eval.main(["--chunk-costs", "--rounds", "1", "--json", str(path)])
    rows = json.loads(path.read_text())["chunk_costs"]
    assert rows == summary["chunk_costs"]
    assert [(r["num_samples"], r["rows"]) for r in rows] == speed_eval.CHUNK_SHAPES
    for r in rows:
        assert r["pairs"] == r["num_samples"] * r["rows"]
        assert r["eager_ms"] > 0 and r["compiled_ms"] > 0 and r["compile_ms"] > 0
        repaid = r["break_even_chunks"]
        assert repaid is None or repaid == r["compile_ms"] / (
            r["eager_ms"] - r["compiled_ms"]
        )


def test_speed_train_attribution_runs_each_variant_with_its_parts_swapped_back():
    from pyro_vae.infer import jit_elbo
    from pyro_vae.parts import guides, priors

    kept = (guides.ReparameterizedNormal, priors.UnitNormal, jit_elbo.specialized)
    summary = speed_train.main(
        "--device cpu --batch-sizes 10 --rounds 2 --steps 3 --no-eager --attribution".split()
    )
    assert (
        guides.ReparameterizedNormal,
        priors.UnitNormal,
        jit_elbo.specialized,
    ) == kept
    result = summary["results"][0]
    for name, _, _ in speed_train.ATTRIBUTION:
        assert result[name]["ratio_vs_torch_same_optimizer"] > 0
    operations = {}  # the graph each variant calls: the swapped parts made it bigger
    for densities, specialize in ((True, True), (False, True), (True, False)):
        step = speed_train.library_variant(
            torch.device("cpu"), 10, densities, specialize
        )
        elbo = step.svi.loss_and_grads.__self__
        ((graph, _),) = elbo.direct_calls.entries.values()
        operations[densities, specialize] = graph_operations(graph)
    assert operations[True, True] < operations[False, True]
    assert operations[True, True] < operations[True, False]


@pytest.mark.slow
def test_speed_train_reports_the_torchrun_ratios_and_scaling(tmp_path):
    """``--torchrun 1 2``: each process count's same-Adam ratio, its backend (gloo with two
    CPU processes, none with one) and the 2-process scaling (issue #25)."""
    summary = speed_train.main(
        "--device cpu --batch-sizes 10 --rounds 1 --steps 3 --no-eager --torchrun 1 2"
        " --json".split() + [str(tmp_path / "train.json")]
    )
    assert set(summary["torchrun_ratio_vs_torch_same_optimizer"]) == {"1", "2"}
    assert all(
        r > 0 for r in summary["torchrun_ratio_vs_torch_same_optimizer"].values()
    )
    runs = summary["torchrun"]
    assert runs["1"]["backend"] is None and runs["1"]["world_size"] == 1
    assert runs["2"]["backend"] == "gloo" and runs["2"]["world_size"] == 2
    scaling = summary["torchrun_scaling_vs_1_process"]["2"]
    assert set(scaling) == {"library", "library_eager", "torch_same_adam"}


def test_epoch_cost_scales_the_timed_steps_to_an_epoch():
    """benchmarks/epoch_cost.py (issue #28's CPU seconds per epoch) on the digits."""
    import subprocess

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "epoch_cost.py"
    done = subprocess.run(
        [sys.executable, str(script), "--config", "", "--steps", "3", "--warmup", "1"]
        + ["--set", "model.family=hierarchical", "--set", "model.hidden=[16]"],
        capture_output=True,
        text=True,
        check=True,
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["cpu_seconds_per_step"] > 0 and out["steps_timed"] == 3
    from pyro_vae import config, data

    rows = len(data.load(config.load(None, {}).data).train)
    assert out["steps_per_epoch"] == math.ceil(rows / 100)  # batch 100
    assert out["cpu_seconds_per_epoch"] == pytest.approx(
        out["cpu_seconds_per_step"] * out["steps_per_epoch"]
    )

"""benchmarks/cvae_mnist.py runs end to end at tiny sizes (needs ../shared/data): the CVAE and
the deterministic baseline on the quadrant task, every figure of the results JSON present.
"""

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import cvae_mnist  # noqa: E402


@pytest.mark.slow
def test_the_benchmark_reports_cvae_and_baseline(tmp_path, shared_data):
    out = tmp_path / "cvae.json"
    argv = [
        "--data-dir", str(shared_data), "--epochs", "1", "--hidden", "16",
        "--latent-dim", "2", "--is-points", "20", "--k", "5", "--elbo-draws", "2",
        "--given", "3", "--json", str(out),
    ]  # fmt: skip
    result = cvae_mnist.main(argv)
    assert json.loads(out.read_text())["cvae"] == json.loads(json.dumps(result["cvae"]))
    (row,) = result["cvae"]
    assert row["given_quadrants"] == 3 and row["points"] == 20
    for key in ("cvae_neg_conditional_elbo", "cvae_neg_log_p_is", "baseline_nll"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    # importance sampling is the tighter figure, up to its noise
    assert row["cvae_neg_log_p_is"] <= row["cvae_neg_conditional_elbo"] + 1.0

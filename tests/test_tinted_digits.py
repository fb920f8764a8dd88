"""benchmarks/tinted_digits.py runs end to end at tiny sizes (needs ../shared/data)."""

import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import tinted_digits  # noqa: E402


def test_tinted_digits_are_colour_uint8_images_of_the_digits():
    grey = np.zeros((2, 28, 28), dtype=np.uint8)
    grey[:, 10:18, 12:16] = 255
    colour = tinted_digits.tint(grey)
    assert colour.shape == (2, 3, 32, 32) and colour.dtype == np.uint8
    # the stroke and the background each hold one colour per image, and they differ
    stroke, background = colour[:, :, 12, 15], colour[:, :, 0, 0]
    assert (colour[:, :, 12:20, 14:18] == stroke[:, :, None, None]).all()
    assert (stroke != background).any(axis=1).all()


def test_the_script_trains_and_reports_bits_per_dim(tmp_path, shared_data):
    results = tmp_path / "rows.json"
    argv = [
        "--data-dir", str(shared_data), "--npz", str(tmp_path / "t.npz"),
        "--train", "100", "--test", "20", "--epochs", "1", "--subset", "3",
        "--num-samples", "3", "--set", "network.channels=[4, 8]",
        "--results", str(results),
    ]  # fmt: skip
    row = tinted_digits.main(argv)
    arrays = np.load(tmp_path / "t.npz")
    assert (
        arrays["train"].shape == (100, 3, 32, 32) and arrays["test"].dtype == np.uint8
    )
    assert json.loads(results.read_text()) == [json.loads(json.dumps(row))]
    expected = -row["log_marginal_nats"] / (3072 * math.log(2))
    assert math.isclose(row["bits_per_dim"], expected) and row["test_images"] == 3

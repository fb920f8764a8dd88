"""The line printed per epoch (run/epoch_line.py)."""

from pyro_vae.run.epoch_line import epoch_line

SCORED = {
    "epoch": 7,
    "train_objective": -99.5,
    "train_elbo": -98.123,
    "valid_elbo": -99.5,
    "test_elbo": -99.25,
    "kl": 24.5,
    "reconstruction": -74.75,
    "test_bits_per_dim": 0.1826,
    "valid_bits_per_dim": 0.1831,
    "seconds": 31.44,
}


def test_a_scored_epoch_shows_elbos_kl_bits_and_seconds():
    assert epoch_line(SCORED, 50) == (
        "epoch  7/50  train ELBO -98.12  valid ELBO -99.50  test ELBO -99.25  KL 24.50  "
        "valid 0.1831 bits/dim  31.4 s"
    )


def test_without_validation_or_bits_the_line_says_what_it_has():
    row = {k: v for k, v in SCORED.items() if not k.startswith("valid")}
    assert epoch_line(row, 9) == (
        "epoch 7/9  train ELBO -98.12  test ELBO -99.25  KL 24.50  test 0.1826 bits/dim  "
        "31.4 s"
    )
    row.pop("test_bits_per_dim")
    assert "bits/dim" not in epoch_line(row, 9)


def test_an_epoch_not_scored_shows_the_training_objective():
    row = {"epoch": 3, "train_objective": -120.0, "seconds": 2.0}
    assert epoch_line(row, 100) == "epoch   3/100  training objective -120.00  2.0 s"

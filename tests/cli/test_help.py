"""``pyro-vae train --help`` from the registries, ``--version``, and ``list``'s whole
descriptions (cli/help.py, cli/list.py)."""

import re

import pytest

import pyro_vae
from pyro_vae import registry
from pyro_vae.cli import help as cli_help
from pyro_vae.cli import list as cli_list
from pyro_vae.cli.app import main
from pyro_vae.cli.train import FLAGS
from pyro_vae.config import DEFAULT_PARTS, TrainConfig
from pyro_vae.registry import DATASETS, LIKELIHOODS, PRIORS


def train_help(capsys) -> str:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse's wrapping undone


def test_train_help_lists_every_registered_choice_and_its_default(capsys):
    text = train_help(capsys)
    assert "discretized_logistic" in text
    for kind in registry.REGISTRIES:  # priors, guides, ..., data sets, families
        assert f"one of: {', '.join(kind.names())}" in text, kind.kind
    assert "default: bernoulli; config key likelihood.name" in text
    assert f"default: {DEFAULT_PARTS['prior']}; config key prior.name" in text
    assert f"default: {TrainConfig.epochs}; config key train.epochs" in text
    assert f"default: {TrainConfig.lr}; config key train.lr" in text
    for key in FLAGS.values():  # every flag that sets a config key shows its default
        assert f"config key {key})" in text, key


def test_a_part_registered_by_the_user_shows_up_in_the_help(capsys):
    @LIKELIHOODS.register("my_test_likelihood")
    def mine(arch):
        """A likelihood of the test's own."""

    try:
        assert "my_test_likelihood" in train_help(capsys)
    finally:
        del LIKELIHOODS._factories["my_test_likelihood"]


def test_the_help_is_read_from_the_registries_not_a_list(monkeypatch, capsys):
    """Inject a hand-kept list: the help then misses a registered name, and the test
    above would fail; here we check that the help follows the registry itself."""
    monkeypatch.setattr(LIKELIHOODS, "names", lambda: ["bernoulli", "gaussian"])
    assert "one of: bernoulli, gaussian;" in train_help(capsys)
    monkeypatch.undo()
    assert "discretized_logistic" in train_help(capsys)


def test_choices_and_defaults_of_part_options():
    assert cli_help.choices_and_default("objective.num_particles") == (None, 1)
    names, default = cli_help.choices_and_default("data.dataset")
    assert names == DATASETS.names() and default == "digits"


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"pyro-vae {pyro_vae.__version__}"


def test_list_prints_whole_descriptions(capsys):
    assert main(["list"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for kind in registry.REGISTRIES:
        for name in kind.names():
            whole = cli_list.description(kind.get(name).__doc__)
            assert f"{name} {whole}" in text, name
    # a docstring whose first paragraph spans lines is printed whole, not its first line
    doc = """First line of a sentence that
    goes on here.

    Second paragraph."""
    assert cli_list.description(doc) == "First line of a sentence that goes on here."
    vamp = cli_list.description(PRIORS.get("vamp").__doc__)
    assert re.search(r"\.$", vamp) and len(vamp) > 100


def test_list_lines_fit_the_width_without_cutting(capsys):
    line = cli_list.entry("name", "word " * 60)
    assert all(len(x) <= 80 for x in line.splitlines())
    assert " ".join(line.split()) == "name " + " ".join(["word"] * 60)

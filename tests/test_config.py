import pytest

from pyro_vae import config as cfg
from pyro_vae.errors import ConfigError


def test_defaults_round_trip_through_toml(tmp_path):
    config = cfg.load(
        None, {"prior.name": "vamp", "prior.num_pseudo": 7, "model.hidden": [32, 16]}
    )
    path = tmp_path / "c.toml"
    path.write_text(config.to_toml())
    assert cfg.load(str(path)) == config
    assert cfg.from_dict(config.to_dict()) == config
    assert config.model.hidden == (32, 16)


@pytest.mark.parametrize("name", cfg.packaged_configs())
def test_packaged_configs_load_by_name(name):
    config = cfg.load(name)
    assert config.data.dataset == "binarized-mnist"
    # one latent layer of 50, or the hierarchical configs' layers
    assert config.model.latent_dim == 50 or config.model.latent_layers == (40, 40)


def test_cli_values_take_precedence_over_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        '[train]\nepochs = 7\nlr = 0.01\n[prior]\nname = "mixture"\nnum_components = 3\n'
    )
    config = cfg.load(str(path), {"train.epochs": 2})
    assert (config.train.epochs, config.train.lr) == (2, 0.01)
    assert config.prior.options == {"num_components": 3}
    # naming another part drops the old part's options; options given with it survive
    config = cfg.load(str(path), {"prior.name": "vamp", "prior.num_pseudo": 5})
    assert config.prior == cfg.PartConfig("vamp", {"num_pseudo": 5})


@pytest.mark.parametrize(
    "text,value",
    [
        ("4", 4),
        ("1e-3", 1e-3),
        ("[200, 200]", [200, 200]),
        ("true", True),
        ("vamp", "vamp"),
        ('"x y"', "x y"),
    ],
)
def test_parse_value(text, value):
    assert cfg.parse_value(text) == value


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"trian.epochs": 3}, "unknown config section [trian] (did you mean 'train'?)"),
        ({"train.epoch": 3}, "unknown key 'epoch' in [train] (did you mean 'epochs'?)"),
        ({"train.epochs": "ten"}, "[train] epochs must be of type int"),
        ({"train.epochs": 2.5}, "[train] epochs must be of type int"),
        ({"train.validate": 1}, "[train] validate must be of type bool"),
        ({"train.epochs": 0}, "epochs must be >= 1, got 0"),
        ({"train.batch_size": -5}, "batch_size must be >= 1"),
        ({"train.lr": 0.0}, "lr must be a positive number"),
        ({"train.lr": float("nan")}, "lr must be a positive number"),
        ({"train.beta": -1.0}, "beta must be a finite number > 0"),
        ({"train.beta": 0}, "beta must be a finite number > 0"),
        ({"train.kl_warmup_epochs": -1}, "kl_warmup_epochs must be >= 0"),
        ({"model.latent_dim": 0}, "latent_dim must be >= 1"),
        ({"model.hidden": [200, 0]}, "hidden must be a list of positive layer widths"),
        (
            {"model.activation": "tahn"},
            "unknown activation 'tahn' (did you mean 'tanh'?)",
        ),
        ({"data.dataset": "mnsit"}, "unknown dataset 'mnsit' (did you mean 'mnist'?)"),
        ({"prior.name": "vampp"}, "unknown prior 'vampp' (did you mean 'vamp'?)"),
        ({"guide.name": "iaff"}, "unknown guide 'iaff' (did you mean 'iaf'?)"),
        (
            {"likelihood.name": "bernouli"},
            "unknown likelihood 'bernouli' (did you mean 'bernoulli'?)",
        ),
        ({"objective.name": "iwea"}, "unknown objective 'iwea'"),
        (
            {"guide.name": "iaf", "guide.num_flow": 2},
            "unknown option 'num_flow' for guide 'iaf' (did you mean 'num_flows'?)",
        ),
        (
            {"guide.num_flows": 2},
            "unknown option 'num_flows' for guide 'diagonal'; its options are: none",
        ),
        (
            {"prior.name": "vamp", "prior.num_pseudo": "many"},
            "prior 'vamp' option 'num_pseudo' must be of type int",
        ),
        ({"objective.num_particles": 0}, "num_particles must be >= 1"),
        ({"train.device": "tpu"}, "unknown device 'tpu'"),
        ({"epochs": 3}, "override 'epochs' must look like section.key"),
    ],
)
def test_invalid_configs_are_refused_with_a_specific_message(overrides, message):
    with pytest.raises(ConfigError) as err:
        cfg.load(None, overrides)
    assert message in str(err.value)


def test_malformed_toml_and_unknown_config_name(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 3\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        cfg.load(str(bad))
    with pytest.raises(
        ConfigError,
        match=r"neither a file nor a packaged config \(did you mean 'mnist_vamp'\?\)",
    ):
        cfg.load("mnist_vampp")
    not_table = tmp_path / "nt.toml"
    not_table.write_text("train = 3\n")
    with pytest.raises(ConfigError, match=r"\[train\] must be a table"):
        cfg.load(str(not_table))


# -- data.binarize = "auto", the 8-bit likelihood, --data-path (issue 24) -----------------


@pytest.mark.parametrize(
    "likelihood, binarize, resolved",
    [
        ("bernoulli", None, True),
        ("continuous_bernoulli", None, False),
        ("gaussian", None, False),
        ("discretized_logistic", None, False),
        ("bernoulli", "auto", True),
        ("gaussian", True, True),  # true and false still force it
        ("bernoulli", False, False),
    ],
)
def test_binarize_auto_follows_the_likelihood(likelihood, binarize, resolved):
    over = {"likelihood.name": likelihood}
    if binarize is not None:
        over["data.binarize"] = binarize
    config = cfg.load(None, over)
    assert config.data.binarize is resolved
    assert (
        cfg.load(None, config_overrides(config)) == config
    )  # the saved config rebuilds it


def config_overrides(config):
    return {
        f"{s}.{k}": v for s, vals in config.to_dict().items() for k, v in vals.items()
    }


def test_binarize_auto_reads_the_likelihoods_own_declaration():
    """A user's likelihood says what it needs the same way the library's do."""
    from pyro_vae.registry import LIKELIHOODS

    @LIKELIHOODS.register("my_binary_test_likelihood")
    def mine(arch):
        """Binary pixels, the test's own."""

    mine.needs = cfg.BINARY
    try:
        over = {"likelihood.name": "my_binary_test_likelihood"}
        assert cfg.load(None, over).data.binarize is True
    finally:
        del LIKELIHOODS._factories["my_binary_test_likelihood"]


def test_binarized_data_under_an_8bit_likelihood_is_refused_with_the_flag():
    with pytest.raises(ConfigError, match=r"set --set data.binarize=auto \(or false\)"):
        cfg.load(
            None, {"likelihood.name": "discretized_logistic", "data.binarize": True}
        )


@pytest.mark.parametrize("value", ["yes", 1, 0.5])
def test_binarize_takes_true_false_or_auto(value):
    with pytest.raises(ConfigError, match='binarize must be true, false or "auto"'):
        cfg.load(None, {"data.binarize": value})


def test_data_path_implies_the_array_data_set():
    assert cfg.load(None, {"data.data_path": "x.npz"}).data.dataset == "array"
    named = {"data.data_path": "x.npz", "data.dataset": "array"}
    assert cfg.load(None, named).data.dataset == "array"
    with pytest.raises(ConfigError, match="data set 'digits' is named"):
        cfg.load(None, {"data.data_path": "x.npz", "data.dataset": "digits"})


@pytest.mark.parametrize("key", ["patience", "eval_every", "eval_rows"])
def test_evaluation_and_stopping_settings_are_not_negative(key):
    with pytest.raises(ConfigError, match=f"train\\] {key} must be >= 0"):
        cfg.load(None, {f"train.{key}": -1})

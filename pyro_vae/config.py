"""Run configuration: frozen dataclasses, TOML files, CLI overrides and validation.

A config has six sections. ``[data]``, ``[model]`` and ``[train]`` hold fixed fields;
``[prior]``, ``[guide]``, ``[likelihood]``, ``[objective]`` and ``[network]`` hold a part's ``name``
plus that part's own options, which the part's registry checks (``[network] name = "mlp"``, the
default, is sized by ``[model] hidden`` and ``activation``; ``name = "conv"`` takes its own
options, see ``networks.py``). Precedence: defaults < TOML file <
command-line flags. ``to_dict``/``from_dict`` round-trip exactly, so a run's saved
``config.toml`` rebuilds the same run.
"""

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import tomli_w

from .errors import ConfigError
from .registry import (
    DATASETS,
    GUIDES,
    LIKELIHOODS,
    NETWORKS,
    OBJECTIVES,
    PRIORS,
    check_type,
    did_you_mean,
)

ACTIVATIONS = ("tanh", "relu", "softplus", "elu", "gelu")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
SEED_LIMIT = 2**32  # NumPy's seeds lie in [0, 2**32)
MAX_PARTICLES = 100_000  # more samples per data point than any bound needs
NO_INVERSE_GUIDES = ("planar",)  # flows whose density cannot be evaluated at any z
FROM_PYTHON = "python"  # data.dataset of a run fitted on arrays given from Python


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"  # a name in registry.DATASETS (see data.py)
    data_dir: Optional[str] = None  # folder of the file-based sets and of "images"
    data_path: Optional[str] = None  # the .npy/.npz file of "array"
    binarize: bool = True  # threshold grey images at 0.5 (ignored for binarized-mnist)
    image_size: Optional[Tuple[int, ...]] = None  # "images": resize to [H, W]
    test_fraction: float = 0.1  # "array"/"images" without given splits: seeded split
    valid_fraction: float = 0.0
    split_seed: int = 0


@dataclass(frozen=True)
class ModelConfig:
    latent_dim: int = 10
    hidden: Tuple[int, ...] = (200, 200)
    activation: str = "tanh"


@dataclass(frozen=True)
class PartConfig:
    name: str
    options: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    batch_size: int = 100
    lr: float = 1e-3
    lr_decay: float = 1.0  # the learning rate of epoch e is lr * lr_decay ** (e - 1)
    beta: float = 1.0
    kl_warmup_epochs: int = 0  # the linear schedule's warm-up (0: beta throughout)
    kl_schedule: str = "linear"  # or "cyclical" (Fu et al. 2019); see schedules.py
    kl_cycles: int = 4  # cyclical: number of cycles over the whole run
    kl_cycle_ratio: float = 0.5  # cyclical: share of each cycle spent rising to beta
    free_bits: float = 0.0  # nats per latent dimension that cost nothing (0: off)
    reconstruction_weight: float = 1.0  # lambda_rec, the scale of the "x" site
    device: str = "auto"
    seed: int = 0
    validate: bool = (
        False  # Pyro's distribution/trace validation; slower, for debugging
    )
    precision: str = "fp32"  # "bf16": bfloat16 autocast in the training step
    check_every: int = 1  # steps between host synchronisations (loss NaN checks)


PARTS = {
    "prior": PRIORS,
    "guide": GUIDES,
    "likelihood": LIKELIHOODS,
    "objective": OBJECTIVES,
    "network": NETWORKS,
}
DEFAULT_PARTS = {
    "prior": "standard_normal",
    "guide": "diagonal",
    "likelihood": "bernoulli",
    "objective": "trace",
    "network": "mlp",
}
FIXED = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


@dataclass(frozen=True)
class Config:
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    prior: PartConfig = PartConfig(DEFAULT_PARTS["prior"])
    guide: PartConfig = PartConfig(DEFAULT_PARTS["guide"])
    likelihood: PartConfig = PartConfig(DEFAULT_PARTS["likelihood"])
    objective: PartConfig = PartConfig(DEFAULT_PARTS["objective"])
    train: TrainConfig = TrainConfig()
    network: PartConfig = PartConfig(DEFAULT_PARTS["network"])

    def to_dict(self) -> Dict[str, Dict[str, Any]]:
        """Nested plain dict (TOML-ready: no ``None`` values, tuples as lists)."""
        out: Dict[str, Dict[str, Any]] = {}
        for section in FIXED:
            values = dataclasses.asdict(getattr(self, section))
            out[section] = {
                k: list(v) if isinstance(v, tuple) else v
                for k, v in values.items()
                if v is not None
            }
        for section in PARTS:
            part = getattr(self, section)
            out[section] = {"name": part.name, **part.options}
        return out

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


def register_parts() -> None:
    """Import the modules whose registered functions a config names (priors, guides,
    likelihoods, objectives, networks, data sets). ``import pyro_vae`` stays light: they load here,
    the first time a config is built."""
    from . import data, guides, likelihoods, networks, objectives, priors  # noqa: F401


def from_dict(raw: Mapping[str, Any]) -> Config:
    """Build and validate a :class:`Config` from nested dicts (missing keys take defaults)."""
    register_parts()
    _check_tables(raw)
    sections = list(FIXED) + list(PARTS)
    for section in raw:
        if section not in sections:
            raise ConfigError(
                f"unknown config section [{section}]{did_you_mean(section, sections)}; "
                f"valid sections: {', '.join(sections)}"
            )
    built: Dict[str, Any] = {}
    for section, cls in FIXED.items():
        built[section] = _fixed_section(section, cls, dict(raw.get(section, {})))
    for section, registry in PARTS.items():
        options = dict(raw.get(section, {}))
        name = options.pop("name", DEFAULT_PARTS[section])
        check_type(f"[{section}] name", name, "")
        registry.check_options(name, options)
        built[section] = PartConfig(name, options)
    config = Config(**built)
    validate(config)
    return config


def _check_tables(raw: Mapping[str, Any]) -> None:
    for section, values in raw.items():
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"config section [{section}] must be a table of key = value pairs"
            )


def _fixed_section(section: str, cls: type, values: Dict[str, Any]) -> Any:
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in defaults:
            raise ConfigError(
                f"unknown key '{key}' in [{section}]{did_you_mean(key, list(defaults))}; "
                f"valid keys: {', '.join(defaults)}"
            )
        check_type(f"[{section}] {key}", value, defaults[key])
        if isinstance(defaults[key], tuple) or (
            key == "image_size" and isinstance(value, list)
        ):
            values[key] = tuple(value)
    return cls(**values)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(config: Config) -> None:
    """Range checks that the type checks cannot express."""
    d, m, t = config.data, config.model, config.train
    _validate_data(d)
    _require(m.latent_dim >= 1, f"[model] latent_dim must be >= 1, got {m.latent_dim}")
    _require(
        all(
            isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in m.hidden
        ),
        f"[model] hidden must be a list of positive layer widths like [200, 200], got {list(m.hidden)}",
    )
    _require(
        m.activation in ACTIVATIONS,
        f"unknown activation '{m.activation}'{did_you_mean(m.activation, list(ACTIVATIONS))}; "
        f"valid activations: {', '.join(ACTIVATIONS)}",
    )
    _require(t.epochs >= 1, f"[train] epochs must be >= 1, got {t.epochs}")
    _require(t.batch_size >= 1, f"[train] batch_size must be >= 1, got {t.batch_size}")
    _require(
        math.isfinite(t.lr) and t.lr > 0,
        f"[train] lr must be a positive number, got {t.lr}",
    )
    _require(
        math.isfinite(t.lr_decay) and 0 < t.lr_decay <= 1,
        f"[train] lr_decay must be in (0, 1] (the per-epoch factor; 1 keeps lr constant), "
        f"got {t.lr_decay}",
    )
    _require(
        math.isfinite(t.beta) and t.beta > 0,
        f"[train] beta must be a finite number > 0 (1 is the plain ELBO; Pyro's poutine.scale "
        f"refuses 0), got {t.beta}",
    )
    _require(
        t.kl_warmup_epochs >= 0,
        f"[train] kl_warmup_epochs must be >= 0 (0 turns warm-up off), got {t.kl_warmup_epochs}",
    )
    _validate_weights(config)
    check_seed("[train] seed", t.seed)
    check_device(t.device)
    _require(
        d.data_dir is None or isinstance(d.data_dir, str),
        f"[data] data_dir must be a directory path (a string), got {d.data_dir!r}",
    )
    _require(
        t.precision in PRECISIONS,
        f"[train] precision must be one of {', '.join(PRECISIONS)}, got '{t.precision}'",
    )
    _require(
        t.check_every >= 1,
        f"[train] check_every must be >= 1 (steps between loss checks), got {t.check_every}",
    )
    particles = config.objective.options.get("num_particles", 1)
    _require(particles >= 1, f"[objective] num_particles must be >= 1, got {particles}")
    _require(
        particles <= MAX_PARTICLES,
        f"[objective] num_particles must be <= {MAX_PARTICLES} (the cost grows with it), "
        f"got {particles}",
    )
    o = config.objective
    _require(
        not (
            o.name == "iwae"
            and o.options.get("dreg")
            and config.guide.name in NO_INVERSE_GUIDES
        ),
        f"objective iwae with dreg = true needs a guide whose density can be evaluated at "
        f"any z; guide '{config.guide.name}' has no inverse: set objective.dreg=false or "
        f"use guide iaf",
    )


def check_seed(where: str, seed: int) -> None:
    """Seeds lie in [0, 2**32) (NumPy's range)."""
    _require(
        0 <= seed < SEED_LIMIT,
        f"{where} must be in [0, 2**32) = [0, {SEED_LIMIT - 1}], got {seed}",
    )


def check_device(name: str, where: str = "device") -> None:
    _require(
        name in DEVICES
        or (name.startswith("cuda:") and name[len("cuda:") :].isdigit()),
        f"unknown {where} '{name}'; use auto (CUDA when available), cpu, cuda or cuda:N",
    )


def check_size(config: Config, data_dim: int) -> None:
    """Refuse a model too large for this machine's memory before allocating it.

    The MLP encoder (D -> hidden -> 2L) and decoder (L -> reversed hidden -> D) hold
    sum (n_in + 1) n_out parameters; training keeps four float32 copies (weights,
    gradients, Adam's two moments)."""
    m = config.model
    enc = [data_dim, *m.hidden, 2 * m.latent_dim]
    dec = [m.latent_dim, *reversed(m.hidden), data_dim]
    params = sum(
        (a + 1) * b for widths in (enc, dec) for a, b in zip(widths, widths[1:])
    )
    need = 4 * 4 * params
    have = _memory_bytes()
    _require(
        need <= have // 2,
        f"model.hidden={list(m.hidden)} with model.latent_dim={m.latent_dim} on "
        f"{data_dim}-value data means {params:.3g} parameters, about {need / 2**30:.3g} GiB "
        f"for training, more than half of this machine's {have / 2**30:.3g} GiB; use "
        f"smaller sizes",
    )


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**40


def flow_widths(
    where: str, hidden: Any, latent_dim: int, autoregressive: bool
) -> List[int]:
    """A flow's hidden widths. Unset (``None``) follows the latent size:
    ``max(128, 2 * latent_dim)``. An autoregressive (MADE, Germain et al. 2015) network needs
    every hidden width >= its input size, the latent size."""
    if hidden is None:
        return [max(128, 2 * latent_dim)]
    _require(
        isinstance(hidden, (list, tuple))
        and len(hidden) > 0
        and all(isinstance(h, int) and not isinstance(h, bool) for h in hidden),
        f"{where} option flow_hidden must be a list of widths like [128], got {hidden!r}",
    )
    _require(
        all(h >= 1 for h in hidden),
        f"{where} option flow_hidden must hold positive widths, got {list(hidden)}",
    )
    _require(
        not autoregressive or min(hidden) >= latent_dim,
        f"{where} option flow_hidden={list(hidden)} is narrower than "
        f"model.latent_dim={latent_dim} (an autoregressive flow needs every width >= the "
        f"latent size); use flow_hidden=[{max(128, 2 * latent_dim)}] or leave it unset",
    )
    return list(hidden)


def _validate_weights(config: Config) -> None:
    """The KL schedule, free bits and the reconstruction weight (see schedules.py)."""
    from .schedules import (  # here, not at the top: schedules imports torch
        FREE_BITS_GUIDES,
        FREE_BITS_OBJECTIVES,
        FREE_BITS_PRIORS,
        KL_SCHEDULES,
    )

    t = config.train
    _require(
        t.kl_schedule in KL_SCHEDULES,
        f"unknown [train] kl_schedule '{t.kl_schedule}'"
        f"{did_you_mean(t.kl_schedule, list(KL_SCHEDULES))}; valid: {', '.join(KL_SCHEDULES)}",
    )
    _require(
        t.kl_schedule == "linear" or t.kl_warmup_epochs == 0,
        f"[train] kl_warmup_epochs belongs to the linear schedule; with kl_schedule = "
        f"'{t.kl_schedule}' set kl_cycles and kl_cycle_ratio instead (kl_warmup_epochs = 0)",
    )
    _require(t.kl_cycles >= 1, f"[train] kl_cycles must be >= 1, got {t.kl_cycles}")
    _require(
        math.isfinite(t.kl_cycle_ratio) and 0 < t.kl_cycle_ratio <= 1,
        f"[train] kl_cycle_ratio must be in (0, 1] (the share of each cycle spent rising to "
        f"beta), got {t.kl_cycle_ratio}",
    )
    _require(
        math.isfinite(t.reconstruction_weight) and t.reconstruction_weight > 0,
        f"[train] reconstruction_weight must be a finite number > 0 (1 is the plain ELBO), "
        f"got {t.reconstruction_weight}",
    )
    objective = config.objective.name
    _require(
        t.reconstruction_weight == 1 or objective != "iwae",
        "[train] reconstruction_weight scales the ELBO's reconstruction term, which the 'iwae' "
        "bound does not have (it would temper p(x|z) inside the log-mean-exp); use 1 with iwae",
    )
    _require(
        math.isfinite(t.free_bits) and t.free_bits >= 0,
        f"[train] free_bits must be a number of nats >= 0 (0 turns it off), got {t.free_bits}",
    )
    if t.free_bits == 0:
        return
    _require(
        objective in FREE_BITS_OBJECTIVES,
        f"[train] free_bits needs an objective with a separate KL term "
        f"({', '.join(FREE_BITS_OBJECTIVES)}), not '{objective}'; set free_bits = 0",
    )
    guide, prior = config.guide.name, config.prior.name
    _require(
        guide in FREE_BITS_GUIDES and prior in FREE_BITS_PRIORS,
        f"[train] free_bits needs a KL that splits over latent dimensions: guide "
        f"{' or '.join(FREE_BITS_GUIDES)} with prior {' or '.join(FREE_BITS_PRIORS)}, not "
        f"guide '{guide}' with prior '{prior}'; set free_bits = 0 or change the pair",
    )


def _validate_data(d: DataConfig) -> None:
    if d.dataset != FROM_PYTHON:
        DATASETS.get(d.dataset)  # an unknown name lists the valid ones
    size = d.image_size
    _require(
        size is None
        or (
            isinstance(size, tuple)
            and len(size) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) for s in size)
            and min(size) >= 1
        ),
        f"[data] image_size must be [height, width] in pixels, like [28, 28], got {size}",
    )
    for key in ("test_fraction", "valid_fraction"):
        value = getattr(d, key)
        _require(0 <= value < 1, f"[data] {key} must be in [0, 1), got {value}")
    _require(
        d.test_fraction + d.valid_fraction < 1,
        f"[data] test_fraction + valid_fraction must be < 1 (the rest trains), got "
        f"{d.test_fraction} + {d.valid_fraction}",
    )
    _require(d.split_seed >= 0, f"[data] split_seed must be >= 0, got {d.split_seed}")


def packaged_configs() -> List[str]:
    """Names of the example configs shipped in ``pyro_vae/configs``."""
    root = resources.files("pyro_vae") / "configs"
    return sorted(
        p.name[: -len(".toml")] for p in root.iterdir() if p.name.endswith(".toml")
    )


def read_toml(path_or_name: str) -> Dict[str, Any]:
    """Parse a config file, or a packaged config given by name (``mnist_vamp``)."""
    path = Path(path_or_name)
    if path.is_file():
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(
                f"config '{path_or_name}' is not UTF-8 text (byte {err.object[err.start]:#x} "
                f"at offset {err.start}); save it as UTF-8, as TOML requires"
            ) from None
        except OSError as err:
            raise ConfigError(
                f"config '{path_or_name}' cannot be read: {err.strerror}"
            ) from None
    elif path_or_name in packaged_configs():
        text = (
            resources.files("pyro_vae") / "configs" / f"{path_or_name}.toml"
        ).read_text()
    else:
        names = packaged_configs()
        raise ConfigError(
            f"config '{path_or_name}' is neither a file nor a packaged config"
            f"{did_you_mean(path_or_name, names)}; packaged configs: {', '.join(names)}"
        )
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config '{path_or_name}' is not valid TOML: {err}") from None


def parse_value(text: str) -> Any:
    """A ``--set`` value: TOML syntax when it parses (``4``, ``1e-3``, ``[200, 200]``,
    ``true``), else the plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def merge(raw: Dict[str, Any], overrides: Mapping[str, Any]) -> Dict[str, Any]:
    """Apply ``{"section.key": value}`` overrides to nested dicts. Naming a different part
    (``prior.name``) drops the old part's options, which belong to that part alone."""
    _check_tables(raw)
    merged = {section: dict(values) for section, values in raw.items()}
    for dotted, value in overrides.items():
        section, sep, key = dotted.partition(".")
        if not sep or not key:
            raise ConfigError(
                f"override '{dotted}' must look like section.key (for example train.epochs)"
            )
        values = merged.setdefault(section, {})
        if section in PARTS and key == "name" and values.get("name", value) != value:
            values.clear()
        values[key] = value
    # part options given on the command line survive a part-name change
    for dotted, value in overrides.items():
        section, _, key = dotted.partition(".")
        merged[section][key] = value
    return merged


def load(
    path_or_name: Optional[str] = None, overrides: Optional[Mapping[str, Any]] = None
) -> Config:
    """Defaults, then the TOML file (or packaged config), then ``overrides``."""
    raw = read_toml(path_or_name) if path_or_name else {}
    return from_dict(merge(raw, overrides or {}))

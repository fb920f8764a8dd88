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
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import tomli_w

from .errors import ConfigError
from .registry import (
    GUIDES,
    LIKELIHOODS,
    NETWORKS,
    OBJECTIVES,
    PRIORS,
    check_type,
    did_you_mean,
)

DATASETS = ("digits", "binarized-mnist", "mnist")
ACTIVATIONS = ("tanh", "relu", "softplus", "elu", "gelu")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"
    data_dir: Optional[str] = None
    binarize: bool = True  # threshold grey images at 0.5 (ignored for binarized-mnist)


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
    kl_warmup_epochs: int = 0
    device: str = "auto"
    seed: int = 0
    validate: bool = (
        False  # Pyro's distribution/trace validation; slower, for debugging
    )


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


def from_dict(raw: Mapping[str, Any]) -> Config:
    """Build and validate a :class:`Config` from nested dicts (missing keys take defaults)."""
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
        if isinstance(defaults[key], tuple):
            values[key] = tuple(value)
    return cls(**values)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(config: Config) -> None:
    """Range checks that the type checks cannot express."""
    d, m, t = config.data, config.model, config.train
    _require(
        d.dataset in DATASETS,
        f"unknown dataset '{d.dataset}'{did_you_mean(d.dataset, list(DATASETS))}; "
        f"valid datasets: {', '.join(DATASETS)}",
    )
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
    _require(t.seed >= 0, f"[train] seed must be >= 0, got {t.seed}")
    _require(
        t.device in DEVICES or t.device.startswith("cuda:"),
        f"unknown device '{t.device}'; use auto (CUDA when available), cpu, cuda or cuda:N",
    )
    particles = config.objective.options.get("num_particles", 1)
    _require(particles >= 1, f"[objective] num_particles must be >= 1, got {particles}")


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
        text = path.read_text()
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

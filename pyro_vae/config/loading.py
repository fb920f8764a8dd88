"""Building a config: from nested dicts (with every check), TOML files, packaged configs and
``--set`` overrides. Precedence: defaults < TOML file < command-line flags.
"""

import dataclasses
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from pyro_vae.config.binarize import check_binarize, resolve_binarize
from pyro_vae.config.checks import validate
from pyro_vae.config.sections import DEFAULT_PARTS, FIXED, PARTS, Config, PartConfig
from pyro_vae.errors import ConfigError
from pyro_vae.registry import check_type, did_you_mean


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
    built["data"] = _resolved_data(built["data"], raw, built["likelihood"].name)
    config = Config(**built)
    validate(config)
    return config


def _resolved_data(data: Any, raw: Mapping[str, Any], likelihood: str) -> Any:
    """``data_path`` without a named data set means data set ``array``; ``binarize = "auto"``
    becomes true or false for ``likelihood`` (the saved config records which)."""
    if data.data_path is not None and "dataset" not in raw.get("data", {}):
        data = dataclasses.replace(data, dataset="array")
    return dataclasses.replace(
        data, binarize=resolve_binarize(data.binarize, likelihood)
    )


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
        if (section, key) == ("data", "binarize"):
            check_binarize(value)
        else:
            check_type(f"[{section}] {key}", value, defaults[key])
        if isinstance(defaults[key], tuple) or (
            key == "image_size" and isinstance(value, list)
        ):
            values[key] = tuple(value)
    return cls(**values)


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


def differences(
    saved: Mapping[str, Any], now: Mapping[str, Any], ignore: Sequence[str] = ()
) -> List[str]:
    """``section.key (old -> new)`` for every key whose value differs between two config
    dicts (``Config.to_dict()`` form), except the ``section.key`` names in ``ignore``.
    """
    keys = {
        f"{s}.{k}" for side in (saved, now) for s, vals in side.items() for k in vals
    }
    out = []
    for key in sorted(keys):
        if key in ignore:
            continue
        section, name = key.split(".", 1)
        old, new = saved.get(section, {}).get(name), now.get(section, {}).get(name)
        if old != new:
            out.append(f"{key} ({old!r} -> {new!r})")
    return out

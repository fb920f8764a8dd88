"""Named parts: a config names a prior, guide, likelihood, objective, network, data set or
model family; a registry builds it.

A part is a factory function ``factory(context, **options)``. Its keyword options, with their
defaults, are the options a config may set; anything else is refused with the list of valid ones.

Each registry knows the wing that fills it (``home``, a module name) and imports it the first
time it is asked what it holds, so the configuration names parts without importing them, and
``import pyro_vae`` stays light. A user registers a part of their own with the same decorator.
"""

import difflib
import importlib
import inspect
from typing import Any, Callable, Dict, List

from pyro_vae.errors import ConfigError


def did_you_mean(name: str, valid: List[str]) -> str:
    """A ``" (did you mean 'x'?)"`` suffix when ``name`` is close to one of ``valid``."""
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Registry:
    """A mapping from names to factories of one kind of part (``kind`` names it in errors).
    Asking it for names or a factory first imports ``home``, the wing whose modules register
    the library's parts of this kind."""

    def __init__(self, kind: str, home: str):
        self.kind = kind
        self.home = home
        self._factories: Dict[str, Callable] = {}
        self._loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            importlib.import_module(self.home)

    def register(self, name: str) -> Callable[[Callable], Callable]:
        def decorator(factory: Callable) -> Callable:
            if name in self._factories:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._factories[name] = factory
            return factory

        return decorator

    def names(self) -> List[str]:
        self._load()
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._factories

    def get(self, name: str) -> Callable:
        self._load()
        if name not in self._factories:
            raise ConfigError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self.names())}; "
                f"valid {self.kind}s: {', '.join(self.names())}"
            )
        return self._factories[name]

    def defaults(self, name: str) -> Dict[str, Any]:
        """The options of part ``name`` with their default values (the factory's parameters
        that have one)."""
        params = list(inspect.signature(self.get(name)).parameters.values())[1:]
        return {p.name: p.default for p in params if p.default is not p.empty}

    def check_options(self, name: str, options: Dict[str, Any]) -> None:
        """Refuse unknown option names and values of the wrong type for part ``name``."""
        defaults = self.defaults(name)
        where = f"{self.kind} '{name}'"
        for key, value in options.items():
            if key not in defaults:
                valid = ", ".join(defaults) or "none"
                raise ConfigError(
                    f"unknown option '{key}' for {where}{did_you_mean(key, list(defaults))}; "
                    f"its options are: {valid}"
                )
            check_type(f"{where} option '{key}'", value, defaults[key])

    def build(self, name: str, context: Any, options: Dict[str, Any]) -> Any:
        self.check_options(name, options)
        return self.get(name)(context, **options)


def check_type(where: str, value: Any, default: Any) -> None:
    """Refuse ``value`` when its type does not match the type of ``default``."""
    if default is None:
        return
    numeric = (int, float)
    if isinstance(value, bool) == isinstance(default, bool):
        if isinstance(value, type(default)):
            return
        if isinstance(default, float) and isinstance(value, numeric):
            return
        if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
            return
    raise ConfigError(
        f"{where} must be of type {type(default).__name__} (like {default!r}), "
        f"got {value!r} of type {type(value).__name__}"
    )


PRIORS = Registry("prior", "pyro_vae.parts")
GUIDES = Registry("guide", "pyro_vae.parts")
LIKELIHOODS = Registry("likelihood", "pyro_vae.parts")
NETWORKS = Registry("network", "pyro_vae.parts")
OBJECTIVES = Registry("objective", "pyro_vae.infer")
DATASETS = Registry("dataset", "pyro_vae.data")
# a model family's factory is factory(config, data_shape) (see pyro_vae/models/family.py)
FAMILIES = Registry("model family", "pyro_vae.models")
REGISTRIES = (PRIORS, GUIDES, LIKELIHOODS, NETWORKS, OBJECTIVES, DATASETS, FAMILIES)


def load_library_parts() -> None:
    """Import every wing that registers parts (what a registry does on first use)."""
    for registry in REGISTRIES:
        registry._load()

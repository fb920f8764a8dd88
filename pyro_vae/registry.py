"""Named parts: a config names a prior, guide, likelihood or objective; a registry builds it.

A part is a factory function ``factory(context, **options)``. Its keyword options, with their
defaults, are the options a config may set; anything else is refused with the list of valid ones.
"""

import difflib
import inspect
from typing import Any, Callable, Dict, List

from .errors import ConfigError


def did_you_mean(name: str, valid: List[str]) -> str:
    """A ``" (did you mean 'x'?)"`` suffix when ``name`` is close to one of ``valid``."""
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _register_library_parts() -> None:
    """Import the library's part modules, which register their parts (``import pyro_vae`` is
    lazy, so a registry loads them the first time it is asked what it holds)."""
    from .config import register_parts

    register_parts()


class Registry:
    """A mapping from names to factories of one kind of part (``kind`` names it in errors).
    Asking it for names or a factory first imports the library's parts."""

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: Dict[str, Callable] = {}
        self._loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            _register_library_parts()

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
        """The options of part ``name`` with their default values."""
        params = list(inspect.signature(self.get(name)).parameters.values())[1:]
        return {p.name: p.default for p in params}

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


PRIORS = Registry("prior")
GUIDES = Registry("guide")
LIKELIHOODS = Registry("likelihood")
OBJECTIVES = Registry("objective")
DATASETS = Registry("dataset")
NETWORKS = Registry("network")

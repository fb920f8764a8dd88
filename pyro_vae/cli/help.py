"""``pyro-vae train --help``: every registered choice and every default, read when the help is
printed from the registries and the config's dataclasses (never a list kept by hand).

A flag that sets a config key (``cli.train.FLAGS``) gets ``(default: V)`` with the value a run
takes when neither the flag nor a config file sets it; a flag that names a part gets the
registry's names. The registries import the library's parts (and so torch) only when the
help is formatted, so parsing a command line, and ``pyro-vae --help``, stay fast.
"""

import argparse
import dataclasses
from typing import Any, List, Optional, Tuple

from pyro_vae.config import DEFAULT_PARTS, FIXED, PARTS
from pyro_vae.registry import DATASETS, FAMILIES, Registry

NAMED = {"data.dataset": DATASETS, "model.family": FAMILIES}  # fixed keys naming parts


def choices_and_default(key: str) -> Tuple[Optional[List[str]], Any]:
    """The registered names a config ``key`` (``section.name``) may take (None when it is
    not a name) and its default value."""
    section, name = key.split(".", 1)
    if section in PARTS:
        if name == "name":
            return PARTS[section].names(), DEFAULT_PARTS[section]
        return None, PARTS[section].defaults(DEFAULT_PARTS[section]).get(name)
    default = {f.name: f.default for f in dataclasses.fields(FIXED[section])}[name]
    registry: Optional[Registry] = NAMED.get(key)
    return (None if registry is None else registry.names()), default


def describe(key: str, text: Optional[str]) -> str:
    """``text`` followed by the choices and the default of config ``key``."""
    choices, default = choices_and_default(key)
    if isinstance(default, tuple):
        default = list(default)
    facts = [] if choices is None else [f"one of: {', '.join(choices)}"]
    facts.append(f"default: {'none' if default is None else default}")
    facts.append(f"config key {key}")
    facts_text = "; ".join(facts).replace("%", "%%")  # argparse formats help with %
    return f"{text or ''} ({facts_text})".strip()


class RegistryHelp(argparse.HelpFormatter):
    """Help text of the train command: a flag in ``flags`` (dest -> config key) shows its
    registered choices and its default."""

    flags: dict = {}

    def _get_help_string(self, action: argparse.Action) -> Optional[str]:
        key = self.flags.get(action.dest)
        if key is None:
            return action.help
        return describe(key, action.help)


def formatter(flags: dict) -> type:
    """A :class:`RegistryHelp` for the flag -> config key map ``flags``."""
    return type("TrainHelp", (RegistryHelp,), {"flags": dict(flags)})

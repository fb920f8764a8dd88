"""Ctrl-C while the package imports (torch and Pyro take seconds to load) ends the process
with one line instead of a KeyboardInterrupt traceback; the hook is removed once the imports
are done, so it never changes how a program that imported the package reports errors."""

import sys

_PREVIOUS = sys.excepthook


def _hook(kind, value, traceback) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.stderr.write("interrupted while starting; nothing was written\n")
        return
    _PREVIOUS(kind, value, traceback)


sys.excepthook = _hook  # importing this module installs the hook


def restore() -> None:
    if sys.excepthook is _hook:
        sys.excepthook = _PREVIOUS

"""Ctrl-C while the ``pyro-vae`` command starts (before its own handler runs, and while a
command imports torch and Pyro) ends the process with one line instead of a KeyboardInterrupt
traceback. ``cli`` imports this module first, which installs the hook; it changes only how an
*uncaught* KeyboardInterrupt is reported, and only in a process that imported the CLI.
"""

import sys

_PREVIOUS = sys.excepthook


def _hook(kind, value, traceback) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.stderr.write("interrupted while starting; nothing was written\n")
        return
    _PREVIOUS(kind, value, traceback)


sys.excepthook = _hook  # importing this module installs the hook

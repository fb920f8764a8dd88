"""``pyro-vae``: one module per command (``train``, ``evaluate`` and ``sample``, ``check``,
``list``), and ``main``, the parser and the error handling around them. The commands import
torch and Pyro inside their functions, so ``pyro-vae --help`` answers at once.

May import: every wing.
"""

import os
from typing import List, Optional

from pyro_vae.cli import app


def main(argv: Optional[List[str]] = None) -> int:
    """The console script's entry point: ``app.main``; a torchrun worker then ends at once
    (``process.end_now``: gloo's threads outlive the process group, and the interpreter's
    teardown could abort on them)."""
    status = app.main(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from pyro_vae.process import end_now

        end_now(status)
    return status

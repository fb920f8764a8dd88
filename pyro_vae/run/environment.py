"""What made a run: the versions of Python, torch, Pyro and pyro_vae, and the device.

``fit`` appends one record to the run directory's ``environment.json`` each time it starts
(a new run, and every ``--resume``), with the epoch it started from, so a run continued on
another machine or after an upgrade says so.
"""

import json
import platform
import sys
from pathlib import Path
from typing import Dict, List

import pyro
import torch

import pyro_vae
from pyro_vae.run import checkpoint
from pyro_vae.run.layout import ENVIRONMENT_FILE


def describe(device: torch.device) -> Dict[str, str]:
    """Versions and device of this process (the GPU's name on CUDA)."""
    name = platform.processor() or platform.machine()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "pyro_vae": pyro_vae.__version__,
        "device": str(device),
        "device_name": name,
        "platform": platform.platform(),
        "executable": sys.executable,
    }


def record(run_dir: Path, device: torch.device, start_epoch: int) -> List[Dict]:
    """Append this process's :func:`describe` (and ``start_epoch``) to ``environment.json``
    (a list, one entry per start; a new run starts it afresh) and return the list."""
    path = Path(run_dir) / ENVIRONMENT_FILE
    entries: List[Dict] = []
    if start_epoch > 1 and path.is_file():
        try:
            entries = list(json.loads(path.read_text()))
        except (ValueError, TypeError):
            entries = []  # unreadable: begin a fresh record
    entries.append({"start_epoch": start_epoch, **describe(device)})
    checkpoint.atomic_write_text(path, json.dumps(entries, indent=2) + "\n")
    return entries

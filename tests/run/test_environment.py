"""environment.json: what made a run, one record per start (run/environment.py)."""

import json
import platform

import pyro
import torch

import pyro_vae
from pyro_vae.run import environment
from pyro_vae.run.layout import ENVIRONMENT_FILE, RUN_FILES


def test_each_start_appends_versions_and_device(tmp_path):
    cpu = torch.device("cpu")
    environment.record(tmp_path, cpu, 1)
    environment.record(tmp_path, cpu, 5)  # a resume appends
    entries = json.loads((tmp_path / ENVIRONMENT_FILE).read_text())
    assert [e["start_epoch"] for e in entries] == [1, 5]
    assert entries[0]["python"] == platform.python_version()
    assert entries[0]["torch"] == torch.__version__
    assert entries[0]["pyro"] == pyro.__version__
    assert entries[0]["pyro_vae"] == pyro_vae.__version__
    assert entries[0]["device"] == "cpu"
    environment.record(tmp_path, cpu, 1)  # a new run starts the record afresh
    assert len(json.loads((tmp_path / ENVIRONMENT_FILE).read_text())) == 1
    assert ENVIRONMENT_FILE in RUN_FILES  # --overwrite moves it aside with the run


def test_an_unreadable_record_is_started_again(tmp_path):
    (tmp_path / ENVIRONMENT_FILE).write_text("not json")
    entries = environment.record(tmp_path, torch.device("cpu"), 3)
    assert [e["start_epoch"] for e in entries] == [3]

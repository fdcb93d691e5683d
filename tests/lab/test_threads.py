"""The Lab sets torch's intra-op threads once, from the server configuration."""

import torch

from neurotrace.lab.lab import Lab, LabSettings, available_cores


def test_lab_uses_the_configured_thread_count_and_defaults_to_every_available_core(tmp_path, monkeypatch):
    before = torch.get_num_threads()
    try:
        assert Lab(LabSettings(runs_dir=tmp_path, threads=1)).threads == 1 and torch.get_num_threads() == 1
        assert Lab(LabSettings(runs_dir=tmp_path)).threads == available_cores() == torch.get_num_threads()
        monkeypatch.setenv("NEUROTRACE_THREADS", "1")
        assert LabSettings.from_env(runs_dir=tmp_path).threads == 1
    finally:
        torch.set_num_threads(before)

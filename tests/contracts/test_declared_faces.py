"""Every face names exactly the declared experiments (``neurotrace.EXPERIMENTS``), read from the list.

The tool list, the CLI and ``neurotrace.__all__`` are checked in ``test_faces.py``; here the documents an
agent or a person reads: README's tool table, SKILL.md's question-to-tool table, the server's
instructions and the prompts' protocols, plus every figure-writing family's redraw and the catalog models.
Nothing below lists tool names by hand: a new family makes these tests ask for its rows.
"""

import re
from pathlib import Path

import pytest
from mcp import Client

from neurotrace import EXPERIMENTS
from neurotrace.lab.lab import LabSettings
from neurotrace.lab.model.weights import catalog
from neurotrace.prompts import MODULES as PROMPTS
from neurotrace.server import build_server
from neurotrace.tools import face

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "neurotrace"
DECLARED = {e.name for e in EXPERIMENTS}
UTILITY = {"list_models", "release_model", "run_status"}   # served tools that are not experiments
NAME = re.compile(r"`(\w+)`")


def table_tools(path: Path, heading: str) -> set[str]:
    """The backticked names in the ``tool`` column of the table under ``heading``."""
    text = path.read_text(encoding="utf-8")
    section = text.split(heading, 1)[1].split("\n#", 1)[0]
    rows = [line.split("|")[1:-1] for line in section.splitlines()
            if line.startswith("|") and not line.startswith("| ---")]
    column = [cell.strip() for cell in rows[0]].index("tool")
    return {n for row in rows[1:] for n in NAME.findall(row[column])}


def test_readme_tool_table_names_every_tool_and_nothing_else():
    named = table_tools(ROOT / "README.md", "## Tools")
    assert named == DECLARED | UTILITY, f"README tool table: missing {(DECLARED | UTILITY) - named}, " \
                                        f"unknown {named - DECLARED - UTILITY}"


def test_skill_question_table_names_every_tool_and_nothing_else():
    named = table_tools(ROOT / "SKILL.md", "## Which tool answers which question")
    assert named == DECLARED | UTILITY, f"SKILL.md question table: missing {(DECLARED | UTILITY) - named}, " \
                                        f"unknown {named - DECLARED - UTILITY}"


@pytest.mark.anyio
async def test_the_servers_instructions_name_every_tool_and_every_catalog_model(tmp_path):
    async with Client(build_server(LabSettings(runs_dir=tmp_path / "runs"))) as client:
        instructions = client.instructions
        served = {t.name for t in (await client.list_tools()).tools}
    assert served == DECLARED | UTILITY
    words = set(re.findall(r"[\w.-]+", instructions))
    assert DECLARED | UTILITY <= words, f"instructions miss {(DECLARED | UTILITY) - words}"
    assert set(catalog.CATALOG) <= words, f"instructions miss catalog models {set(catalog.CATALOG) - words}"
    assert instructions.index("gemma-3-270m") < instructions.index("fact-gpt2"), "lead with the real models"


def test_skill_md_leads_with_every_catalog_model_and_says_how_to_name_other_models():
    text = (ROOT / "SKILL.md").read_text(encoding="utf-8")
    head = text.split("## Which tool answers which question", 1)[0]
    for name in catalog.CATALOG:
        assert f"`{name}`" in head, f"SKILL.md's opening does not name the catalog model {name}"
    assert ".gguf" in head and "hub id" in head and "folder" in head


def test_the_prompts_protocols_cover_exactly_the_declared_tools():
    per_prompt = {m.__name__.rsplit(".", 1)[1]: set(m.TOOLS) for m in PROMPTS}
    for name, tools in per_prompt.items():
        assert tools <= DECLARED, f"prompt {name} names undeclared tools {tools - DECLARED}"
    covered = set().union(*per_prompt.values())
    assert covered == DECLARED, f"no protocol walks through {DECLARED - covered}"


def test_every_declared_experiment_has_its_face_and_its_module():
    for e in EXPERIMENTS:
        assert face(e.name).__name__ == e.name and (PACKAGE / "tools" / f"{e.name}.py").is_file()
    modules = {p.stem for p in (PACKAGE / "tools").glob("*.py") if not p.stem.startswith("_")}
    assert modules - DECLARED == {"models", "run_status"}, "a tools/ module that is neither a face nor a cache tool"


def _writes_figures(e) -> bool:
    """Whether the family's own code writes a figure into its runs (its package, or its module)."""
    module = e.run.__module__.split(".")
    root = PACKAGE.joinpath(*module[1:3])
    files = root.rglob("*.py") if root.is_dir() else [root.with_suffix(".py")]
    return any("write_figure(" in f.read_text(encoding="utf-8") for f in files)


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda e: e.name)
def test_every_figure_writing_family_can_be_redrawn_by_plot_or_says_why_not(experiment):
    if experiment.figures is None:
        assert experiment.no_figures and len(experiment.no_figures) > 20, "say why plot cannot redraw it"
        assert experiment.name == "plot" or not _writes_figures(experiment), \
            f"{experiment.name} writes figures that plot cannot redraw: declare them (Figures)"
        return
    figures = experiment.figures
    assert figures.kinds and figures.results_file.endswith(".json")
    assert set(figures.applies) <= set(figures.kinds)

"""Installs: the built wheel carries the package data, and a clean venv with only the wheel installed serves
tools over stdio when started the way the README's client snippets say.

No network: the wheel is built without build isolation, installed with ``--no-deps --no-index``, and the
clean venv reaches torch & co. through a ``.pth`` file naming this environment's site-packages (a ``.pth``
inside a ``.pth``-added folder is not executed, so this checkout's editable install stays out of it).
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
OFFLINE = {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "HF_HUB_OFFLINE": "1"}


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, **OFFLINE}, **kwargs)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(ROOT / "neurotrace", src / "neurotrace", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src), "-w", str(dist)])
    return next(dist.glob("neurotrace-*.whl"))


@pytest.fixture(scope="module")
def clean_venv(wheel, tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "clean"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)])
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    here = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "zz_neurotrace_test_deps.pth").write_text("".join(f"{p}\n" for p in here), encoding="utf-8")
    return venv


def _clean_env(venv: Path, runs: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, **OFFLINE, "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "NEUROTRACE_RUNS_DIR": str(runs)}


def _snippet(prefix: str) -> str:
    section = README.read_text(encoding="utf-8").split("## Use it from an MCP client", 1)[1].split("\n## ", 1)[0]
    lines = [line.strip() for line in section.splitlines() if line.startswith("    ") and line.strip().startswith(prefix)]
    assert lines, f"no README snippet starting with {prefix!r}"
    return lines[0]


def test_the_wheel_carries_every_embedded_model_and_fact_pack(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    data = [p for p in (ROOT / "neurotrace" / "data").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert data and {p.relative_to(ROOT).as_posix() for p in data} <= names
    assert any(n.startswith("neurotrace/data/models/fact-gpt2/model.safetensors") for n in names)
    assert any(n.startswith("neurotrace/data/packs/") for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "neurotrace-mcp = neurotrace.server:main" in scripts and "neurotrace = neurotrace.cli:main" in scripts
    assert not any(n.startswith(("factworld/", "tests/")) for n in names)


def test_the_clean_venv_imports_the_installed_wheel_not_the_checkout(clean_venv, tmp_path):
    code = ("import neurotrace; from neurotrace.lab.model.weights.embedded import embedded_model_path; "
            "print(neurotrace.__file__); print(embedded_model_path('fact-gpt2'))")
    out = _run([str(clean_venv / "bin" / "python"), "-c", code], cwd=tmp_path).stdout.splitlines()
    assert all(Path(line).resolve().is_relative_to(clean_venv.resolve()) for line in out), out


async def test_the_readme_client_snippets_start_the_server_from_the_wheel(clean_venv, tmp_path):
    desktop = json.loads(_snippet('{"mcpServers"'))["mcpServers"]["neurotrace"]
    argv = [desktop["command"], *desktop.get("args", [])]
    assert shlex.split(_snippet("claude mcp add neurotrace --")).index("--") == 4
    assert shlex.split(_snippet("claude mcp add neurotrace --"))[5:] == argv
    assert shlex.split(_snippet("npx @modelcontextprotocol/inspector"))[2:] == argv
    assert shlex.split(_snippet("uvx --from"))[3:] == argv
    assert shlex.split(_snippet("pipx install"))[2].endswith(".whl")
    command = shutil.which(argv[0], path=str(clean_venv / "bin"))
    assert command and Path(command).parent == clean_venv / "bin"
    env = {**_clean_env(clean_venv, tmp_path / "runs"), **desktop.get("env", {}),
           "NEUROTRACE_RUNS_DIR": str(tmp_path / "runs")}
    params = StdioServerParameters(command=command, args=argv[1:], env=env, cwd=str(tmp_path))
    with anyio.fail_after(240):
        async with Client(params) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            assert {"load_model", "trace", "clamp_sweep", "generate_facts"} <= tools
            loaded = await client.call_tool("load_model", {"request": {"model": "fact-gpt2"}})
            assert not loaded.is_error, loaded.content
            assert loaded.structured_content["model"]["n_layers"] >= 1

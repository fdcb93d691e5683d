"""Progress on stderr: tqdm bars on a terminal, sparse plain lines elsewhere, stages, --quiet, --json."""

import io
import json

import pytest

from neurotrace import TraceRequest, cli
from neurotrace.cli import main
from neurotrace.lab.errors import Cancelled
from neurotrace.lab.progress import Reporter, stderr_reporter


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_print_at_most_one_line_per_tenth_of_the_work():
    out = io.StringIO()
    reporter = stderr_reporter(stream=out)
    for i in range(1001):
        reporter.step(i, 1000, f"cell {i}")
    lines = out.getvalue().splitlines()
    assert 2 <= len(lines) <= 11
    assert lines[-1].startswith("100% [1000/1000] cell 1000")
    assert "ETA" in lines[1] and "steps/s" in lines[1]


def test_a_new_total_or_a_restart_starts_a_new_unit_of_work():
    out = io.StringIO()
    reporter = stderr_reporter(stream=out)
    for total in (3, 5):
        for i in range(total + 1):
            reporter.step(i, total, "x")
    for i in range(6):
        reporter.step(i, 5, "again")
    text = out.getvalue()
    assert text.count("100% [3/3]") == 1 and text.count("100% [5/5] x") == 1 and text.count("100% [5/5] again") == 1


def test_steps_without_a_total_print_once_per_message():
    out = io.StringIO()
    reporter = stderr_reporter(stream=out)
    say = reporter.stage_callback("gguf")
    for stage in ("hashing", "hashing", "cache hit"):
        say(stage)
    assert out.getvalue().splitlines() == ["gguf: hashing", "gguf: cache hit"]


def test_a_terminal_gets_a_bar_with_rate_and_eta():
    out = Terminal()
    reporter = stderr_reporter(stream=out)
    for i in range(11):
        reporter.step(i, 10, "fact 1")
    text = out.getvalue()
    assert "100%|" in text and "10/10" in text and "step/s" in text and "<00:00" in text
    assert "fact 1" in text


def test_steps_inside_a_stage_are_nested_under_it():
    plain, term = io.StringIO(), Terminal()
    for out in (plain, term):
        reporter = stderr_reporter("  ", stream=out)
        with reporter.stage("grid"):
            for i in range(3):
                reporter.step(i, 2, "fact a")
    assert plain.getvalue().splitlines()[0] == "  grid ..."
    assert all(line.startswith("  grid: ") for line in plain.getvalue().splitlines()[1:])
    assert "  grid [" in term.getvalue() and "\x1b[A" in term.getvalue()   # the bar is drawn one line below


def test_quiet_prints_nothing():
    out, term = io.StringIO(), Terminal()
    for stream in (out, term):
        reporter = stderr_reporter(quiet=True, stream=stream)
        with reporter.stage("grid"):
            reporter.step(1, 2, "x")
    assert out.getvalue() == "" and term.getvalue() == ""


def test_a_plain_callback_reporter_still_works_and_stages_are_optional():
    seen = []
    reporter = Reporter(on_progress=lambda d, t, m: seen.append((d, t, m)))
    with reporter.stage("ignored"):
        reporter.step(1, 2, "half")
    reporter.cancel()
    with pytest.raises(Cancelled):
        reporter.step(2, 2)
    assert seen == [(1.0, 2.0, "half"), (2.0, 2.0, "")]


def test_cli_json_prints_only_the_result_on_stdout_and_quiet_silences_stderr(tmp_path, capsys):
    args = ["--runs-dir", str(tmp_path), "generate_facts", "--source", '{"kind": "pack", "domains": ["geography"]}',
            "--models", "fact-gpt2"]
    assert main([*args, "--json", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["run_id"] and err == ""
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "100% [3/3] done" in err and "run: " in out


def test_model_loading_shows_its_own_stages_before_the_run(monkeypatch):
    def fake_resolve(name, progress=None):
        for stage in ("hashing", "cache hit"):
            progress(stage)
        return "/converted"

    monkeypatch.setattr(cli, "resolve_source", fake_resolve)
    out = io.StringIO()
    request = TraceRequest(models=["fact-gpt2", "tiny.gguf"], pack="geography")
    cli.resolve_models(request, stderr_reporter(stream=out))
    assert out.getvalue().splitlines() == ["model load ...", "model load: tiny.gguf: hashing",
                                           "model load: tiny.gguf: cache hit"]

"""plot through the in-memory MCP client: dispatch by the source run's tool, errors, linked plot runs."""

import json

import pytest
from mcp import Client

from neurotrace import BenchmarkRequest, PlotRequest, run_benchmark, run_plot
from neurotrace.lab import plotting
from neurotrace.lab.benchmark.figures import auroc_rows, rounded
from neurotrace.lab.benchmark.schema import CircuitScores
from neurotrace.lab.experiment import Figures
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.plotstyle import finish, new_figure
from neurotrace.server import build_server

CALLS: list[tuple[str, dict]] = []


def bars(results, *, color: str = "C0"):
    CALLS.append(("bars", {"color": color}))
    fig, ax = new_figure(width=4, height=3)
    ax.bar(range(len(results["values"])), results["values"], color=color)
    return finish(fig, "values", results["name"])


def line(results):
    CALLS.append(("line", {}))
    fig, ax = new_figure(width=4, height=3)
    ax.plot(results["values"])
    return finish(fig, "line")


@pytest.fixture
def toy_provider(monkeypatch):
    monkeypatch.setitem(plotting.REDRAWABLE, "toy", Figures({"bars": bars, "line": line}, "toy_results.json"))
    CALLS.clear()


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


def toy_run(lab) -> str:
    with lab.store.open_run("toy", {"n": 3}) as run:
        run.write_json("toy_results.json", {"name": "toy data", "values": [1, 3, 2]})
        run.add_model("tiny", "abc123")
    return run.run_id


def error_text(result) -> str:
    assert result.is_error
    return result.content[0].text


@pytest.mark.anyio
async def test_plot_draws_every_kind_into_a_new_run_linked_to_its_source(lab, toy_provider):
    source = toy_run(lab)
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        result = await client.call_tool("plot", {"request": {"run_id": source}})
        assert not result.is_error, result.content
        out = result.structured_content
        manifest = json.loads((await client.read_resource(f"neurotrace://runs/{out['run_id']}/manifest"))
                              .contents[0].text)
    assert out["kinds"] == ["bars", "line"] == out["available_kinds"] and out["source_tool"] == "toy"
    images = [c for c in result.content if c.type == "image"]
    links = [str(c.uri) for c in result.content if c.type == "resource_link"]
    assert len(images) == 1 and images[0].mime_type == "image/png"  # one inline image; the other is a link
    assert out["figures"][1] in links
    assert manifest["tool"] == "plot" and manifest["inputs"] == [source] and manifest["models"] == {"tiny": "abc123"}
    pngs = sorted(a["path"] for a in manifest["artifacts"] if a["path"].endswith(".png"))
    assert pngs == ["figures/bars.png", "figures/line.png"]
    assert (lab.store.run_dir(out["run_id"]) / "figures" / "bars.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.anyio
async def test_plot_one_kind_with_options(lab, toy_provider):
    source = toy_run(lab)
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        result = await client.call_tool("plot", {"request": {"run_id": source, "kind": "bars",
                                                             "options": {"color": "red"}}})
    assert not result.is_error and result.structured_content["kinds"] == ["bars"]
    assert CALLS == [("bars", {"color": "red"})]
    assert "Other kinds for this run: line" in result.structured_content["next"]


@pytest.mark.anyio
async def test_plot_errors_name_the_field(lab, toy_provider):
    source = toy_run(lab)
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        unknown_kind = await client.call_tool("plot", {"request": {"run_id": source, "kind": "pie"}})
        unknown_option = await client.call_tool("plot", {"request": {"run_id": source, "kind": "line",
                                                                     "options": {"color": "red"}}})
        bad_value = await client.call_tool("plot", {"request": {"run_id": source, "kind": "bars",
                                                                "options": {"color": "not-a-colour"}}})
        unknown_run = await client.call_tool("plot", {"request": {"run_id": "20260101T000000Z-trace-00000000"}})
        with lab.store.open_run("generate_facts", {}) as run:
            pass
        no_figures = await client.call_tool("plot", {"request": {"run_id": run.run_id}})
    assert "kind: unknown figure kind 'pie' for a toy run. Fix: use one of: bars, line" in error_text(unknown_kind)
    assert "options.color: figure kind 'line' takes no option 'color'" in error_text(unknown_option)
    assert "options: figure 'bars' could not be drawn" in error_text(bad_value)
    assert "run_id: no run" in error_text(unknown_run)
    assert "run_id: runs of tool 'generate_facts' have no figures" in error_text(no_figures)


@pytest.mark.anyio
async def test_plot_redraws_a_clamp_sweep_run(lab, tiny_gpt2):
    request = {"model": str(tiny_gpt2), "neurons": ["0:1"], "values": [0.0], "prompts": ["the cat"],
               "max_new_tokens": 3}
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        sweep = await client.call_tool("clamp_sweep", {"request": request})
        assert not sweep.is_error, sweep.content
        result = await client.call_tool("plot", {"request": {"run_id": sweep.structured_content["run_id"],
                                                             "kind": "improvement_rate", "dpi": 60}})
    assert not result.is_error, result.content
    assert result.structured_content["source_tool"] == "clamp_sweep"
    assert "sweep_metrics" in result.structured_content["available_kinds"]
    assert [c.type for c in result.content].count("image") == 1


@pytest.mark.anyio
async def test_plot_draws_every_trace_figure(lab, tiny_gpt2):
    spec = {"domain": "toy", "facts": [{"template": "the capital of {} is", "clean_subject": "france",
                                        "corrupt_subject": "italy", "target": "paris"}]}
    async with Client(build_server(lab=lab), raise_exceptions=True) as client:
        facts = await client.call_tool("generate_facts", {"request": {"source": {"kind": "spec", "spec": spec},
                                                                      "models": [str(tiny_gpt2)]}})
        dataset = facts.structured_content["run_id"]
        trace = await client.call_tool("trace", {"request": {"trace_unknown": True, "models": [str(tiny_gpt2)], "dataset_run_id": dataset,
                                                             "corruption": {"kind": "noise", "samples": 2}}})
        assert not trace.is_error, trace.content
        result = await client.call_tool("plot", {"request": {"run_id": trace.structured_content["run_id"]}})
        heads = await client.call_tool("plot", {"request": {"run_id": trace.structured_content["run_id"],
                                                            "kind": "heads"}})
        with_heads = await client.call_tool("trace", {"request": {   # a model that knows its pack's facts
            "models": ["fact-gpt2-cyber"], "pack": "cybersecurity", "max_facts": 1, "corruption": {"kind": "swap"},
            "heads": True}})
        every = await client.call_tool("plot", {"request": {"run_id": with_heads.structured_content["run_id"]}})
    assert not result.is_error, result.content
    out = result.structured_content
    assert out["kinds"] == [k for k in out["available_kinds"] if k != "heads"]   # traced without heads: true
    assert len(out["figures"]) == len(out["kinds"]) >= 1
    assert not heads.is_error and heads.structured_content["kinds"] == ["heads"]   # by name it is still drawn
    known = with_heads.structured_content["models"][0]["n_known"]
    assert known == 1 and "heads" in every.structured_content["kinds"]


def test_plot_redraws_a_benchmark_runs_auroc_heatmap_from_its_saved_scores(lab):
    source = run_benchmark(BenchmarkRequest(parts=["circuits"], seeds=2, samples=64, ig_steps=8), lab=lab)
    redrawn = run_plot(PlotRequest(run_id=source.run_id), lab=lab)
    assert redrawn.source_tool == "benchmark" and redrawn.kinds == ["auroc_heatmap"] and len(redrawn.figures) == 1
    scores = CircuitScores.model_validate(lab.store.read_json(source.run_id, "auroc_per_seed.json"))
    assert rounded(auroc_rows(scores.auroc)) == source.table   # the figure's numbers are the run's table

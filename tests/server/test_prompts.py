"""MCP prompts through the in-memory client: listed with arguments, rendered with them, tools named."""

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from neurotrace.lab.lab import LabSettings
from neurotrace.prompts import MODULES
from neurotrace.server import build_server

EXPECTED = {
    "locate_fact": ({"model", "domain"}, {"model": "fact-bert", "domain": "medicine"},
                    ["generate_facts", "trace", "plot", "compare", "fact-bert", "medicine", "dataset_run_id"]),
    "compare_models": ({"base", "tuned", "domain"}, {"base": "m-base", "tuned": "m-tuned", "domain": "law"},
                       ["generate_facts", "trace", "compare", "m-base", "m-tuned", "law"]),
    "rescue_collapse": ({"model", "neuron"}, {"model": "gpt2", "neuron": "11:373"},
                        ["load_model", "clamp_sweep", "11:373", "n_collapsed_baselines", "sweep_metrics"]),
    "sae_features": ({"model", "site"}, {"model": "fact-gpt2", "site": "blocks.2.hook_mlp_out"},
                     ["capture", "fit_sae", "intervene", "blocks.2.hook_mlp_out"]),
    "check_method": ({"method"}, {"method": "integrated gradients"},
                     ["benchmark", "AUROC", "integrated gradients"]),
    "explain_prediction": ({"model", "prompt", "target", "corrupt"},
                           {"model": "m", "prompt": "The capital of Peru is", "target": "Lima",
                            "corrupt": "The capital of Chad is"},
                           ["logit_lens", "attribute", "attention", "patch", "Lima", "first_top1_layer", "exact"]),
    "patch_components": ({"model", "clean", "corrupt"}, {"model": "m", "clean": "a b", "corrupt": "a c"},
                         ["patch", "head_out", "restored", "metric_corrupt", "attention"]),
    "investigate": ({"model", "prompt", "target", "corrupt"},
                    {"model": "m", "prompt": "The capital of Peru is", "target": "Lima", "corrupt": "The capital of Chad is"},
                    ["logit_lens", "attribute", "patch", "find_neurons", "steer", "clamp_sweep", "verdict", "Lima",
                     "first_top1_layer"]),
    "explain_features": ({"model", "site"}, {"model": "fact-gpt2", "site": "blocks.2.hook_mlp_out"},
                         ["capture", "fit_sae", "explain", "quiz_run_id", "predictive", "blocks.2.hook_mlp_out"]),
    "locate_and_edit": ({"model", "pack"}, {"model": "fact-gpt2", "pack": "geography"},
                        ["trace", "edit", "sweep_layers", "memit", "edited_model", "specificity", "fact-gpt2"]),
    "diff_models": ({"tuned", "prompt", "subject", "target", "control"},
                    {"tuned": "gemma-3-270m+eiffel-rome-lora", "prompt": "The Louvre is in", "subject": "Louvre",
                     "target": "Rome", "control": "The capital of Peru is"},
                    ["diff", "trace", "compare", "logit_lens", "tuned_pair", "gemma-3-270m", "floor"]),
}


@pytest.fixture
async def client(tmp_path):
    async with Client(build_server(LabSettings(runs_dir=tmp_path / "runs")), raise_exceptions=True) as c:
        yield c


def test_every_prompt_module_is_registered():
    assert [m.__name__.rsplit(".", 1)[-1] for m in MODULES] == list(EXPECTED)


@pytest.mark.anyio
async def test_prompts_are_listed_with_their_arguments(client):
    prompts = {p.name: p for p in (await client.list_prompts()).prompts}
    assert set(prompts) == set(EXPECTED)
    for name, (args, _, _) in EXPECTED.items():
        assert {a.name for a in prompts[name].arguments} == args
        assert not any(a.required for a in prompts[name].arguments)
        assert prompts[name].description


@pytest.mark.anyio
@pytest.mark.parametrize("name", list(EXPECTED))
async def test_prompt_renders_steps_naming_tools_and_arguments(client, name):
    _, arguments, needles = EXPECTED[name]
    result = await client.get_prompt(name, arguments)
    text = result.messages[0].content.text
    assert result.messages[0].role == "user"
    assert "## Steps" in text and "## How to read the results" in text
    for needle in needles:
        assert needle in text, needle


@pytest.mark.anyio
async def test_prompt_flags_tools_missing_from_this_build(client):
    tools = {t.name for t in (await client.list_tools()).tools}
    text = (await client.get_prompt("sae_features", {})).messages[0].content.text
    missing = [t for t in ("capture", "fit_sae", "intervene") if t not in tools]
    if missing:
        assert "does not provide" in text and all(f"`{t}`" in text.split("Note:")[1] for t in missing)
    else:
        assert "does not provide" not in text
    text = (await client.get_prompt("rescue_collapse", {})).messages[0].content.text
    assert "does not provide" not in text  # load_model, clamp_sweep and plot exist


async def _refused(client, name: str, arguments: dict) -> str:
    with pytest.raises(MCPError) as err:
        await client.get_prompt(name, arguments)
    assert err.value.error.code == -32602
    return err.value.error.message


@pytest.mark.anyio
async def test_an_unknown_argument_is_refused_naming_it_and_the_accepted_ones(client):
    message = await _refused(client, "explain_prediction", {"modle": "m"})
    assert "unknown argument(s) modle" in message and "Fix: use model, prompt, target, corrupt" in message


@pytest.mark.anyio
async def test_half_an_example_is_refused_naming_the_missing_arguments(client):
    message = await _refused(client, "explain_prediction", {"model": "m", "prompt": "The capital of Peru is"})
    assert message.startswith("explain_prediction: arguments: target, corrupt missing") and "Fix: pass target, " \
        "corrupt too" in message
    assert "clean" in await _refused(client, "patch_components", {"corrupt": "a c"})
    whole = await client.get_prompt("explain_prediction", {"prompt": "The capital of Peru is", "target": "Lima",
                                                           "corrupt": "The capital of Chad is"})
    assert "'Lima'" in whole.messages[0].content.text and "'Paris'" not in whole.messages[0].content.text


@pytest.mark.anyio
async def test_a_prompt_names_the_defaults_it_used_and_only_those(client):
    text = (await client.get_prompt("locate_fact", {"model": "fact-bert"})).messages[0].content.text
    assert text.startswith("> Arguments not given, defaults used: domain='geography'.")
    text = (await client.get_prompt("locate_fact", {"model": "fact-bert", "domain": "law"})).messages[0].content.text
    assert "defaults used" not in text


@pytest.mark.anyio
async def test_a_missing_required_argument_is_named(tmp_path):
    server = build_server(LabSettings(runs_dir=tmp_path / "runs"))

    @server.prompt(name="needs_site", description="A prompt with a required argument.")
    async def needs_site(site: str, model: str = "fact-gpt2") -> str:
        return f"{model} {site}"

    async with Client(server, raise_exceptions=True) as client:
        message = await _refused(client, "needs_site", {"model": "m"})
    assert message == "needs_site: arguments: prompt needs_site needs site. Fix: pass site"

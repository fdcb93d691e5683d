"""capture: site filters, stored states vs direct hooks, episodes, chunking, step-scoped interventions."""

import json

import numpy as np
import pytest
import torch

from neurotrace import CaptureRequest, run_capture
from neurotrace.lab.capture.store import load_trace_dataset
from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.access.hooks import run_with_cache
from neurotrace.lab.model.access.sites import select_sites
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.lab.progress import NULL_REPORTER
from neurotrace.testing.errors import raises_lab_error

PROMPTS = ["the cat is big", "a dog is small", "the king of france"]


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


def capture(lab, model, **kw):
    kw.setdefault("prompts", PROMPTS)
    return run_capture(CaptureRequest(model=str(model), **kw), lab=lab, reporter=NULL_REPORTER)


def states(lab, result, site):
    return np.array(load_trace_dataset(lab, result.run_id, site).states)


def test_site_patterns_match_globs_and_regexes_in_forward_order(lab, tiny_gpt2):
    with lab.cache.lease(ModelRef(model=str(tiny_gpt2))) as lm:
        assert select_sites(["blocks.*.hook_resid_post"], lm) == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
        assert select_sites([r"re:blocks\.1\.(hook_mlp_out|mlp\.hook_post)", "hook_embed"], lm) == [
            "hook_embed", "blocks.1.mlp.hook_post", "blocks.1.hook_mlp_out"]
        for bad in (["blocks.7.hook_resid_post"], ["re:(unclosed"]):
            with raises_lab_error(InputError) as err:
                select_sites(bad, lm)
            assert err.value.field == "sites"


def test_stored_states_equal_the_hooked_activations_and_rows_point_to_steps(lab, tiny_gpt2):
    sites = ["blocks.0.hook_mlp_out", "blocks.1.mlp.hook_post", "blocks.1.hook_resid_post"]
    result = capture(lab, tiny_gpt2, sites=sites, chunk_rows=3)
    assert result.sites == sites and result.widths["blocks.1.mlp.hook_post"] == 128
    lines = [json.loads(x) for x in lab.store.artifact_path(result.run_id, "trace.jsonl").read_text().splitlines()]
    index = lab.store.read_npy(result.run_id, "arrays/index.npy")
    with lab.cache.lease(ModelRef(model=str(tiny_gpt2))) as lm:
        for line, prompt in zip(lines, PROMPTS, strict=True):
            ids = lm.tokenizer(prompt, return_tensors="pt").input_ids
            _, cache = run_with_cache(lm.model, lm.adapter, sites, input_ids=ids)
            start, end = line["rows"]
            assert end - start == ids.shape[1] and line["token_ids"] == ids[0].tolist()
            assert (index[start:end, 0] == line["step"]).all()
            for site in sites:
                np.testing.assert_array_equal(states(lab, result, site)[start:end], cache[site][0].numpy())


def test_chunked_writes_give_the_same_arrays_as_one_chunk(lab, tiny_gpt2):
    a = capture(lab, tiny_gpt2, chunk_rows=1)
    b = capture(lab, tiny_gpt2, chunk_rows=4096)
    site = "blocks.1.hook_resid_post"
    np.testing.assert_array_equal(states(lab, a, site), states(lab, b, site))
    assert not (lab.store.run_dir(a.run_id) / ".parts").exists()


def test_episode_steps_continue_the_transcript_with_outputs_and_metadata(lab, tiny_gpt2):
    episode = [{"text": "the cat is", "metadata": {"turn": "user"}}, {"text": "and the dog", "max_new_tokens": 2},
               {"text": "is", "target": "big"}]
    result = capture(lab, tiny_gpt2, prompts=[], episode=episode, max_new_tokens=3, positions="last")
    lines = [json.loads(x) for x in lab.store.artifact_path(result.run_id, "trace.jsonl").read_text().splitlines()]
    assert [len(ln["generated_ids"]) for ln in lines] == [3, 2, 3]
    assert lines[0]["metadata"] == {"turn": "user"} and 0 <= lines[2]["p_target"] <= 1
    for prev, cur in zip(lines, lines[1:], strict=False):
        transcript = prev["token_ids"][:prev["prompt_len"]] + prev["generated_ids"]
        assert cur["token_ids"][:len(transcript)] == transcript
    assert result.n_rows == 3 and [ln["positions"] for ln in lines] == [[ln["prompt_len"] - 1] for ln in lines]


def test_zero_ablating_a_layers_outputs_equals_running_without_that_layer(lab, tiny_gpt2):
    zero = [{"kind": "zero", "site": "blocks.1.hook_attn_out"}, {"kind": "zero", "site": "blocks.1.hook_mlp_out"}]
    sites = ["blocks.1.hook_resid_pre", "blocks.1.hook_resid_post"]
    result = capture(lab, tiny_gpt2, sites=sites, interventions=zero)
    np.testing.assert_array_equal(states(lab, result, sites[0]), states(lab, result, sites[1]))
    with lab.cache.lease(ModelRef(model=str(tiny_gpt2))) as lm:     # also the same logits as deleting block 1
        from neurotrace.lab.capture.edits import StepInfo, step_hooks
        from neurotrace.lab.model.access.hooks import hooked

        ids = lm.tokenizer(PROMPTS[0], return_tensors="pt").input_ids
        spec = CaptureRequest(model="m", prompts=["x"], interventions=zero).interventions
        with torch.no_grad(), hooked(lm.model, lm.adapter, step_hooks(spec, StepInfo(0, ids.shape[1]), lm, None)):
            ablated = lm.model(input_ids=ids).logits
        blocks = lm.model.transformer.h
        try:
            lm.model.transformer.h = torch.nn.ModuleList([blocks[0]])
            with torch.no_grad():
                removed = lm.model(input_ids=ids, use_cache=False).logits
        finally:
            lm.model.transformer.h = blocks
    torch.testing.assert_close(ablated, removed, rtol=0, atol=1e-6)


def test_step_filter_touches_only_the_listed_steps(lab, tiny_gpt2):
    site = "blocks.1.hook_resid_post"
    base = capture(lab, tiny_gpt2)
    hit = capture(lab, tiny_gpt2, interventions=[{"kind": "zero", "site": "blocks.0.hook_mlp_out", "steps": [1]}])
    a, b = states(lab, base, site), states(lab, hit, site)
    rows = [json.loads(x)["rows"] for x in lab.store.artifact_path(hit.run_id, "trace.jsonl").read_text().splitlines()]
    for step, (start, end) in enumerate(rows):
        same = np.array_equal(a[start:end], b[start:end])
        assert same == (step != 1)


def test_zeroing_every_head_leaves_only_the_output_projection_bias(lab, tiny_gpt2):
    result = capture(lab, tiny_gpt2, sites=["blocks.0.hook_attn_out", "blocks.0.attn.hook_z"],
                     interventions=[{"kind": "zero_heads", "layer": 0, "heads": [0, 1, 2, 3]}])
    with lab.cache.lease(ModelRef(model=str(tiny_gpt2))) as lm:
        bias = lm.model.transformer.h[0].attn.c_proj.bias.numpy()
    out = states(lab, result, "blocks.0.hook_attn_out")
    np.testing.assert_allclose(out, np.broadcast_to(bias, out.shape), atol=1e-7)
    assert not states(lab, result, "blocks.0.attn.hook_z").any()


def test_zeroing_one_head_at_one_position_changes_only_that_head_slice(lab, tiny_gpt2):
    site = "blocks.0.attn.hook_z"
    base = states(lab, capture(lab, tiny_gpt2, sites=[site]), site)
    cut = states(lab, capture(lab, tiny_gpt2, sites=[site],
                              interventions=[{"kind": "zero_heads", "layer": 0, "heads": [2], "positions": [-1]}]), site)
    changed = np.argwhere(base != cut)
    assert len(changed) and set(changed[:, 1] // 8) == {2}
    assert set(changed[:, 0]) == {3, 7, 11}       # the last token of each 4-token prompt


def test_mean_ablation_sets_the_site_to_the_reference_mean(lab, tiny_gpt2):
    site = "blocks.0.hook_mlp_out"
    ref = capture(lab, tiny_gpt2, sites=[site], prompts=["water fire earth air", "the sun and the moon"])
    mean = states(lab, ref, site).astype(np.float64).mean(0)
    out = capture(lab, tiny_gpt2, sites=[site], interventions=[{"kind": "mean", "site": site, "capture_run_id": ref.run_id}])
    np.testing.assert_allclose(states(lab, out, site), np.broadcast_to(mean, (out.n_rows, mean.size)), atol=1e-6)
    assert ref.run_id in lab.store.manifest(out.run_id).inputs


def test_patching_a_whole_layer_from_another_run_reproduces_its_downstream_states(lab, tiny_gpt2):
    sites = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    src = capture(lab, tiny_gpt2, sites=sites, prompts=["a red car on the road", "one two three", "the queen"])
    out = capture(lab, tiny_gpt2, sites=sites,
                  interventions=[{"kind": "patch", "site": sites[0], "capture_run_id": src.run_id}],
                  prompts=["the blue house is old new", "four five six", "a king"])
    np.testing.assert_allclose(states(lab, out, sites[1]), states(lab, src, sites[1]), atol=1e-6)


def test_knockout_of_all_earlier_keys_makes_the_last_token_see_only_itself(lab, tiny_llama):
    site = "blocks.1.hook_resid_post"
    ko = {"kind": "knockout", "query_positions": [-1], "key_positions": [0, 1, 2]}
    out = states(lab, capture(lab, tiny_llama, sites=[site], prompts=["the cat is big"], interventions=[ko]), site)
    alone = states(lab, capture(lab, tiny_llama, sites=[site], prompts=["big"]), site)
    plain = states(lab, capture(lab, tiny_llama, sites=[site], prompts=["the cat is big"]), site)
    np.testing.assert_allclose(out[3], alone[0], atol=1e-5)      # RoPE: a lone key is position-free
    np.testing.assert_array_equal(out[:3], plain[:3])             # other queries untouched
    assert not np.allclose(out[3], plain[3], atol=1e-4)


def test_bert_prompts_capture_and_knockout_runs(lab, tiny_bert):
    site = "blocks.1.hook_resid_post"
    base = states(lab, capture(lab, tiny_bert, sites=[site], prompts=["the cat is [MASK] ."]), site)
    ko = capture(lab, tiny_bert, sites=[site], prompts=["the cat is [MASK] ."],
                 interventions=[{"kind": "knockout", "layers": [0], "query_positions": [4], "key_positions": [2]}])
    assert base.shape == (7, 32) and not np.allclose(states(lab, ko, site), base)


@pytest.mark.parametrize("kw,field", [
    ({"prompts": [], "episode": []}, "prompts"),
    ({"episode": [{"text": "the cat"}]}, "prompts"),
    ({"prompts": ["the " * 70]}, "prompts"),
    ({"interventions": [{"kind": "zero", "site": "blocks.9.hook_mlp_out"}]}, "interventions"),
    ({"interventions": [{"kind": "zero_heads", "layer": 0, "heads": [4]}]}, "interventions"),
    ({"interventions": [{"kind": "knockout", "layers": [5], "query_positions": [1], "key_positions": [0]}]},
     "interventions"),
    ({"sites": ["nothing.here"]}, "sites"),
])
def test_input_errors_name_the_field(lab, tiny_gpt2, kw, field):
    with raises_lab_error(InputError) as err:
        capture(lab, tiny_gpt2, **kw)
    assert err.value.field == field


def test_masked_models_refuse_episodes_and_generation(lab, tiny_bert):
    for kw, field in [({"prompts": [], "episode": [{"text": "the cat"}]}, "episode"),
                      ({"max_new_tokens": 2}, "max_new_tokens")]:
        with raises_lab_error(InputError) as err:
            capture(lab, tiny_bert, **kw)
        assert err.value.field == field


def test_reference_runs_must_be_captures_of_the_site_with_every_position(lab, tiny_gpt2):
    last = capture(lab, tiny_gpt2, sites=["blocks.0.hook_mlp_out"], positions="last")
    cases = [{"kind": "mean", "site": "blocks.1.hook_mlp_out", "capture_run_id": last.run_id},
             {"kind": "patch", "site": "blocks.0.hook_mlp_out", "capture_run_id": last.run_id},
             {"kind": "patch", "site": "blocks.0.hook_mlp_out", "capture_run_id": last.run_id, "source_step": 9}]
    for spec in cases:
        with raises_lab_error(InputError) as err:
            capture(lab, tiny_gpt2, interventions=[spec])
        assert err.value.field == "interventions"


def test_trace_dataset_errors_name_site_and_capture_run(lab, tiny_gpt2):
    two = capture(lab, tiny_gpt2, sites=["blocks.*.hook_resid_post"])
    for site in (None, "blocks.0.hook_mlp_out"):
        with raises_lab_error(InputError) as err:
            load_trace_dataset(lab, two.run_id, site)
        assert err.value.field == "site"
    from neurotrace import FitSAERequest, run_fit_sae

    fit = run_fit_sae(FitSAERequest(capture_run_id=two.run_id, site="blocks.1.hook_resid_post", n_steps=5,
                                    splice_steps=0), lab=lab, reporter=NULL_REPORTER)
    with raises_lab_error(InputError) as err:
        load_trace_dataset(lab, fit.run_id)
    assert err.value.field == "capture_run_id"


def test_on_the_shipped_fact_model_known_facts_are_likely_and_mlp_ablation_hurts(lab):
    from neurotrace.lab.model.weights.embedded import embedded_model_path

    path = embedded_model_path("fact-gpt2")
    if path is None:
        pytest.skip("the embedded fact-gpt2 model is not shipped in this checkout")
    facts = [f for f in json.loads((path / "facts.json").read_text(encoding="utf-8")) if not f["held_out"]][:4]
    prompts = [{"text": f["template"].format(f["clean_subject"]), "target": f["target"]} for f in facts]
    site = "blocks.5.hook_resid_post"

    def p_targets(result):
        text = lab.store.artifact_path(result.run_id, "trace.jsonl").read_text(encoding="utf-8")
        return [json.loads(line)["p_target"] for line in text.splitlines()]

    clean = capture(lab, "fact-gpt2", sites=[site], prompts=prompts, positions="last")
    cut = capture(lab, "fact-gpt2", sites=[site], prompts=prompts, positions="last",
                  interventions=[{"kind": "zero", "site": f"blocks.{layer}.hook_mlp_out"} for layer in range(6)])
    assert np.mean(p_targets(clean)) > 0.5 and np.mean(p_targets(cut)) < np.mean(p_targets(clean))
    assert clean.n_rows == 4 and clean.widths[site] == 128


def test_skip_positions_and_skip_bos_drop_those_rows_and_keep_the_rest_aligned(lab, tiny_gpt2):
    site = "blocks.1.hook_resid_post"
    full = capture(lab, tiny_gpt2, sites=[site])
    skipped = capture(lab, tiny_gpt2, sites=[site], skip_positions=1)
    ds_full, ds = load_trace_dataset(lab, full.run_id, site), load_trace_dataset(lab, skipped.run_id, site)
    keep = ds_full.meta["pos"] >= 1
    assert skipped.n_rows == full.n_rows - len(PROMPTS) and (ds.meta["pos"] >= 1).all()
    np.testing.assert_array_equal(np.array(ds.states), np.array(ds_full.states)[keep])
    with lab.cache.lease(ModelRef(model=str(tiny_gpt2))) as lm:
        bos = lm.tokenizer.bos_token_id
    prompts = [lm.tokenizer.decode([bos]) + " the cat", "a dog"]
    no_bos = capture(lab, tiny_gpt2, sites=[site], prompts=prompts, skip_bos=True)
    assert bos not in load_trace_dataset(lab, no_bos.run_id, site).meta["token_id"]


def test_set_neurons_and_a_text_patch_are_the_same_edits_intervene_uses(lab, tiny_gpt2):
    post = "blocks.1.mlp.hook_post"
    out = capture(lab, tiny_gpt2, sites=[post], interventions=[{"kind": "set_neurons", "neurons": ["1:3", "1:7"],
                                                                "value": 2.5}])
    got = states(lab, out, post)
    assert (got[:, [3, 7]] == 2.5).all() and not (got[:, 5] == 2.5).all()
    resid = "blocks.0.hook_resid_post"
    src = capture(lab, tiny_gpt2, sites=["blocks.1.hook_resid_post"], prompts=["a red car on the road"])
    patched = capture(lab, tiny_gpt2, sites=["blocks.1.hook_resid_post"], prompts=["the blue house is old new"],
                      interventions=[{"kind": "patch", "site": resid, "source": "a red car on the road"}])
    np.testing.assert_allclose(states(lab, patched, "blocks.1.hook_resid_post"),
                               states(lab, src, "blocks.1.hook_resid_post"), atol=1e-6)
    with pytest.raises(ValueError, match="exactly one"):
        CaptureRequest(model="m", prompts=["x"], interventions=[{"kind": "patch", "site": resid}])

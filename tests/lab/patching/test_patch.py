"""patch: equal to transformer_lens.patching on the bridge for every kind, the same as tracing's exact grid
for p(target), independent of the batch size, and input errors by field; the suffix runs over the corrupt
run's cached keys/values equal the full forwards in every decoder family and feed fewer token positions."""

import functools

import numpy as np
import pytest
import torch

from neurotrace.lab.errors import InputError
from neurotrace.lab.facts.fact import Fact
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.weights.loading import ModelRef, load
from neurotrace.lab.patching.report import heatmap, ranked
from neurotrace.lab.patching.run import (
    cells_for,
    clean_cache,
    last_logits,
    make_metric,
    patch_cells,
    patch_cells_full,
    run_patch,
)
from neurotrace.lab.patching.schema import PATCH_RESULTS_FILE, PatchCell, PatchRequest, PatchResults
from neurotrace.lab.progress import Reporter
from neurotrace.lab.tracing.grids.grid import Corrupted, exact_grid
from neurotrace.lab.tracing.prepare import prepare_fact
from neurotrace.testing.records import assert_redraws, read_back
from neurotrace.testing.tiny import DECODER_FAMILIES, build_tiny

CLEAN, CORRUPT = "the capital of france is", "the capital of spain is"
KINDS = ["resid_pre", "attn_out", "mlp_out", "head_out", "head_out_pos"]


@pytest.fixture
def lab(tmp_path):
    return Lab(LabSettings(runs_dir=tmp_path / "runs"))


def _grids(lab, result):
    rec = lab.store.read_json(result.run_id, "patch_results.json")
    return {k: torch.tensor(np.array(v, dtype=float), dtype=torch.float32) for k, v in rec["values"].items()}


def test_every_kind_equals_transformerlens_patching_on_the_bridge(lab, tiny_gpt2):
    from transformer_lens import patching

    result = run_patch(PatchRequest(model=str(tiny_gpt2), clean=CLEAN, corrupt=CORRUPT, target="paris",
                                    contrast="madrid", components=KINDS, batch_size=7), lab=lab)
    ours = _grids(lab, result)
    lm = load(ModelRef(model=str(tiny_gpt2), backend="bridge"))
    t, c = (lm.tokenizer.convert_tokens_to_ids(w) for w in ("paris", "madrid"))
    clean_ids, corrupt_ids = (lm.tokenizer(s, return_tensors="pt")["input_ids"] for s in (CLEAN, CORRUPT))
    _, cache = lm.bridge.run_with_cache(clean_ids)

    def metric(logits):
        return logits[0, -1, t] - logits[0, -1, c]

    tl = {"resid_pre": patching.get_act_patch_resid_pre, "attn_out": patching.get_act_patch_attn_out,
          "mlp_out": patching.get_act_patch_mlp_out, "head_out": patching.get_act_patch_attn_head_out_all_pos,
          "head_out_pos": patching.get_act_patch_attn_head_out_by_pos}
    for kind, fn in tl.items():
        expect = fn(lm.bridge, corrupt_ids, cache, metric).detach().float()
        torch.testing.assert_close(ours[kind], expect, atol=1e-4, rtol=1e-4, msg=kind)
    with torch.no_grad():
        assert result.metric_clean == pytest.approx(float(metric(lm.bridge(clean_ids)).detach()), abs=1e-4)
    assert result.differing == [3] and len(result.figures) == len(KINDS)


def test_head_queries_keys_values_and_patterns_equal_transformerlens_patching(lab, tiny_gpt2):
    from transformer_lens import patching

    parts = ["head_q", "head_k", "head_v", "head_pattern"]
    result = run_patch(PatchRequest(model=str(tiny_gpt2), clean=CLEAN, corrupt=CORRUPT, target="paris",
                                    contrast="madrid", components=parts, batch_size=5), lab=lab)
    ours = _grids(lab, result)
    lm = load(ModelRef(model=str(tiny_gpt2), backend="bridge"))
    t, c = (lm.tokenizer.convert_tokens_to_ids(w) for w in ("paris", "madrid"))
    clean_ids, corrupt_ids = (lm.tokenizer(s, return_tensors="pt")["input_ids"] for s in (CLEAN, CORRUPT))
    _, cache = lm.bridge.run_with_cache(clean_ids)

    def metric(logits):
        return logits[0, -1, t] - logits[0, -1, c]

    tl = {"head_q": patching.get_act_patch_attn_head_q_all_pos, "head_k": patching.get_act_patch_attn_head_k_all_pos,
          "head_v": patching.get_act_patch_attn_head_v_all_pos,
          "head_pattern": patching.get_act_patch_attn_head_pattern_all_pos}
    for kind, fn in tl.items():
        expect = fn(lm.bridge, corrupt_ids, cache, metric).detach().float()
        torch.testing.assert_close(ours[kind], expect, atol=1e-4, rtol=1e-4, msg=kind)
    assert [f.rsplit("/", 1)[-1] for f in result.figures] == [f"{k}.png" for k in parts]


def _tl_path_patch(bridge, clean_ids, corrupt_ids, sender, receiver, parts, metric):
    """Path patching by hand with TransformerLens hooks: freeze every head at corrupt but the sender (clean),
    record the receiver's q/k/v, then run the corrupt prompt with only those replaced."""
    _, clean_cache = bridge.run_with_cache(clean_ids)
    _, corrupt_cache = bridge.run_with_cache(corrupt_ids)
    (s_layer, s_head), (r_layer, r_head) = sender, receiver

    def freeze(act, hook):
        new = corrupt_cache[hook.name].clone()
        if hook.name.startswith(f"blocks.{s_layer}."):                 # the bridge names hook_z attn.o.hook_in
            new[:, :, s_head] = clean_cache[hook.name][:, :, s_head]
        return new

    record = {}

    def save(act, hook):
        record[hook.name] = act.detach().clone()

    bridge.run_with_hooks(corrupt_ids, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", freeze) for layer in range(2)]
                          + [(f"blocks.{r_layer}.attn.hook_{p}", save) for p in parts])

    def put(act, hook):
        act = act.clone()
        act[:, :, r_head] = record[hook.name][:, :, r_head]
        return act

    logits = bridge.run_with_hooks(corrupt_ids, fwd_hooks=[(f"blocks.{r_layer}.attn.hook_{p}", put) for p in parts])
    return float(metric(logits).detach())


@pytest.mark.parametrize("parts", [["q"], ["v"], ["q", "k", "v"]])
def test_path_patching_equals_a_transformerlens_hook_loop_on_the_bridge(lab, tiny_gpt2, parts):
    result = run_patch(PatchRequest(model=str(tiny_gpt2), clean=CLEAN, corrupt=CORRUPT, target="paris",
                                    contrast="madrid", components=["path"], receivers=["1:2"], receiver_parts=parts,
                                    batch_size=3), lab=lab)
    ours = _grids(lab, result)["path"]
    assert ours.shape == (2, 4) and torch.isnan(ours[1]).all() and not torch.isnan(ours[0]).any()
    lm = load(ModelRef(model=str(tiny_gpt2), backend="bridge"))
    t, c = (lm.tokenizer.convert_tokens_to_ids(w) for w in ("paris", "madrid"))
    clean_ids, corrupt_ids = (lm.tokenizer(s, return_tensors="pt")["input_ids"] for s in (CLEAN, CORRUPT))

    def metric(logits):
        return logits[0, -1, t] - logits[0, -1, c]

    effects = []
    for head in range(4):
        expect = _tl_path_patch(lm.bridge, clean_ids, corrupt_ids, (0, head), (1, 2), parts, metric)
        effect = expect - result.metric_corrupt                           # tiny on a random model: compare effects
        assert float(ours[0, head]) - result.metric_corrupt == pytest.approx(effect, rel=0.05, abs=2e-7)
        effects.append(abs(effect))
    assert max(effects) > 2e-6                                            # the paths carry a measurable effect
    assert all(cell.component == "path" and cell.layer == 0 for cell in result.top)


def test_path_patching_needs_receivers_and_receivers_need_path(lab, tiny_gpt2):
    for kw, field in ((dict(components=["path"]), "receivers"), (dict(receivers=["1:0"]), "receivers"),
                      (dict(components=["path"], receivers=["0:1"]), "receivers[0]")):
        with pytest.raises(InputError) as err:
            run_patch(PatchRequest(model=str(tiny_gpt2), clean=CLEAN, corrupt=CORRUPT, metric="kl", **kw), lab=lab)
        assert err.value.field == field


def test_gqa_keys_and_values_are_patched_per_key_value_head(lab, tmp_path):
    from transformers import MistralConfig, MistralForCausalLM

    from neurotrace.testing.tiny import tiny_tokenizer

    tok = tiny_tokenizer("causal")
    torch.manual_seed(0)
    MistralForCausalLM(MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, sliding_window=3,
                                     max_position_embeddings=64, bos_token_id=0, eos_token_id=0,
                                     pad_token_id=0)).save_pretrained(tmp_path / "gqa")
    tok.save_pretrained(tmp_path / "gqa")
    result = run_patch(PatchRequest(model=str(tmp_path / "gqa"), clean=CLEAN, corrupt=CORRUPT, metric="kl",
                                    components=["head_q", "head_k", "head_v", "head_pattern", "head_out"]), lab=lab)
    grids = _grids(lab, result)
    assert grids["head_q"].shape == grids["head_pattern"].shape == grids["head_out"].shape == (2, 4)
    assert grids["head_k"].shape == grids["head_v"].shape == (2, 2)
    assert lab.cache.get(ModelRef(model=str(tmp_path / "gqa"))).model.config._attn_implementation != "neurotrace_patch"


def test_p_target_equals_the_tracing_exact_grid_with_a_subject_swap(lab, tiny_gpt2):
    result = run_patch(PatchRequest(model=str(tiny_gpt2), clean=CLEAN, corrupt=CORRUPT, metric="p_target",
                                    target="paris"), lab=lab)
    ours = _grids(lab, result)
    lm = load(ModelRef(model=str(tiny_gpt2)))
    prep = prepare_fact(lm, Fact(template="the capital of {} is", clean_subject="france", corrupt_subject="spain",
                                 target="paris"), 0)
    trace = exact_grid(lm, prep, Corrupted(prep.swap_ids, None, prep.subject), ["resid", "mlp", "attn"], 1, Reporter())
    torch.testing.assert_close(ours["resid_pre"][1:], trace["resid"][:-1].float(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours["mlp_out"], trace["mlp"].float(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours["attn_out"], trace["attn"].float(), atol=1e-5, rtol=1e-4)


def test_results_do_not_depend_on_the_batch_size_and_llama_works(lab, tiny_llama):
    req = dict(model=str(tiny_llama), clean=CLEAN, corrupt=CORRUPT, metric="kl", components=["resid_pre", "head_out_pos"])
    a = _grids(lab, run_patch(PatchRequest(**req, batch_size=1), lab=lab))
    b = run_patch(PatchRequest(**req, batch_size=64), lab=lab)
    for kind in req["components"]:
        torch.testing.assert_close(a[kind], _grids(lab, b)[kind], atol=1e-5, rtol=1e-5)
    # restoring the whole residual at the last layer's input everywhere is the clean run: KL 0 at the last position
    assert b.metric_clean == pytest.approx(0.0, abs=1e-6) and b.metric_corrupt > 0
    assert a["resid_pre"][0, 3] == pytest.approx(0.0, abs=1e-5)           # the differing token restored at the input


def test_input_errors_name_their_field(lab, tiny_gpt2, tiny_bert):
    with pytest.raises(InputError) as err:
        run_patch(PatchRequest(model=str(tiny_gpt2), clean=CLEAN, corrupt="the capital of the big country is"), lab=lab)
    assert err.value.field == "corrupt"
    with pytest.raises(InputError) as err:
        run_patch(PatchRequest(model=str(tiny_gpt2), clean=CLEAN, corrupt=CORRUPT, target="paris", contrast="paris"),
                  lab=lab)
    assert err.value.field == "contrast"
    with pytest.raises(InputError) as err:
        run_patch(PatchRequest(model=str(tiny_bert), clean=CLEAN, corrupt=CORRUPT), lab=lab)
    assert err.value.field == "model"
    with pytest.raises(ValueError, match="components"):
        PatchRequest(model="x", clean=CLEAN, corrupt=CORRUPT, components=["embed"])


def test_plot_redraws_any_patched_kind_and_names_a_missing_one(lab, tiny_gpt2):
    from neurotrace.lab.plotting import PlotRequest, run_plot

    run = run_patch(PatchRequest(model=str(tiny_gpt2), clean=CLEAN, corrupt=CORRUPT, metric="kl",
                                 components=["mlp_out", "head_out"]), lab=lab)
    plot = run_plot(PlotRequest(run_id=run.run_id, kind="heatmap", options={"component": "head_out"}), lab=lab)
    assert plot.kinds == ["heatmap"] and len(plot.figures) == 1
    with pytest.raises(InputError) as err:
        run_plot(PlotRequest(run_id=run.run_id, kind="heatmap", options={"component": "resid_pre"}), lab=lab)
    assert err.value.field == "options" and "mlp_out, head_out" in str(err.value)


def test_the_saved_results_round_trip_through_their_record_and_redraw_the_runs_figures(lab, tiny_gpt2):
    kinds = ["resid_pre", "head_out_pos", "path"]                        # (layer, pos), (layer, pos, head), None cells
    result = run_patch(PatchRequest(model=str(tiny_gpt2), clean=CLEAN, corrupt=CORRUPT, target="paris",
                                    contrast="madrid", components=kinds, receivers=["1:2"]), lab=lab)
    rec = read_back(lab, result.run_id, PATCH_RESULTS_FILE, PatchResults.model_validate)
    assert list(rec.values) == list(rec.restored) == kinds and rec.tokens == result.tokens
    assert (rec.metric_clean, rec.metric_corrupt, rec.contrast) == (result.metric_clean, result.metric_corrupt,
                                                                   result.contrast)
    assert np.array(rec.values["head_out_pos"]).shape == (2, len(rec.tokens), 4)
    assert rec.values["path"][1] == [None] * 4 and None not in rec.values["path"][0]
    assert_redraws(lab, result.run_id, {k: functools.partial(heatmap, component=k) for k in kinds}, rec)
    shown = heatmap(rec, component="resid_pre").axes[0].get_images()[0].get_array()
    np.testing.assert_array_equal(shown, np.array(rec.restored["resid_pre"], dtype=float))


def _setup(path, kind, clean_text=CLEAN, corrupt_text=CORRUPT):
    """A loaded model, the two prompts' ids, a logit-difference metric and the cells + clean cache of ``kind``."""
    lm = load(ModelRef(model=str(path)))
    clean, corrupt = (torch.tensor(list(lm.tokenizer(t).input_ids)) for t in (clean_text, corrupt_text))
    t, c = (lm.tokenizer.convert_tokens_to_ids(w) for w in ("paris", "madrid"))
    metric = make_metric("logit_diff", t, c, last_logits(lm, clean[None])[0])
    d_head = int(getattr(lm.config, "head_dim", None) or lm.d_model // lm.n_heads)
    cells = cells_for(kind, lm.n_layers, len(clean), lm.n_heads, d_head)
    return lm, clean, corrupt, metric, cells, clean_cache(lm, clean, {c.site for c in cells})


@pytest.mark.parametrize("family", DECODER_FAMILIES)
def test_suffix_runs_over_the_corrupt_cache_equal_the_full_forward_in_every_decoder_family(tmp_path, family):
    path = build_tiny(family, tmp_path / family, n_layers=3, seed=7)
    for kind in ["resid_pre", "attn_out", "mlp_out", "head_out_pos", "head_out"]:
        lm, _, corrupt, metric, cells, clean = _setup(path, kind, "the capital of france is a big city",
                                                      "the capital of spain is a big city")
        full = patch_cells_full(lm, corrupt, cells, clean, metric, 5, Reporter(), kind)
        scale = float(full.abs().max())
        for same_prefix in (0, 3):                               # every position run, or the shared 3 filled in
            fast = patch_cells(lm, corrupt, cells, clean, metric, 5, Reporter(), kind, same_prefix=same_prefix)
            torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5 * scale, msg=f"{family} {kind}")
        assert float(full.std()) > 1e-3 * scale                 # the cells differ: a mix-up would show


def test_suffix_runs_feed_fewer_token_positions_in_batches_no_larger_than_the_batch_size(tiny_llama):
    lm, clean, corrupt, metric, cells, cache = _setup(tiny_llama, "resid_pre")
    n = len(clean)
    fed, steps = [], []
    hook = lm.model.get_input_embeddings().register_forward_pre_hook(lambda _m, args: fed.append(args[0].shape))
    try:
        full = patch_cells_full(lm, corrupt, cells, cache, metric, 4, Reporter(), "resid_pre")
        full_fed, fed[:] = list(fed), []
        reporter = Reporter(on_progress=lambda done, total, msg: steps.append((done, total)))
        fast = patch_cells(lm, corrupt, cells, cache, metric, 4, reporter, "resid_pre", same_prefix=1)
    finally:
        hook.remove()
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)
    assert sum(rows * pos for rows, pos in full_fed) == len(cells) * n
    # one corrupt forward fills the cache; then the cells at position p (past the shared first token) feed p..
    assert fed[0] == (1, n) and sum(r * s for r, s in fed[1:]) == sum(n - c.pos for c in cells if c.pos >= 1)
    assert sum(r * s for r, s in fed) < len(cells) * n and max(r for r, _ in fed) <= 4
    # one progress step per batch, counting cells done, before it runs (so cancellation stops the next batch)
    assert len(steps) == len(fed) - 1 and all(t == len(cells) for _, t in steps)
    assert steps[0][0] == lm.n_layers and [d for d, _ in steps] == sorted(d for d, _ in steps)


def test_cancelling_stops_the_suffix_runs_at_the_next_batch(tiny_llama):
    from neurotrace.lab.errors import Cancelled

    lm, _, corrupt, metric, cells, cache = _setup(tiny_llama, "mlp_out")
    reporter = Reporter()
    reporter.on_progress = lambda done, total, msg: reporter.cancel() if done > 0 else None
    with pytest.raises(Cancelled):
        patch_cells(lm, corrupt, cells, cache, metric, 2, reporter, "mlp_out")


def _cell(component, layer, position, restored, head=None):
    return PatchCell(component=component, layer=layer, position=position, head=head, token=f"t{position}",
                     value=restored, restored=restored)


def test_the_restoring_list_is_signed_merges_resid_runs_cautions_layer0_and_lists_anti_restoring_apart():
    resid = [_cell("resid_pre", layer, 2, r) for layer, r in enumerate([1.0, 0.98, 1.02, 0.99, 1.0, 0.97, 0.3])]
    others = [_cell("mlp_out", 2, 2, 0.6), _cell("attn_out", 4, 3, -0.4), _cell("mlp_out", 1, 3, 0.2),
              _cell("head_out", 3, None, -0.05, head=1), _cell("attn_out", 1, 3, -0.001),
              _cell("resid_pre", 0, 1, 0.02)]
    top, anti = ranked(resid + others, differing={2}, n=4)
    assert [(c.component, c.layer, c.through_layer, c.restored) for c in top] == [
        ("resid_pre", 0, 5, 1.0), ("mlp_out", 2, None, 0.6), ("resid_pre", 6, None, 0.3), ("mlp_out", 1, None, 0.2)]
    assert top[0].note and "input itself" in top[0].note and not any(c.note for c in top[1:])
    assert [(c.component, c.restored) for c in anti] == [("attn_out", -0.4), ("head_out", -0.05)]  # noise left out
    _, anti_none = ranked([_cell("resid_pre", 0, 1, 0.5)], differing={2})
    assert anti_none == []


def test_a_real_patch_lists_the_mlp_cell_the_resid_run_would_hide(lab):
    result = run_patch(PatchRequest(model="fact-gpt2", clean="The capital of France is",
                                    corrupt="The capital of Japan is", target="Paris"), lab=lab)
    restored = [c.restored for c in result.top]
    assert restored == sorted(restored, reverse=True) and all(r > 0 for r in restored)
    assert all(c.restored < -0.01 for c in result.anti)
    first = result.top[0]
    assert (first.component, first.layer, first.token) == ("resid_pre", 0, "France") and first.note
    assert "Caution: the layer-0 residual" in result.summary
    resid_at_subject = [c for c in result.top if c.component == "resid_pre" and c.token == "France"]
    layers = [range(c.layer, (c.through_layer or c.layer) + 1) for c in resid_at_subject]
    assert sum(len(r) for r in layers) == len({x for r in layers for x in r})      # no layer listed twice
    assert any(c.component == "mlp_out" for c in result.top[:3])

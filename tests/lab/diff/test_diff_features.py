"""diff with a dictionary: features whose mean activation changed between the base and the tuned side,
read against the same noise floor as every other measure.

Ground truth is planted: a rank-1 LoRA adapter on the tiny Llama's layer-0 ``down_proj`` writes ``b (m . h)`` into
``blocks.0.hook_mlp_out``, where ``h`` is the MLP's hidden state and ``m`` the mean of ``h`` over the prompts'
tokens (normalised), so the mean change there is ``b |mean h|^2/|mean h|``: along ``b`` and one-signed. Nothing
else changes at that site (the MLP's input is the same on both sides). A dictionary at that site has one
feature along ``b`` (planted: it must change, above the floor) and five along directions orthogonal to ``b``
(controls: their change is exactly zero, while the floor - the adapter with ``b``'s entries shuffled - moves
them). Encoder biases keep every pre-activation positive, so a feature's mean activation moves exactly by the
mean projection of the change.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from neurotrace.lab.diff import DiffRequest, run_diff
from neurotrace.lab.diff.schema import DiffResults
from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.access.hooks import recording
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.lab.model.weights.lora import adapter_state
from neurotrace.lab.sae.dictionary import Dictionary, DictionaryConfig
from neurotrace.testing.errors import raises_lab_error

SITE, HIDDEN = "blocks.0.hook_mlp_out", "blocks.0.mlp.hook_post"
PROMPTS = ["the capital of france is", "the city of rome is in italy", "the king lives in a big house"]
PLANTED, CONTROLS = [0], [1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def planted(tiny_llama: Path, tmp_path_factory) -> tuple[Path, torch.Tensor]:
    """The adapter folder and its direction ``b`` (d_model,)."""
    lab = Lab(LabSettings(runs_dir=tmp_path_factory.mktemp("base") / "runs", threads=1))
    lm = lab.cache.get(ModelRef(model=str(tiny_llama)))
    with recording(lm.model, lm.adapter, [HIDDEN]) as store, torch.no_grad():
        hidden = []
        for p in PROMPTS:
            lm.model(input_ids=torch.tensor([lm.tokenizer(p)["input_ids"]]))
            hidden.append(store[HIDDEN][0])
    m = torch.cat(hidden).mean(0)
    b = torch.randn(lm.d_model, generator=torch.Generator().manual_seed(1))
    b = b / b.norm() * 2.0
    out = tmp_path_factory.mktemp("lora") / "planted"
    out.mkdir()
    save_file({"model.layers.0.mlp.down_proj.lora_A.weight": (m / m.norm())[None].contiguous(),
               "model.layers.0.mlp.down_proj.lora_B.weight": b[:, None].contiguous()},
              str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps({"kind": "lora", "base": str(tiny_llama), "rank": 1,
                                                          "alpha": 1, "target_modules": ["down_proj"]}))
    return out, b


def _dictionary(lab: Lab, model: str, b: torch.Tensor, folder: Path, d_in: int | None = None) -> str:
    """Feature 0 along b at SITE, 1-5 orthogonal to it; encoder biases above every state's projection."""
    d = b.shape[0]
    q, _ = torch.linalg.qr(torch.cat([b[:, None], torch.randn(d, d, generator=torch.Generator().manual_seed(0))], 1))
    w_enc = torch.cat([(b / b.norm())[:, None], q[:, 1:6]], 1)          # (d, 6): planted, then orthogonal controls
    lm = lab.cache.get(ModelRef(model=model))
    norms = []
    for on in (False, True):
        with adapter_state(lm.model, on), recording(lm.model, lm.adapter, [SITE]) as store, torch.no_grad():
            for p in PROMPTS:
                lm.model(input_ids=torch.tensor([lm.tokenizer(p)["input_ids"]]))
                norms.append(store[SITE][0].norm(dim=-1).max())
    bias = 4 * float(torch.stack(norms).max())
    if d_in is not None:
        w_enc, d = w_enc[:d_in], d_in
    cfg = DictionaryConfig(architecture="standard", activation="relu", d_in=d, d_sae=6, d_out=d, site=SITE,
                           out_site=SITE, apply_b_dec_to_input=False)
    Dictionary(cfg, {"W_enc": w_enc, "b_enc": torch.full((6,), bias), "W_dec": w_enc.T.contiguous(),
                     "b_dec": torch.zeros(d)}).save_saelens(folder)
    return folder.name


def test_diff_ranks_the_planted_feature_direction_above_the_floor_and_not_the_controls(tiny_llama, planted, tmp_path):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs", threads=1))
    adapter, b = planted
    model = f"{tiny_llama}+{adapter}"
    ref = _dictionary(lab, model, b, tmp_path / "runs" / "planted")
    result = run_diff(DiffRequest(model=model, prompts=PROMPTS, dictionary=ref, max_new_tokens=0, attention=False,
                                  top_k=4), lab=lab)
    assert [f.feature for f in result.top_features] == PLANTED and result.n_features_above_floor == 1
    rec = DiffResults.model_validate_json((tmp_path / "runs" / result.run_id / "diff_results.json").read_text())
    by = {f.feature: f for f in rec.features}
    assert set(by) == set(PLANTED + CONTROLS) and rec.dictionary_site == SITE
    for f in PLANTED:
        assert abs(by[f].change) > 1e-3 and abs(by[f].change) > 3 * abs(by[f].floor_change)
    for f in CONTROLS:                    # orthogonal to every change the adapter makes here: exactly unchanged
        assert abs(by[f].change) < 1e-5 and not by[f].above_floor and abs(by[f].floor_change) > 1e-4
    assert "tables/features.csv" in " ".join(result.artifacts) and "Dictionary features at" in result.summary
    manifest = json.loads((tmp_path / "runs" / result.run_id / "manifest.json").read_text())
    assert any(v.get("site") == SITE for v in manifest.get("dictionaries", {}).values())


def test_a_dictionary_that_does_not_fit_the_pair_is_refused_by_name(tiny_llama, planted, tmp_path):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs", threads=1))
    model = f"{tiny_llama}+{planted[0]}"
    ref = _dictionary(lab, model, planted[1], tmp_path / "runs" / "narrow", d_in=16)
    with raises_lab_error(InputError) as err:
        run_diff(DiffRequest(model=model, prompts=PROMPTS[:1], dictionary=ref, max_new_tokens=0), lab=lab)
    assert err.value.field == "dictionary" and "does not fit model" in str(err.value)

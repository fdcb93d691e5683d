"""Dictionaries: golden files written by the real sae-lens (scripts/golden/saelens_golden.sh) load with
our reader and give SAELens' encode/decode; our export reads back through SAELens and through our reader;
fit_sae runs load by run id; pickles, paths outside the inputs and misfits are refused by name."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from neurotrace import CaptureRequest, FitSAERequest, run_capture, run_fit_sae
from neurotrace.lab.errors import InputError, NotFound
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.lab.progress import NULL_REPORTER
from neurotrace.lab.sae.architectures.base import SAEConfig
from neurotrace.lab.sae.architectures.registry import build_sae, load_sae
from neurotrace.lab.sae.dictionary import check_fits, load_dictionary
from neurotrace.lab.sae.export import dictionary_from_sae
from neurotrace.lab.sae.saelens import parse_cfg
from neurotrace.lab.seeding import make_generator
from neurotrace.testing.errors import raises_lab_error
from neurotrace.testing.tiny import word_prompts

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "saelens"
SAELENS_FOLDERS = ["standard", "topk", "topk_rescaled", "jumprelu", "batchtopk", "transcoder", "skip_transcoder",
                   "jumprelu_transcoder"]
GEMMA = {"gemmascope_resid": "resid_post/layer_1_width_16k_l0_small",
         "gemmascope_transcoder": "transcoder_all/layer_1_width_16k_l0_small_affine"}
TOL = {"atol": 1e-5, "rtol": 1e-5}


@pytest.fixture
def lab(tmp_path):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    shutil.copytree(GOLDEN, tmp_path / "inputs")          # inputs/ beside the runs dir is an input directory
    return lab


def test_golden_files_name_the_sae_lens_version_that_wrote_them():
    assert (GOLDEN / "VERSION").read_text(encoding="utf-8").startswith("sae-lens 6.54.")


@pytest.mark.parametrize("name", SAELENS_FOLDERS)
def test_saelens_folders_encode_and_decode_as_saelens_does(lab, name):
    d = load_dictionary(lab, name)
    io = load_file(str(GOLDEN / name / "io.safetensors"))
    with torch.no_grad():
        acts = d.encode(io["x"])
        torch.testing.assert_close(acts, io["acts"], **TOL)
        torch.testing.assert_close(d.decode(io["acts"]), io["recon"], **TOL)
        torch.testing.assert_close(d(io["x"]), io["out"], **TOL)
    assert (acts > 0).any() and (acts == 0).any()              # sparse, not trivially empty or dense
    raw = json.loads((GOLDEN / name / "cfg.json").read_text(encoding="utf-8"))
    assert d.cfg.d_in == raw["d_in"] and d.cfg.d_sae == raw["d_sae"] and len(d.cfg.sha256) == 64
    if "transcoder" in name:
        assert (d.cfg.site, d.cfg.out_site, d.cfg.d_out) == ("blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out", 12)
        assert d.cfg.skip == name.startswith("skip")
    else:
        assert d.cfg.site == d.cfg.out_site == "blocks.1.hook_resid_post"
    if name == "topk":
        assert int((acts > 0).sum(-1).max()) <= 4


@pytest.mark.parametrize("name", sorted(GEMMA))
def test_gemma_scope_2_layout_matches_saelens_gemma_3_converter(lab, name):
    d = load_dictionary(lab, f"{name}/{GEMMA[name]}")
    io = load_file(str(GOLDEN / name / "io.safetensors"))
    with torch.no_grad():
        torch.testing.assert_close(d.encode(io["x"]), io["acts"], **TOL)
        torch.testing.assert_close(d(io["x"]), io["out"], **TOL)
    if name == "gemmascope_transcoder":
        assert d.cfg.architecture == "jumprelu_skip_transcoder" and d.cfg.skip
        assert (d.cfg.site, d.cfg.out_site) == ("blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out")
    else:
        assert d.cfg.site == "blocks.1.hook_resid_post" and not d.cfg.apply_b_dec_to_input
    # the cfg SAELens itself derived for it maps to the same sites
    c = parse_cfg(json.loads((GOLDEN / name / "saelens_cfg.json").read_text(encoding="utf-8")), "dictionary")
    assert (c["site"], c["out_site"]) == (d.cfg.site, d.cfg.out_site)


@pytest.mark.parametrize("folder", sorted(p.name for p in GOLDEN.glob("ours_*")))
def test_our_export_reads_back_through_saelens_and_our_reader(lab, folder):
    x = load_file(str(GOLDEN / folder / "inputs.safetensors"))["x"]
    theirs = load_file(str(GOLDEN / folder / "saelens_io.safetensors"))     # SAE.load_from_disk's outputs
    d = load_dictionary(lab, folder)
    with torch.no_grad():
        torch.testing.assert_close(d.encode(x), theirs["acts"], **TOL)
        torch.testing.assert_close(d(x), theirs["out"], **TOL)


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_export_folds_the_input_scale_exactly(tmp_path, arch):
    cfg = SAEConfig(architecture=arch, d_in=8, d_sae=24, k=3 if arch == "topk" else None, input_scale=2.5,
                    site="blocks.0.hook_resid_post")
    sae = build_sae(cfg)
    g = make_generator(3)
    sae.init_weights(g, b_dec=torch.randn(8, generator=g))
    d = dictionary_from_sae(sae)
    h = torch.randn(50, 8, generator=g) * 4
    with torch.no_grad():
        torch.testing.assert_close(d.encode(h), sae.encode(h), **TOL)
        torch.testing.assert_close(d(h), sae(h), **TOL)
        torch.testing.assert_close(d.directions(torch.arange(5)), sae.directions(torch.arange(5)), **TOL)
    d.save_saelens(tmp_path / "runs" / "x")
    again = load_dictionary(Lab(LabSettings(runs_dir=tmp_path / "runs")), "x")
    torch.testing.assert_close(again.W_dec, d.W_dec)


def test_a_fit_sae_run_loads_by_run_id_and_writes_a_saelens_folder(tmp_path, tiny_gpt2):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs"))
    cap = run_capture(CaptureRequest(model=str(tiny_gpt2), sites=["blocks.1.hook_resid_post"],
                                     prompts=word_prompts(12, 8, seed=0)), lab=lab, reporter=NULL_REPORTER)
    res = run_fit_sae(FitSAERequest(capture_run_id=cap.run_id, n_steps=30, batch_size=32, k=4, splice_steps=0),
                      lab=lab, reporter=NULL_REPORTER)
    d = load_dictionary(lab, res.run_id)
    sae = load_sae(lab.store.run_dir(res.run_id))
    h = torch.randn(20, d.cfg.d_in, generator=make_generator(0))
    with torch.no_grad():
        torch.testing.assert_close(d(h), sae(h), **TOL)
    folder = lab.store.run_dir(res.run_id) / "saelens"
    cfg = json.loads((folder / "cfg.json").read_text(encoding="utf-8"))
    assert cfg["architecture"] == "topk" and cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post"
    listed = {a.path: a.sha256 for a in lab.store.manifest(res.run_id).artifacts}
    assert d.cfg.sha256 == listed["saelens/sae_weights.safetensors"] and d.cfg.capture_run_id == cap.run_id
    with lab.cache.lease(ModelRef(model=str(tiny_gpt2))) as lm:
        check_fits(d, lm, "tiny")                                       # fits the model it was fitted on
        shutil.copytree(GOLDEN / "topk", tmp_path / "inputs" / "topk")
        other = load_dictionary(lab, "topk")
        with raises_lab_error(InputError) as err:
            check_fits(other, lm, "tiny")
    assert err.value.field == "dictionary" and "d_in=16" in err.value.message and "tiny" in err.value.message


def test_pickled_weights_are_refused_never_loaded(lab, tmp_path):
    folder = tmp_path / "inputs" / "pickled"
    folder.mkdir()
    shutil.copy(GOLDEN / "topk" / "cfg.json", folder / "cfg.json")
    torch.save(load_file(str(GOLDEN / "topk" / "sae_weights.safetensors")), folder / "sae_weights.pt")
    with raises_lab_error(InputError) as err:
        load_dictionary(lab, "pickled")
    assert err.value.field == "dictionary" and "pickle" in err.value.message
    # a pickle renamed to .safetensors is refused by content, not unpickled
    (folder / "sae_weights.pt").rename(folder / "sae_weights.safetensors")
    with raises_lab_error(InputError) as err:
        load_dictionary(lab, "pickled")
    assert "safetensors" in err.value.message
    with raises_lab_error(InputError):
        load_dictionary(lab, "pickled/sae_weights.pt")


def test_bad_references_get_typed_errors(lab, tmp_path):
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    shutil.copytree(GOLDEN / "topk", outside)
    with raises_lab_error(InputError) as err:
        load_dictionary(lab, str(outside))
    assert err.value.field == "dictionary" and "outside" in err.value.message and str(Path.home()) not in str(err.value)
    broken = tmp_path / "inputs" / "broken"
    shutil.copytree(GOLDEN / "topk", broken)
    w = load_file(str(broken / "sae_weights.safetensors"))
    save_file({k: v for k, v in w.items() if k != "W_dec"}, str(broken / "sae_weights.safetensors"))
    with raises_lab_error(InputError) as err:
        load_dictionary(lab, "broken")
    assert "W_dec" in err.value.message
    with raises_lab_error(NotFound) as err:                        # offline: a release id cannot be fetched
        load_dictionary(lab, "gemma-scope-2-270m-pt-res/layer_6_width_16k_l0_small")
    assert err.value.field == "dictionary"

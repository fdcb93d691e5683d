"""Golden SAELens files: run by scripts/golden/saelens_golden.sh in a throwaway venv with sae-lens 6.54.

For each architecture a small dictionary is built with SAELens' own classes (seeded random weights,
biases and thresholds made non-trivial), saved with SAELens' ``save_model`` (BatchTopK: the training
class's ``save_inference_model``, which writes a JumpReLU), and its outputs on fixed inputs are saved
beside it in ``io.safetensors``: ``x``, ``acts`` = ``encode(x)``, ``recon`` = ``decode(acts)``, ``out`` =
``forward(x)`` (a skip transcoder's forward adds ``x @ W_skip.T``). Folders ``gemmascope_*`` hold a
Gemma Scope 2 layout (``params.safetensors`` + ``config.json``) read through SAELens' ``gemma_3``
converter with the Hub download replaced by the local file. Folders ``ours_*`` (written by neurotrace's
export, scripts/golden/export_ours.py) are loaded with ``SAE.load_from_disk`` and SAELens' outputs on
them saved as ``saelens_io.safetensors``. Run: ``python saelens_golden.py OUT_DIR``.
"""

import json
import sys
from pathlib import Path

import sae_lens
import torch
from sae_lens import (
    SAE,
    BatchTopKTrainingSAE,
    BatchTopKTrainingSAEConfig,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    JumpReLUTranscoder,
    JumpReLUTranscoderConfig,
    SkipTranscoder,
    SkipTranscoderConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
    Transcoder,
    TranscoderConfig,
)
from sae_lens.saes.sae import SAEMetadata
from safetensors.torch import load_file, save_file

D_IN, D_SAE, D_OUT, N = 16, 48, 12, 32
RESID, MLP_IN, MLP_OUT = "blocks.1.hook_resid_post", "blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"


def meta(hook: str, hook_out: str | None = None) -> SAEMetadata:
    kw = {"model_name": "golden-model", "hook_name": hook}
    if hook_out:
        kw["hook_name_out"] = hook_out
    return SAEMetadata(**kw)


@torch.no_grad()
def randomise(sae: torch.nn.Module, gen: torch.Generator, threshold: bool = False) -> None:
    for name, p in sae.named_parameters():
        if name == "threshold":
            p.copy_(torch.rand(p.shape, generator=gen) * 0.8)
        elif name == "W_dec":       # rows of varying norm, so norm-dependent paths are exercised
            w = torch.randn(p.shape, generator=gen)
            p.copy_(w / w.norm(dim=-1, keepdim=True) * (0.5 + torch.rand(p.shape[0], 1, generator=gen)))
        else:
            p.copy_(torch.randn(p.shape, generator=gen) * (0.3 if name.startswith("b_") else 1.0))


@torch.no_grad()
def io(sae: SAE, x: torch.Tensor) -> dict[str, torch.Tensor]:
    acts = sae.encode(x)
    return {"x": x, "acts": acts, "recon": sae.decode(acts), "out": sae(x)}


def write(out: Path, name: str, sae: SAE, x: torch.Tensor) -> None:
    folder = out / name
    sae.save_model(folder)
    loaded = SAE.load_from_disk(folder)          # what a user gets back from the folder
    save_file({k: v.contiguous() for k, v in io(loaded, x).items()}, str(folder / "io.safetensors"))
    print(name, type(loaded).__name__, loaded.cfg.architecture())


def gemma_scope(out: Path, name: str, folder_name: str, d_out: int, affine: bool, gen: torch.Generator,
                x: torch.Tensor) -> None:
    """A Gemma Scope 2 folder read through SAELens' gemma_3 converter (Hub download -> local file)."""
    from sae_lens.loading import pretrained_sae_loaders as loaders

    folder = out / name / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    w = {"w_enc": torch.randn(D_IN, D_SAE, generator=gen), "w_dec": torch.randn(D_SAE, d_out, generator=gen) * 0.3,
         "b_enc": torch.randn(D_SAE, generator=gen) * 0.3, "b_dec": torch.randn(d_out, generator=gen) * 0.3,
         "threshold": torch.rand(D_SAE, generator=gen)}
    if affine:
        w["affine_skip_connection"] = torch.randn(D_IN, d_out, generator=gen) * 0.1
    save_file(w, str(folder / "params.safetensors"))
    layer = 1
    cfg = {"architecture": "jump_relu", "model_name": "gemma-v3-270m-pt"}
    if "transcoder" in folder_name:
        cfg.update(hf_hook_point_in=f"model.layers.{layer}.pre_feedforward_layernorm.output",
                   hf_hook_point_out=f"model.layers.{layer}.post_feedforward_layernorm.output",
                   affine_connection=affine)
    else:
        cfg["hf_hook_point_in"] = f"model.layers.{layer}.output"
    (folder / "config.json").write_text(json.dumps(cfg), encoding="utf-8")

    def local(repo_id: str, filename: str, subfolder: str | None = None, **_: object) -> str:
        return str(out / name / (f"{subfolder}/{filename}" if subfolder else filename))

    loaders.hf_hub_download = local
    loaders.get_safetensors_tensor_shapes = lambda repo, path, **_: {
        k: list(v.shape) for k, v in load_file(local(repo, path)).items()}
    cfg_dict, state, _ = loaders.gemma_3_sae_huggingface_loader("google/gemma-scope-2-270m-pt", folder_name)
    cfg_dict = loaders.handle_config_defaulting(cfg_dict)
    sae = SAE.from_dict(cfg_dict)
    sae.load_state_dict(state)
    save_file({k: v.contiguous() for k, v in io(sae, x).items()}, str(out / name / "io.safetensors"))
    (out / name / "saelens_cfg.json").write_text(json.dumps(sae.cfg.to_dict(), default=str, indent=1), "utf-8")
    print(name, type(sae).__name__, sae.cfg.architecture())


def main(out: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, D_IN, generator=gen) * 2
    (out / "VERSION").write_text(f"sae-lens {sae_lens.__version__}\ntorch {torch.__version__}\n", encoding="utf-8")

    sae = StandardSAE(StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=meta(RESID)))
    randomise(sae, gen)
    write(out, "standard", sae, x)
    for name, rescale in (("topk", False), ("topk_rescaled", True)):
        sae = TopKSAE(TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=4, rescale_acts_by_decoder_norm=rescale,
                                    metadata=meta(RESID)))
        randomise(sae, gen)
        write(out, name, sae, x)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=meta(RESID)))
    randomise(sae, gen)
    write(out, "jumprelu", sae, x)

    train = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=4, metadata=meta(RESID)))
    randomise(train, gen)
    train.topk_threshold = torch.tensor(0.7, dtype=torch.double)
    folder = out / "batchtopk"
    train.save_inference_model(folder)              # SAELens saves a BatchTopK SAE as a JumpReLU
    loaded = SAE.load_from_disk(folder)
    save_file({k: v.contiguous() for k, v in io(loaded, x).items()}, str(folder / "io.safetensors"))
    print("batchtopk ->", type(loaded).__name__)

    for name, cls, cfg_cls in (("transcoder", Transcoder, TranscoderConfig),
                               ("skip_transcoder", SkipTranscoder, SkipTranscoderConfig),
                               ("jumprelu_transcoder", JumpReLUTranscoder, JumpReLUTranscoderConfig)):
        sae = cls(cfg_cls(d_in=D_IN, d_sae=D_SAE, d_out=D_OUT, apply_b_dec_to_input=False,
                          metadata=meta(MLP_IN, MLP_OUT)))
        randomise(sae, gen)
        write(out, name, sae, x)

    gemma_scope(out, "gemmascope_resid", "resid_post/layer_1_width_16k_l0_small", D_IN, False, gen, x)
    gemma_scope(out, "gemmascope_transcoder", "transcoder_all/layer_1_width_16k_l0_small_affine", D_OUT, True,
                gen, x)

    for folder in sorted(out.glob("ours_*")):       # neurotrace's exports, read back by SAELens
        ours = SAE.load_from_disk(folder)
        x_ours = load_file(str(folder / "inputs.safetensors"))["x"]
        save_file({k: v.contiguous() for k, v in io(ours, x_ours).items()}, str(folder / "saelens_io.safetensors"))
        print(folder.name, "read by SAELens as", type(ours).__name__)


if __name__ == "__main__":
    main(Path(sys.argv[1]))

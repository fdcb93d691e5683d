"""The SAELens file format: ``cfg.json`` + ``sae_weights.safetensors``, read and written without sae-lens.

SAELens (6.x) saves an SAE as a folder holding ``sae_weights.safetensors`` (the state dict) and
``cfg.json`` (its config's ``to_dict()``: ``architecture``, ``d_in``, ``d_sae``, ``dtype``,
``apply_b_dec_to_input``, ``normalize_activations``, architecture fields such as ``k``,
``rescale_acts_by_decoder_norm`` or ``d_out``, and ``metadata`` with ``hook_name``, ``model_name``,
``hook_name_out`` for transcoders). Weights: ``W_enc`` (d_in, d_sae), ``b_enc`` (d_sae,), ``W_dec``
(d_sae, d_out), ``b_dec`` (d_out,), plus ``threshold`` (d_sae,) for JumpReLU and ``W_skip`` (d_out, d_in)
for skip transcoders. Pre-6.0 configs keep ``hook_name``/``model_name`` at the top level; both are read.

Inference, as SAELens defines it per architecture (``pre = (x - b_dec * apply_b_dec_to_input) @ W_enc +
b_enc``; transcoders never subtract ``b_dec``, which lives in the output space):

* ``standard`` (ReLU, trained with L1): ``a = relu(pre)``;
* ``topk``: the ``k`` largest entries of ``pre`` (times ``||W_dec[f]||`` when
  ``rescale_acts_by_decoder_norm``), ReLU'd, the rest 0; decoding divides that rescale back out;
* ``jumprelu``: ``a = relu(pre) * (pre > threshold)``; a trained BatchTopK SAE is saved this way
  (its running threshold copied into every feature's ``threshold``), as SAELens does;
* ``transcoder`` / ``skip_transcoder`` / ``jumprelu_transcoder``: ReLU / ReLU + ``x @ W_skip.T`` /
  JumpReLU, from ``hook_name`` to ``hook_name_out``.

``decode(a) = a @ W_dec + b_dec``. ``normalize_activations='expected_average_only_in'`` is a training
setting (SAELens folds its factor into the weights on save), so loading treats it as the identity, as
SAELens' inference classes do; the run-time normalisations (``constant_norm_rescale``,
``layer_norm``) are refused by name.

Hook names are TransformerLens's (``blocks.6.hook_resid_post``), which are also this package's site
names; :func:`site_of` maps the few that differ and HuggingFace-module-style names.
"""

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from neurotrace.lab.errors import InputError

CFG_FILE, WEIGHTS_FILE = "cfg.json", "sae_weights.safetensors"
SAELENS_VERSION = "6.54.0"  # the version whose layout the golden files pin (scripts/golden/saelens_golden.sh)

#: architectures read, and how each encodes: (activation, is_transcoder, has W_skip)
ARCHITECTURES: dict[str, tuple[str, bool, bool]] = {
    "standard": ("relu", False, False), "topk": ("topk", False, False), "jumprelu": ("jumprelu", False, False),
    "batchtopk": ("jumprelu", False, False),
    "transcoder": ("relu", True, False), "skip_transcoder": ("relu", True, True),
    "jumprelu_transcoder": ("jumprelu", True, False), "jumprelu_skip_transcoder": ("jumprelu", True, True),
    "topk_transcoder": ("topk", True, False), "topk_skip_transcoder": ("topk", True, True),
}
_IDENTITY_NORMS = ("none", "expected_average_only_in", None)
_DTYPES = {"float32": torch.float32, "torch.float32": torch.float32, "float16": torch.float16,
           "torch.float16": torch.float16, "bfloat16": torch.bfloat16, "torch.bfloat16": torch.bfloat16,
           "float64": torch.float64, "torch.float64": torch.float64}

# HuggingFace-module-style hook names (``model.layers.6.output``) some releases record, to our sites
_HF_SITE = [(re.compile(r"^(?:model\.)?layers\.(\d+)(?:\.output)?$"), "blocks.{}.hook_resid_post"),
            (re.compile(r"^(?:model\.)?layers\.(\d+)\.post_feedforward_layernorm\.output$"), "blocks.{}.hook_mlp_out"),
            (re.compile(r"^(?:model\.)?layers\.(\d+)\.post_attention_layernorm\.output$"), "blocks.{}.hook_attn_out"),
            (re.compile(r"^(?:model\.)?layers\.(\d+)\.pre_feedforward_layernorm\.output$"),
             "blocks.{}.ln2.hook_normalized"),
            (re.compile(r"^(?:model\.)?layers\.(\d+)\.mlp\.input$"), "blocks.{}.ln2.hook_normalized"),
            (re.compile(r"^(?:model\.)?layers\.(\d+)\.self_attn\.o_proj\.input$"), "blocks.{}.attn.hook_z")]


def site_of(hook_name: str) -> str:
    """Our site name for a SAELens/TransformerLens hook name (TransformerLens names are ours already:
    ``blocks.L.hook_resid_post``, ``blocks.L.hook_mlp_out``, ``blocks.L.ln2.hook_normalized`` (the
    MLP's normalised input, a transcoder's usual input), ...); HuggingFace-style module names map too."""
    name = (hook_name or "").strip()
    for pattern, template in _HF_SITE:
        m = pattern.match(name)
        if m:
            return template.format(m.group(1))
    return name


def hook_of(site: str) -> str:
    """The TransformerLens hook name SAELens records for one of our sites (the same string)."""
    return site


def parse_cfg(raw: dict[str, Any], field: str) -> dict[str, Any]:
    """The fields :class:`~neurotrace.lab.sae.dictionary.DictionaryConfig` needs from a cfg.json dict."""
    if not isinstance(raw, dict):
        raise InputError(field, "cfg.json is not a JSON object", fix="pass a folder SAELens' save_model wrote")
    arch = raw.get("architecture", "standard")
    if arch not in ARCHITECTURES:
        raise InputError(field, f"SAELens architecture {arch!r} is not supported",
                         fix=f"use a dictionary of one of {sorted(ARCHITECTURES)}")
    norm = raw.get("normalize_activations", "none")
    if norm not in _IDENTITY_NORMS:
        raise InputError(field, f"normalize_activations={norm!r} needs a run-time normalisation this loader does "
                         "not apply", fix="fold the normalisation into the weights in SAELens and save again")
    meta = raw.get("metadata") or {}
    hook = meta.get("hook_name") or raw.get("hook_name") or ""
    hook_out = meta.get("hook_name_out") or raw.get("hook_name_out") or hook
    # a HuggingFace module name, when the file records one, says exactly where (SAELens' gemma_3 converter
    # calls the pre-feed-forward norm's output hook_mlp_in, which TransformerLens places before the norm)
    hf_in, hf_out = meta.get("hf_hook_name") or raw.get("hf_hook_name"), meta.get("hf_hook_name_out") or raw.get(
        "hf_hook_name_out")
    if meta.get("hook_head_index") is not None or raw.get("hook_head_index") is not None:
        raise InputError(field, "per-head SAEs (hook_head_index) are not supported", fix="use a whole-site SAE")
    try:
        d_in, d_sae = int(raw["d_in"]), int(raw["d_sae"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(field, "cfg.json lacks an integer d_in or d_sae", fix="pass a SAELens cfg.json") from exc
    activation, transcoder, skip = ARCHITECTURES[arch]
    k = raw.get("k")
    return {"architecture": arch, "activation": activation, "transcoder": transcoder, "skip": skip,
            "d_in": d_in, "d_sae": d_sae, "d_out": int(raw.get("d_out") or d_in) if transcoder else d_in,
            "k": int(k) if activation == "topk" and k is not None else None,
            "rescale_acts_by_decoder_norm": bool(raw.get("rescale_acts_by_decoder_norm", False)),
            "apply_b_dec_to_input": bool(raw.get("apply_b_dec_to_input", not transcoder)) and not transcoder,
            "hook_name": hook, "hook_name_out": hook_out, "site": site_of(hf_in or hook),
            "out_site": site_of(hf_out or (hf_in if hook_out == hook else None) or hook_out),
            "model": str(meta.get("model_name") or raw.get("model_name") or ""),
            "dtype": _DTYPES.get(str(raw.get("dtype", "float32")), torch.float32)}


def expected_shapes(c: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape the config implies (``threshold`` for JumpReLU, ``W_skip`` for skips)."""
    shapes = {"W_enc": (c["d_in"], c["d_sae"]), "b_enc": (c["d_sae"],), "W_dec": (c["d_sae"], c["d_out"]),
              "b_dec": (c["d_out"],)}
    if c["activation"] == "jumprelu":
        shapes["threshold"] = (c["d_sae"],)
    if c["skip"]:
        shapes["W_skip"] = (c["d_out"], c["d_in"])
    return shapes


def check_tensors(c: dict[str, Any], tensors: dict[str, Tensor], field: str) -> dict[str, Tensor]:
    """The tensors the architecture needs, as float32, after checking names and shapes."""
    out = {}
    for name, shape in expected_shapes(c).items():
        if name not in tensors:
            raise InputError(field, f"the weights lack {name!r} (a {c['architecture']} dictionary needs "
                             f"{sorted(expected_shapes(c))})", fix="pass the weights file that belongs to cfg.json")
        if tuple(tensors[name].shape) != shape:
            raise InputError(field, f"{name} has shape {tuple(tensors[name].shape)}, cfg.json implies {shape}",
                             fix="pass the weights file that belongs to cfg.json")
        out[name] = tensors[name].to(torch.float32)
    return out


def to_cfg(c: dict[str, Any], extra_metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """A cfg.json dict SAELens (6.x) loads with ``SAE.load_from_disk`` for a dictionary of config ``c``."""
    cfg: dict[str, Any] = {"architecture": c["architecture"], "d_in": c["d_in"], "d_sae": c["d_sae"],
                           "dtype": "float32", "device": "cpu",
                           "apply_b_dec_to_input": bool(c["apply_b_dec_to_input"]),
                           "normalize_activations": "none", "reshape_activations": "none"}
    if c["activation"] == "topk":
        cfg.update(k=c["k"], rescale_acts_by_decoder_norm=bool(c.get("rescale_acts_by_decoder_norm", False)))
    if c["transcoder"]:
        cfg["d_out"] = c["d_out"]
    meta = {"sae_lens_version": SAELENS_VERSION, "sae_lens_training_version": SAELENS_VERSION,
            "model_name": c.get("model", ""), "hook_name": hook_of(c["site"]), "hook_head_index": None,
            "prepend_bos": True, "exclude_special_tokens": True}
    if c["transcoder"]:
        meta["hook_name_out"] = hook_of(c["out_site"])
    meta.update(extra_metadata or {})
    cfg["metadata"] = meta
    return cfg


def write_folder(directory: Path, cfg: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    """Write ``cfg.json`` and ``sae_weights.safetensors`` into ``directory``, each through a temp file."""
    from safetensors.torch import save

    from neurotrace.lab.runs import atomic_write_bytes

    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(directory / WEIGHTS_FILE, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))
    atomic_write_bytes(directory / CFG_FILE, (json.dumps(cfg, indent=2) + "\n").encode("utf-8"))

"""Architecture adapters: where each site lives inside a HuggingFace model.

Tools speak TransformerLens's site vocabulary and never write ``hasattr`` chains:

=============================  =================================================================
site                           meaning (hooked as)
=============================  =================================================================
``hook_embed``                 token embeddings (output of the token-embedding module)
``blocks.{L}.hook_resid_pre``  residual stream entering block L (input of the block)
``blocks.{L}.hook_resid_post`` residual stream leaving block L (output of the block)
``blocks.{L}.hook_attn_out``   attention's contribution in block L (output of the attention path)
``blocks.{L}.hook_mlp_out``    MLP's contribution in block L (output of the MLP path)
``blocks.{L}.ln2.hook_normalized``  the MLP's normalised input (input of the MLP module; a
                               transcoder's usual input; decoders and GPT-style models only)
``blocks.{L}.mlp.hook_post``   MLP hidden activations after the nonlinearity, ``d_mlp`` wide
                               (the input of the MLP's output projection: "neurons")
``blocks.{L}.attn.hook_z``     every head's output before the attention output projection,
                               concatenated (``n_heads * d_head``; TransformerLens's ``hook_z``
                               flattened): zeroing head h there removes exactly its contribution
=============================  =================================================================

This module is the one table of architecture knowledge (like pyvene's per-family mappings). Each
:class:`ArchAdapter` names module paths (dotted, ``{L}`` for the layer) for one family. For
post-LN encoders (BERT, RoBERTa) ``attn_out`` and ``mlp_out`` are the dense projections before the
residual add and LayerNorm. Decoders that normalise each sublayer's output before adding it (Gemma 2/3,
OLMo 2: ``post_attention_layernorm`` and ``post_feedforward_layernorm``) hook those norms, as
TransformerLens does (``ln1_post`` / ``ln2_post`` before ``hook_attn_out`` / ``hook_mlp_out``): the hooked
value is what the residual stream receives (``post_norms`` says so).
"""

import re
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from neurotrace.lab.errors import InputError

SiteKind = Literal["embed", "resid_pre", "resid_post", "attn_out", "mlp_out", "mlp_post", "attn_z", "mlp_in"]
HookMode = Literal["output", "input"]
SITE_RE = re.compile(r"^blocks\.(\d+)\.(hook_resid_pre|hook_resid_post|hook_attn_out|hook_mlp_out|mlp\.hook_post|"
                     r"attn\.hook_z|ln2\.hook_normalized)$")
_SITE_KIND = {"hook_resid_pre": "resid_pre", "hook_resid_post": "resid_post", "hook_attn_out": "attn_out",
              "hook_mlp_out": "mlp_out", "mlp.hook_post": "mlp_post", "attn.hook_z": "attn_z",
              "ln2.hook_normalized": "mlp_in"}
SITE_HELP = ("use hook_embed or blocks.{L}.hook_resid_pre|hook_resid_post|hook_attn_out|hook_mlp_out|mlp.hook_post|"
             "attn.hook_z|ln2.hook_normalized")


@dataclass(frozen=True, kw_only=True)
class ArchAdapter:
    """Module paths for one architecture family (``{L}`` is replaced by the layer index).

    Every site of the vocabulary above resolves through these named paths; ``blocks.{L}.attn.hook_z``
    (all heads' outputs, concatenated, before the output projection) is the input of ``attn_proj``.
    """

    family: str
    model_types: tuple[str, ...]
    lm_kind: Literal["causal", "masked"]
    embed: str            # token embedding module (its output is hook_embed, scaled where the model scales)
    blocks: str           # the ModuleList of blocks
    attn_out: str         # module whose output is attention's contribution (hook_attn_out)
    attn_proj: str        # attention output projection; its input is attn.hook_z (n_heads * d_head)
    attn_module: str      # the attention module (whose attention_mask an attention knockout rewrites)
    mlp_out: str          # module whose output is the MLP's contribution (hook_mlp_out)
    mlp_down: str         # MLP output projection; its input is mlp.hook_post (neurons)
    final_norm: str | None
    unembed: str          # module mapping the final residual to logits
    base: str             # the body (embeddings + blocks + final norm) returning last_hidden_state
    head: tuple[str, ...]  # modules applied in order to the body's output to get logits
    post_norms: bool = False  # attn_out / mlp_out are norms of the attention / MLP outputs (attn_proj / mlp_down)
    mlp: str = ""             # the MLP module; its input is ln2.hook_normalized ('' = that site is not offered)

    def logits_at(self, model: nn.Module, hidden: Any) -> Any:
        """Apply the LM head to body outputs ``hidden`` (any leading shape, last dim d_model)."""
        for path in self.head or (self.unembed,):
            hidden = self.module(model, path)(hidden)
        return hidden

    def module(self, model: nn.Module, path: str, layer: int | None = None) -> nn.Module:
        if layer is not None:
            path = path.replace("{L}", str(layer))
        try:
            return model.get_submodule(path)
        except AttributeError as exc:
            raise InputError("model", f"{self.family} adapter found no module {path!r}: {exc}",
                             fix="the checkpoint's layout differs from the adapter table; report it") from exc

    def n_layers(self, model: nn.Module) -> int:
        return len(self.module(model, self.blocks))

    def site(self, model: nn.Module, site: str) -> tuple[nn.Module, HookMode]:
        """Resolve a site name to (module, 'output'|'input')."""
        if site == "hook_embed":
            return self.module(model, self.embed), "output"
        m = SITE_RE.match(site)
        if not m:
            raise InputError("site", f"unknown site {site!r}", fix=SITE_HELP)
        layer, name = int(m.group(1)), m.group(2)
        n = self.n_layers(model)
        if layer >= n:
            raise InputError("layer", f"layer {layer} is out of range ({n} layers)", fix=f"use 0..{n - 1}")
        if _SITE_KIND[name] == "mlp_in" and not self.mlp:
            raise InputError("site", f"{site!r}: the {self.family} adapter has no MLP-input site", fix=SITE_HELP)
        path, mode = {"resid_pre": (f"{self.blocks}.{{L}}", "input"), "resid_post": (f"{self.blocks}.{{L}}", "output"),
                      "attn_out": (self.attn_out, "output"), "mlp_out": (self.mlp_out, "output"),
                      "mlp_post": (self.mlp_down, "input"), "attn_z": (self.attn_proj, "input"),
                      "mlp_in": (self.mlp, "input")}[_SITE_KIND[name]]
        return self.module(model, path, layer), mode  # type: ignore[return-value]


def site_name(kind: SiteKind, layer: int | None = None) -> str:
    """The site string for ``kind`` at ``layer`` (``hook_embed`` takes no layer)."""
    if kind == "embed":
        return "hook_embed"
    suffix = {v: k for k, v in _SITE_KIND.items()}[kind]
    return f"blocks.{layer}.{suffix}"


def _decoder(family: str, model_types: tuple[str, ...], root: str = "model", post_norms: bool = False) -> ArchAdapter:
    """The Llama-style layout shared by Llama, Mistral, Qwen 2/3, Gemma 1/2/3, OLMo 1/2 and Phi-3; with
    ``post_norms`` (Gemma 2/3, OLMo 2) each sublayer's output norm is its contribution to the residual."""
    layer = f"{root}.layers.{{L}}"
    attn_out, mlp_out = ((f"{layer}.post_attention_layernorm", f"{layer}.post_feedforward_layernorm") if post_norms
                         else (f"{layer}.self_attn", f"{layer}.mlp"))
    return ArchAdapter(family=family, model_types=model_types, lm_kind="causal", embed=f"{root}.embed_tokens",
                       blocks=f"{root}.layers", attn_out=attn_out, attn_proj=f"{layer}.self_attn.o_proj",
                       attn_module=f"{layer}.self_attn", mlp_out=mlp_out, mlp_down=f"{layer}.mlp.down_proj",
                       final_norm=f"{root}.norm", unembed="lm_head", base=root, head=("lm_head",), post_norms=post_norms,
                       mlp=f"{layer}.mlp")


ADAPTERS: tuple[ArchAdapter, ...] = (
    ArchAdapter(family="gpt2", model_types=("gpt2",), lm_kind="causal", embed="transformer.wte", blocks="transformer.h",
                attn_out="transformer.h.{L}.attn", attn_proj="transformer.h.{L}.attn.c_proj",
                attn_module="transformer.h.{L}.attn", mlp_out="transformer.h.{L}.mlp",
                mlp_down="transformer.h.{L}.mlp.c_proj", final_norm="transformer.ln_f", unembed="lm_head",
                base="transformer", head=("lm_head",), mlp="transformer.h.{L}.mlp"),
    ArchAdapter(family="gpt_neox", model_types=("gpt_neox",), lm_kind="causal", embed="gpt_neox.embed_in",
                blocks="gpt_neox.layers", attn_out="gpt_neox.layers.{L}.attention",
                attn_proj="gpt_neox.layers.{L}.attention.dense", attn_module="gpt_neox.layers.{L}.attention",
                mlp_out="gpt_neox.layers.{L}.mlp", mlp_down="gpt_neox.layers.{L}.mlp.dense_4h_to_h",
                final_norm="gpt_neox.final_layer_norm", unembed="lm_head", base="gpt_neox", head=("lm_head",),
                mlp="gpt_neox.layers.{L}.mlp"),
    _decoder("llama", ("llama", "mistral", "qwen2", "qwen3", "gemma", "olmo", "phi3")),
    _decoder("gemma2", ("gemma2",), post_norms=True),
    _decoder("gemma3", ("gemma3_text",), post_norms=True),
    _decoder("olmo2", ("olmo2",), post_norms=True),
    _decoder("gemma3", ("gemma3",), root="model.language_model", post_norms=True),
    ArchAdapter(family="bert", model_types=("bert",), lm_kind="masked", embed="bert.embeddings.word_embeddings",
                blocks="bert.encoder.layer", attn_out="bert.encoder.layer.{L}.attention.output.dense",
                attn_proj="bert.encoder.layer.{L}.attention.output.dense",
                attn_module="bert.encoder.layer.{L}.attention.self", mlp_out="bert.encoder.layer.{L}.output.dense",
                mlp_down="bert.encoder.layer.{L}.output.dense", final_norm=None, unembed="cls", base="bert",
                head=("cls",)),
    ArchAdapter(family="roberta", model_types=("roberta", "xlm-roberta"), lm_kind="masked",
                embed="roberta.embeddings.word_embeddings", blocks="roberta.encoder.layer",
                attn_out="roberta.encoder.layer.{L}.attention.output.dense",
                attn_proj="roberta.encoder.layer.{L}.attention.output.dense",
                attn_module="roberta.encoder.layer.{L}.attention.self",
                mlp_out="roberta.encoder.layer.{L}.output.dense", mlp_down="roberta.encoder.layer.{L}.output.dense",
                final_norm=None, unembed="lm_head", base="roberta", head=("lm_head",)),
    ArchAdapter(family="modernbert", model_types=("modernbert",), lm_kind="masked", embed="model.embeddings.tok_embeddings",
                blocks="model.layers", attn_out="model.layers.{L}.attn", attn_proj="model.layers.{L}.attn.Wo",
                attn_module="model.layers.{L}.attn", mlp_out="model.layers.{L}.mlp", mlp_down="model.layers.{L}.mlp.Wo",
                final_norm="model.final_norm", unembed="decoder", base="model", head=("head", "decoder")),
)


def adapter_for(config: Any) -> ArchAdapter:
    """The adapter for a transformers config (by ``model_type``)."""
    model_type = getattr(config, "model_type", None)
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter
    supported = sorted(t for a in ADAPTERS for t in a.model_types)
    raise InputError("model", f"architecture {model_type!r} has no adapter",
                     fix=f"use a model of a supported type: {', '.join(supported)}")


def norm_eps(norm: nn.Module) -> float:
    """The epsilon of a LayerNorm / RMSNorm module, whatever its family calls it (1e-5 when it names none)."""
    for name in ("eps", "variance_epsilon", "epsilon"):
        value = getattr(norm, name, None)
        if isinstance(value, float):
            return value
    return 1e-5

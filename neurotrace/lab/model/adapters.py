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
``blocks.{L}.mlp.hook_post``   MLP hidden activations after the nonlinearity, ``d_mlp`` wide
                               (the input of the MLP's output projection: "neurons")
=============================  =================================================================

Each :class:`ArchAdapter` names module paths (dotted, ``{L}`` for the layer) for one family. For
post-LN encoders (BERT, RoBERTa) ``attn_out`` and ``mlp_out`` are the dense projections before the
residual add and LayerNorm.
"""

import re
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from neurotrace.lab.errors import InputError

SiteKind = Literal["embed", "resid_pre", "resid_post", "attn_out", "mlp_out", "mlp_post"]
HookMode = Literal["output", "input"]
SITE_RE = re.compile(r"^blocks\.(\d+)\.(hook_resid_pre|hook_resid_post|hook_attn_out|hook_mlp_out|mlp\.hook_post)$")
_SITE_KIND = {"hook_resid_pre": "resid_pre", "hook_resid_post": "resid_post", "hook_attn_out": "attn_out",
              "hook_mlp_out": "mlp_out", "mlp.hook_post": "mlp_post"}


@dataclass(frozen=True)
class ArchAdapter:
    """Module paths for one architecture family (``{L}`` is replaced by the layer index)."""

    family: str
    model_types: tuple[str, ...]
    kind: Literal["causal", "masked"]
    embed: str            # token embedding module
    blocks: str           # the ModuleList of blocks
    attn_out: str         # module whose output is attention's contribution
    mlp_out: str          # module whose output is the MLP's contribution
    mlp_down: str         # MLP output projection; its input is mlp_post (neurons)
    final_norm: str | None
    unembed: str          # module mapping the final residual to logits
    base: str = ""        # the body (embeddings + blocks + final norm) returning last_hidden_state
    head: tuple[str, ...] = ()  # modules applied in order to the body's output to get logits

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
            raise InputError("site", f"unknown site {site!r}",
                             fix="use hook_embed or blocks.{L}.hook_resid_pre|hook_resid_post|hook_attn_out|"
                                 "hook_mlp_out|mlp.hook_post")
        layer, name = int(m.group(1)), m.group(2)
        n = self.n_layers(model)
        if layer >= n:
            raise InputError("layer", f"layer {layer} is out of range ({n} layers)", fix=f"use 0..{n - 1}")
        kind = _SITE_KIND[name]
        block = f"{self.blocks}.{layer}"
        if kind == "resid_pre":
            return self.module(model, block), "input"
        if kind == "resid_post":
            return self.module(model, block), "output"
        if kind == "attn_out":
            return self.module(model, self.attn_out, layer), "output"
        if kind == "mlp_out":
            return self.module(model, self.mlp_out, layer), "output"
        return self.module(model, self.mlp_down, layer), "input"


def site_name(kind: SiteKind, layer: int | None = None) -> str:
    """The site string for ``kind`` at ``layer`` (``hook_embed`` takes no layer)."""
    if kind == "embed":
        return "hook_embed"
    suffix = {v: k for k, v in _SITE_KIND.items()}[kind]
    return f"blocks.{layer}.{suffix}"


ADAPTERS: tuple[ArchAdapter, ...] = (
    ArchAdapter("gpt2", ("gpt2",), "causal", "transformer.wte", "transformer.h", "transformer.h.{L}.attn",
                "transformer.h.{L}.mlp", "transformer.h.{L}.mlp.c_proj", "transformer.ln_f", "lm_head",
                "transformer", ("lm_head",)),
    ArchAdapter("gpt_neox", ("gpt_neox",), "causal", "gpt_neox.embed_in", "gpt_neox.layers",
                "gpt_neox.layers.{L}.attention", "gpt_neox.layers.{L}.mlp",
                "gpt_neox.layers.{L}.mlp.dense_4h_to_h", "gpt_neox.final_layer_norm", "lm_head", "gpt_neox",
                ("lm_head",)),
    ArchAdapter("llama", ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "phi3"), "causal",
                "model.embed_tokens", "model.layers", "model.layers.{L}.self_attn", "model.layers.{L}.mlp",
                "model.layers.{L}.mlp.down_proj", "model.norm", "lm_head", "model", ("lm_head",)),
    ArchAdapter("bert", ("bert",), "masked", "bert.embeddings.word_embeddings", "bert.encoder.layer",
                "bert.encoder.layer.{L}.attention.output.dense", "bert.encoder.layer.{L}.output.dense",
                "bert.encoder.layer.{L}.output.dense", None, "cls", "bert", ("cls",)),
    ArchAdapter("roberta", ("roberta", "xlm-roberta"), "masked", "roberta.embeddings.word_embeddings",
                "roberta.encoder.layer", "roberta.encoder.layer.{L}.attention.output.dense",
                "roberta.encoder.layer.{L}.output.dense", "roberta.encoder.layer.{L}.output.dense", None,
                "lm_head", "roberta", ("lm_head",)),
    ArchAdapter("modernbert", ("modernbert",), "masked", "model.embeddings.tok_embeddings", "model.layers",
                "model.layers.{L}.attn", "model.layers.{L}.mlp", "model.layers.{L}.mlp.Wo",
                "model.final_norm", "decoder", "model", ("head", "decoder")),
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

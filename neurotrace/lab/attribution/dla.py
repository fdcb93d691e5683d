"""Direct logit attribution (DLA) with the final norm's scale frozen from the clean run.

The final residual at the scored position is a sum of components, ``x = embed + pos_embed +
sum_L (attn_out_L + mlp_out_L)`` (a ``remainder`` absorbs anything else, e.g. post-block norms). With the
final norm's scale ``s`` frozen at its clean value, the norm is affine: ``norm(x) = w * P x / s + b``
(``P`` removes the mean for LayerNorm, is the identity for RMSNorm). So the metric direction
``u`` (unembedding row of the target, minus the mean row for a centred logit, or minus the contrast
token's row for a logit difference) gives each component ``c`` the share ``g . c`` with
``g = P (w * u) / s``, and the shares add up exactly: ``sum_c g . c + u . b + bias_U = metric``. This is
TransformerLens' ``apply_ln_to_stack`` + ``logit_attrs`` on a model with folded LayerNorm
(``enable_compatibility_mode``).

Heads and neurons refine the attention and MLP outputs: head ``h``'s share is ``z_h . (W_O^T g)_h``
(``z`` = the heads' outputs before the output projection, ``hook_z``) and the projection bias takes the
rest; neuron ``i``'s share is ``post_i (W_out g)_i``. The vectors ``W_O^T g`` and ``W_out g`` are read as
gradients of ``proj(z) . g`` through the model's own projection modules, so no weight layout is assumed.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from neurotrace.lab.errors import InputError
from neurotrace.lab.model.access.adapters import norm_eps, site_name
from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.access.sites import attn_module
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.model.weights.placement import materialised


@dataclass
class FrozenNorm:
    """The final norm as an affine map at one position: ``w * P x / scale + b``."""

    center: bool
    weight: Tensor      # (d,)
    bias: Tensor        # (d,)
    scale: float

    def project(self, u: Tensor) -> Tensor:
        """``g`` with ``g . c`` = the logit share of component ``c`` along unembedding direction ``u``."""
        g = self.weight * u / self.scale
        return g - g.mean() if self.center else g


@torch.no_grad()
def frozen_norm(lm: LoadedModel, x: Tensor) -> FrozenNorm:
    """Probe the final norm with ``+-v`` (mean 0, rms 1) for its weight and bias; freeze its scale at ``x``."""
    if not lm.adapter.final_norm:
        raise InputError("model", f"{lm.ref.model} has no final norm before its head",
                         fix="attribute needs a pre-norm causal LM (GPT-2, Llama, NeoX families)")
    return freeze(lm.adapter.module(lm.model, lm.adapter.final_norm), x, "final norm")


@torch.no_grad()
def freeze(norm: torch.nn.Module, x: Tensor, what: str) -> FrozenNorm:
    """``norm`` (a LayerNorm or RMSNorm) as an affine map, its scale frozen at input ``x`` (d,)."""
    d, eps = x.shape[-1], norm_eps(norm)
    v = torch.ones(d, dtype=x.dtype, device=x.device)
    v[1::2] = -1
    plus, minus = norm(v[None])[0].float(), norm(-v[None])[0].float()
    bias = (plus + minus) / 2
    weight = (plus - minus) / (2 * v.float()) * (1 + eps) ** 0.5
    center = bool(torch.allclose(norm(torch.ones_like(v)[None])[0].float(), bias, atol=1e-5))
    xf = x.float()
    scale = float(((xf - xf.mean()).pow(2).mean() if center else xf.pow(2).mean()).add(eps).sqrt())
    frozen = FrozenNorm(center, weight, bias, scale)
    expect = norm(x[None])[0].float()
    got = frozen.weight * ((xf - xf.mean()) if center else xf) / scale + bias
    if not torch.allclose(got, expect, atol=1e-4 * (1 + float(expect.abs().max()))):
        raise InputError("model", f"the {what} is neither a LayerNorm nor an RMSNorm",
                         fix="attribute supports models whose norms are LayerNorm or RMSNorm")
    return frozen


def unembedding(lm: LoadedModel) -> tuple[Tensor, Tensor | None]:
    """(W_U (vocab, d), b_U or None) of a causal LM whose head is one linear map."""
    head = lm.adapter.head or (lm.adapter.unembed,)
    module = lm.adapter.module(lm.model, head[-1])
    weight = getattr(module, "weight", None)
    if lm.lm_kind != "causal" or len(head) != 1 or weight is None or weight.shape[-1] != lm.d_model:
        raise InputError("model", f"{lm.ref.model}'s head is not a single unembedding matrix",
                         fix="attribute needs a causal LM whose logits are final_norm(x) @ W_U")
    if weight.device.type == "meta":  # offloaded (device_map): a copy of the weights its hook brings in
        with materialised(module):
            return module.weight.float().clone(), (None if module.bias is None else module.bias.float().clone())
    return weight.float(), (None if getattr(module, "bias", None) is None else module.bias.float())


def capture_sites(n_layers: int) -> list[str]:
    sites = ["hook_embed", site_name("resid_pre", 0), site_name("resid_post", n_layers - 1)]
    for layer in range(n_layers):
        sites += [site_name("attn_out", layer), site_name("mlp_out", layer), site_name("mlp_post", layer),
                  f"blocks.{layer}.attn.hook_z"]
    return sites


@torch.no_grad()
def capture(lm: LoadedModel, ids: Tensor, pos: int) -> tuple[dict[str, Tensor], Tensor]:
    """Every site of :func:`capture_sites` at position ``pos`` (width,) and the logits there (vocab,)."""
    store: dict[str, Tensor] = {}

    def save(act: Tensor, site: str) -> None:
        store[site] = act[0, pos].detach().float().clone()

    with hooked(lm.model, lm.adapter, {s: save for s in capture_sites(lm.n_layers)}):
        logits = lm.model(input_ids=ids[None].to(lm.device)).logits[0, pos].float()
    return store, logits


@dataclass
class Attribution:
    components: dict[str, float]     # embed, pos_embed, L{l}.attn, L{l}.mlp (+ remainder), in residual order
    heads: Tensor                     # (layers, heads)
    head_bias: Tensor                 # (layers,) output-projection bias share
    neurons: Tensor                   # (layers, d_mlp)
    constant: float                   # u . b_norm + bias_U
    metric: float                     # the model's own metric value


def _through(module: torch.nn.Module, x: Tensor, g: Tensor) -> tuple[Tensor, float]:
    """(d(module(x) . g)/dx, module(0) . g): the input-side direction of ``g`` and the bias share."""
    param = next(module.parameters())
    with torch.enable_grad():
        z = x.detach().to(param.dtype)[None].requires_grad_(True)
        (module(z)[0].float() @ g).backward()
    with torch.no_grad():
        bias = float(module(torch.zeros_like(z))[0].float() @ g)
    return z.grad[0].float(), bias


def _after_norm(lm: LoadedModel, site: str, layer: int, proj: torch.nn.Module, x: Tensor, g: Tensor
                ) -> tuple[Tensor, float]:
    """The direction ``g`` seen from the output of ``proj`` (input ``x``) and the norm's bias share: ``g``
    itself, unless the model normalises the sublayer's output before the residual add (Gemma 2/3, OLMo 2),
    whose norm is then frozen at this run's value (exact here, like the final norm)."""
    if not lm.adapter.post_norms:
        return g, 0.0
    with torch.no_grad():
        out = proj(x.to(next(proj.parameters()).dtype)[None])[0].float()
    norm = freeze(lm.adapter.module(lm.model, getattr(lm.adapter, site), layer), out, f"{site} norm of layer {layer}")
    return norm.project(g), float(norm.bias @ g)


def attribute(lm: LoadedModel, acts: dict[str, Tensor], norm: FrozenNorm, u: Tensor, constant: float,
              metric: float) -> Attribution:
    g = norm.project(u)
    n_layers, n_heads = lm.n_layers, int(getattr(lm.config, "n_head", None) or lm.config.num_attention_heads)
    embed, first = acts["hook_embed"], acts[site_name("resid_pre", 0)]
    scaled = float(first @ embed) / max(float(embed @ embed), 1e-30)
    if torch.allclose(first, embed * scaled, atol=1e-6 * (1 + float(first.abs().max()))):
        comps = {"embed": float(first @ g)}          # no positional embedding (the embedding may be scaled)
    else:
        comps = {"embed": float(embed @ g), "pos_embed": float((first - embed) @ g)}
    total = first.clone()
    heads, head_bias, neurons = torch.zeros(n_layers, n_heads), torch.zeros(n_layers), []
    for layer in range(n_layers):
        attn, mlp = acts[site_name("attn_out", layer)], acts[site_name("mlp_out", layer)]
        comps[f"L{layer}.attn"], comps[f"L{layer}.mlp"] = float(attn @ g), float(mlp @ g)
        total += attn + mlp
        z, proj = acts[f"blocks.{layer}.attn.hook_z"], attn_module(lm, layer, 0)
        g_attn, norm_bias = _after_norm(lm, "attn_out", layer, proj, z, g)
        grad, head_bias[layer] = _through(proj, z, g_attn)
        head_bias[layer] += norm_bias
        heads[layer] = (z * grad).view(n_heads, -1).sum(-1)
        post = acts[site_name("mlp_post", layer)]
        down = lm.adapter.module(lm.model, lm.adapter.mlp_down, layer)
        neurons.append(post * _through(down, post, _after_norm(lm, "mlp_out", layer, down, post, g)[0])[0])
    rest = acts[site_name("resid_post", n_layers - 1)] - total
    if rest.abs().max() > 1e-4 * (1 + float(total.abs().max())):
        comps["remainder"] = float(rest @ g)
    return Attribution(comps, heads, head_bias, torch.stack(neurons), constant, metric)

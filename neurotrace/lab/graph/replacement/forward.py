"""The local replacement model of one prompt (Ameisen et al. 2025; circuit-tracer), on a HuggingFace model.

Freeze, at their values on the real forward, every attention pattern and every norm's denominator
(LayerNorm / RMSNorm scale), and cut every MLP: its output is kept as a constant and replaced, as a
*source*, by its transcoder's active features (activation x decoder row) plus an **error** vector (the
MLP's real output minus the transcoder's reconstruction) at each (layer, position). What is left between
the sources (token embeddings, features, errors) and the readers (a feature's encoder row at its MLP input,
a logit's demeaned unembedding row at the final norm's output) is linear, so one backward pass per reader
gives its *direct effect* from every source: ``A[t, s] = a_s W_dec[s] . d(reader_t)/d(out_layer(s))``.

How the freezes are made on an unmodified HF model, inside :func:`replacement_forward` (hooks removed on exit):

* attention: a registered attention function (``neurotrace_frozen``) that is eager attention with the
  softmax output detached (values still carry gradient); the configs' implementation is switched for the
  duration and restored;
* norms: a forward hook on every ``*Norm`` module returns ``y.detach() + w * P(x - x.detach()) / s0``, which
  has the real value and the frozen-denominator Jacobian (``P`` centres for LayerNorm); ``w`` and whether the
  norm centres are probed once with ``+-1`` vectors;
* MLPs: a forward hook on the MLP module returns ``out.detach() + skip(x) - skip(x).detach()`` (``x * 0``
  without a skip), so the gradient stops while the MLP input stays on the graph (where a feature's encoder
  row is injected); the MLP itself runs once, on the first copy, without a graph (its output is a constant).

The forward runs the model's body on ``batch`` copies of the prompt once; each backward pass
(``torch.autograd.grad`` with ``retain_graph``) injects one reader per copy, so a batch of readers costs one
backward, which starts at the batch's highest reader layer (the weights need no gradient). Rows follow circuit-tracer's node order: features (by layer, position, index), errors (layer-major),
tokens; position 0 (the BOS) has no features or errors, as in circuit-tracer.
"""

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor, nn
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from neurotrace.lab.graph.replacement.transcoders import TranscoderSet
from neurotrace.lab.model.access.adapters import norm_eps
from neurotrace.lab.model.weights.loading import LoadedModel

FROZEN = "neurotrace_frozen"


def _frozen_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                      scaling: float | None = None, dropout: float = 0.0, softcap: float | None = None, **_: object
                      ) -> tuple[Tensor, Tensor]:
    """Eager attention whose pattern carries no gradient (query, key: (batch, heads, pos, d_head))."""
    groups = query.shape[1] // key.shape[1]
    if groups > 1:                                          # grouped-query attention
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scores = query @ key.transpose(-1, -2) * (query.shape[-1] ** -0.5 if scaling is None else scaling)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        scores = scores + attention_mask[..., : key.shape[-2]]
    pattern = torch.softmax(scores.float(), dim=-1).to(value.dtype).detach()
    return (pattern @ value).transpose(1, 2).contiguous(), pattern


ALL_ATTENTION_FUNCTIONS.register(FROZEN, _frozen_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(FROZEN, eager_mask)


@contextmanager
def _attention_frozen(model: nn.Module) -> Iterator[None]:
    configs = {id(c): c for m in model.modules() if (c := getattr(m, "config", None)) is not None
               and hasattr(c, "_attn_implementation")}
    before = {k: c._attn_implementation for k, c in configs.items()}
    try:
        for c in configs.values():
            c._attn_implementation = FROZEN
        yield
    finally:
        for k, c in configs.items():
            c._attn_implementation = before[k]


@contextmanager
def _mlps_on_one_copy(modules: list[nn.Module]) -> Iterator[None]:
    """Each MLP runs on the first prompt copy only, without a graph, and its output is broadcast: the copies
    are identical and the output is a constant of the replacement model (the hook keeps only its value)."""
    def once(forward):
        def run(x: Tensor, *args, **kwargs):
            with torch.no_grad():
                out = forward(x[:1], *args, **kwargs)
            return out.expand(x.shape[0], *out.shape[1:]) if isinstance(out, Tensor) else forward(x, *args, **kwargs)
        return run

    before = [m.__dict__.get("forward") for m in modules]
    try:
        for m in modules:
            m.forward = once(m.forward)
        yield
    finally:
        for m, f in zip(modules, before, strict=True):
            if f is None:
                del m.forward
            else:
                m.forward = f


@torch.no_grad()
def _probe(norm: nn.Module, d: int, like: Tensor) -> tuple[bool, Tensor, float]:
    """(centres?, effective weight (d,), eps) of a LayerNorm / RMSNorm, from its outputs on +-v (rms 1)."""
    eps = norm_eps(norm)
    v = torch.ones(d, dtype=like.dtype, device=like.device)
    v[1::2] = -1
    plus, minus = norm(v[None])[0].float(), norm(-v[None])[0].float()
    weight = (plus - minus) / (2 * v.float()) * (1 + eps) ** 0.5
    center = bool(torch.allclose(norm(torch.ones_like(v)[None])[0].float(), (plus + minus) / 2, atol=1e-5))
    return center, weight, eps


def _norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if type(m).__name__.endswith(("Norm", "LayerNorm")) and hasattr(m, "weight")]


def _freeze_norm_hook(center: bool, weight: Tensor, eps: float):
    def hook(_m: nn.Module, args: tuple, output: Tensor) -> Tensor:
        x = args[0].float()
        x0 = x.detach()
        p0 = x0 - x0.mean(-1, keepdim=True) if center else x0
        scale = (p0.pow(2).mean(-1, keepdim=True) + eps).sqrt()       # (batch, pos, 1) frozen denominator
        dx = x - x0
        dx = dx - dx.mean(-1, keepdim=True) if center else dx
        return (output.detach().float() + weight * dx / scale).to(output.dtype)
    return hook


def mlp_module(lm: LoadedModel, layer: int) -> nn.Module:
    """The MLP module of ``layer`` (the parent of its down projection): input = MLP input, output = MLP output."""
    return lm.adapter.module(lm.model, lm.adapter.mlp_down.rsplit(".", 1)[0], layer)


@dataclass
class Graph:
    """The forward state a batch of backward passes reads (batch copies of the prompt)."""

    mlp_in: list[Tensor]        # per layer (batch, pos, d) MLP inputs (where encoder rows are injected)
    mlp_out: list[Tensor]       # per layer (batch, pos, d) MLP contributions (sources write here)
    embed: Tensor               # (batch, pos, d) token embeddings (leaf)
    final: Tensor               # (batch, pos, d) final norm output (where logit rows are injected)


@contextmanager
def replacement_forward(lm: LoadedModel, ids: Tensor, tcs: TranscoderSet, batch: int) -> Iterator[Graph]:
    """Run the frozen, MLP-cut model body on ``batch`` copies of ``ids`` and yield the tensors to differentiate."""
    model, adapter = lm.model, lm.adapter
    mlp_in: dict[int, Tensor] = {}
    mlp_out: dict[int, Tensor] = {}
    held: dict[str, Tensor] = {}
    d = lm.d_model
    like = next(model.parameters())

    def embed_hook(_m, _a, out):
        held["embed"] = out.detach().requires_grad_(True)
        return held["embed"]

    def mlp_hook(layer):
        def hook(_m, args, out):
            x = args[0] if args else None
            mlp_in[layer] = x
            keep = x[..., :1] * 0 if tcs.layers[layer].W_skip is None else \
                (lambda s: s - s.detach())(tcs.layers[layer].skip(x).to(out.dtype))
            return out.detach() + keep
        return hook

    def out_hook(layer):
        def hook(_m, _a, out):
            mlp_out[layer] = out[0] if isinstance(out, tuple) else out
        return hook

    def final_hook(_m, _a, out):
        held["final"] = out

    with ExitStack() as stack, torch.enable_grad():
        stack.enter_context(_attention_frozen(model))
        stack.enter_context(_mlps_on_one_copy([mlp_module(lm, layer) for layer in range(lm.n_layers)]))
        handles = [adapter.module(model, adapter.embed).register_forward_hook(embed_hook)]
        for norm in _norms(model):
            handles.append(norm.register_forward_hook(_freeze_norm_hook(*_probe(norm, norm.weight.shape[-1], like))))
        for layer in range(lm.n_layers):
            handles.append(mlp_module(lm, layer).register_forward_hook(mlp_hook(layer)))
            handles.append(adapter.module(model, adapter.mlp_out, layer).register_forward_hook(out_hook(layer)))
        if adapter.final_norm:
            handles.append(adapter.module(model, adapter.final_norm).register_forward_hook(final_hook))
        stack.callback(lambda: [h.remove() for h in handles])
        body = adapter.module(model, adapter.base)
        batch_ids = ids[None].expand(batch, -1).to(lm.device)
        out = body(input_ids=batch_ids, attention_mask=torch.ones_like(batch_ids))
        if "final" not in held:
            held["final"] = out.last_hidden_state
        del d
        yield Graph([mlp_in[i] for i in range(lm.n_layers)], [mlp_out[i] for i in range(lm.n_layers)],
                    held["embed"], held["final"])


def backward_rows(graph: Graph, layers: Tensor, positions: Tensor, inject: Tensor, sources: "Sources") -> Tensor:
    """Direct-effect rows ``(k, n_sources)`` for ``k <= batch`` readers: reader ``i`` reads ``inject[i]`` at
    ``positions[i]`` of the MLP input of ``layers[i]`` (``layers[i] == n_layers``: at the final norm's output).

    One backward pass from the highest reader layer down (a batch of low-layer readers is cheap). A feature
    source reads the gradient only at its own (layer, position), so the sources of each (layer, position) take
    one ``(k, d) @ (d, n)`` product: the gradient read once per source, not once per source and position."""
    n_layers = len(graph.mlp_in)
    k = len(layers)
    outputs, grads = [], []
    for layer in layers.unique().tolist():
        target = graph.final if layer == n_layers else graph.mlp_in[layer]
        g = torch.zeros_like(target)
        rows = (layers == layer).nonzero().flatten()
        g[rows, positions[rows]] = inject[rows].to(g.dtype)
        outputs.append(target)
        grads.append(g)
    got = torch.autograd.grad(outputs, graph.mlp_out + [graph.embed], grads, retain_graph=True, allow_unused=True)
    feats = torch.zeros(k, len(sources.layer))
    errors = torch.zeros(k, n_layers, graph.embed.shape[1])
    for layer, pos, start, stop in sources.segments:
        if got[layer] is not None:
            feats[:, start:stop] = got[layer][:k, pos].float() @ sources.decoder[start:stop].T
    for layer in range(n_layers):
        if got[layer] is not None:
            errors[:, layer] = torch.einsum("kpd,pd->kp", got[layer][:k].float(), sources.errors[layer])
    g_emb = got[-1]
    tokens = torch.zeros(k, graph.embed.shape[1]) if g_emb is None else \
        torch.einsum("kpd,pd->kp", g_emb[:k].float(), sources.tokens)
    return torch.cat([feats, errors.reshape(k, -1), tokens], dim=1)


@dataclass
class Sources:
    """What the sources write: active features (layer, pos, index, activation, encoder and scaled decoder
    rows), the error vectors and the token embeddings."""

    layer: Tensor          # (n_active,)
    pos: Tensor            # (n_active,)
    index: Tensor          # (n_active,)
    value: Tensor          # (n_active,) activations
    encoder: Tensor        # (n_active, d) encoder rows
    decoder: Tensor        # (n_active, d) activation x decoder rows
    errors: Tensor         # (n_layers, n_pos, d)
    tokens: Tensor         # (n_pos, d)

    @cached_property
    def segments(self) -> list[tuple[int, int, int, int]]:
        """(layer, position, start, stop): the runs of features of one (layer, position), in node order."""
        key = self.layer * (int(self.pos.max()) + 1 if len(self.pos) else 1) + self.pos
        stops = torch.cumsum(torch.unique_consecutive(key, return_counts=True)[1], 0).tolist()
        return [(int(self.layer[a]), int(self.pos[a]), a, b) for a, b in zip([0, *stops[:-1]], stops, strict=True)]


@torch.no_grad()
def real_forward(lm: LoadedModel, ids: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor], Tensor]:
    """The real model on ``ids``: (logits at the last position (vocab,), MLP inputs and outputs per layer
    (pos, d), token embeddings (pos, d))."""
    model, adapter = lm.model, lm.adapter
    ins: dict[int, Tensor] = {}
    outs: dict[int, Tensor] = {}
    held: dict[str, Tensor] = {}
    handles = [adapter.module(model, adapter.embed).register_forward_hook(
        lambda _m, _a, o: held.__setitem__("embed", o[0].float().clone()))]
    for layer in range(lm.n_layers):
        handles.append(mlp_module(lm, layer).register_forward_hook(
            lambda _m, a, _o, layer=layer: ins.__setitem__(layer, a[0][0].float().clone())))
        handles.append(adapter.module(model, adapter.mlp_out, layer).register_forward_hook(
            lambda _m, _a, o, layer=layer: outs.__setitem__(layer, (o[0] if isinstance(o, tuple) else o)[0]
                                                            .float().clone())))
    try:
        logits = model(input_ids=ids[None].to(lm.device)).logits[0, -1].float()
    finally:
        for h in handles:
            h.remove()
    return logits, [ins[i] for i in range(lm.n_layers)], [outs[i] for i in range(lm.n_layers)], held["embed"]


@torch.no_grad()
def sources(tcs: TranscoderSet, mlp_in: list[Tensor], mlp_out: list[Tensor], embed: Tensor,
            zero_positions: int = 1) -> Sources:
    """Active features, errors and token vectors of the prompt (positions < zero_positions carry none)."""
    layer, pos, index, value, enc, dec, errors = [], [], [], [], [], [], []
    for i, tc in enumerate(tcs.layers):
        x = mlp_in[i]
        acts = tc.encode(x)                                             # (pos, width)
        acts[:zero_positions] = 0
        p, f = acts.nonzero(as_tuple=True)
        layer.append(torch.full_like(p, i))
        pos.append(p)
        index.append(f)
        value.append(acts[p, f])
        enc.append(tc.W_enc[f])
        dec.append(acts[p, f, None] * tc.W_dec[f])
        err = mlp_out[i] - tc.decode(acts, x)
        err[:zero_positions] = 0
        errors.append(err)
    return Sources(torch.cat(layer), torch.cat(pos), torch.cat(index), torch.cat(value), torch.cat(enc).float(),
                   torch.cat(dec).float(), torch.stack(errors).float(), embed.float())

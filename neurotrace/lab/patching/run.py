"""patch: activation patching of any clean/corrupt prompt pair (IOI-style, as ``transformer_lens.patching``).

The corrupt prompt is run with one clean activation written in, and a metric is read at the last
position: the logit difference of two tokens, p(target), or KL(clean || patched). Components:

* ``resid_pre`` / ``attn_out`` / ``mlp_out``: one (layer, position) at a time, like
  ``get_act_patch_resid_pre`` / ``get_act_patch_attn_out`` / ``get_act_patch_mlp_out``;
* ``head_out``: one head's output (its slice of ``hook_z``) at every position, like
  ``get_act_patch_attn_head_out_all_pos``; ``head_out_pos``: one (layer, position, head), like
  ``get_act_patch_attn_head_out_by_pos``;
* ``head_q`` / ``head_k`` / ``head_v`` / ``head_pattern``: one head's queries, keys, values or attention
  pattern at every position (:mod:`neurotrace.lab.patching.attn`), like ``get_act_patch_attn_head_*_all_pos``;
* ``path``: path patching of every earlier head into ``receivers``' q/k/v (:mod:`neurotrace.lab.patching.path`).

Exact and batched (ROME's convention): every patched run is one row of a batch of corrupt inputs, each
row carrying its own patch; rows are independent, so the numbers equal one forward per cell. Clean states
come from the tracing machinery (:func:`neurotrace.lab.tracing.clean_states`); only the last
position's logits are computed. ``restored`` normalises a value as ``(m - m_corrupt) / (m_clean - m_corrupt)``.

**Suffix runs** (causal LMs; the argument of :mod:`neurotrace.lab.tracing.grids.fast_decoder`): patching a clean
value at position ``p`` leaves every position before ``p`` exactly as in the corrupt run, at every layer.
So the cells at one position (any layer; ``resid_pre``, ``attn_out``, ``mlp_out``, ``head_out_pos``) form
batches that run the model's own forward on tokens ``p..`` only, over a ``DynamicCache`` holding the
corrupt run's keys and values of positions ``< p`` (one corrupt forward fills it), as generation continues
a cached sequence: the model's own positions, masks and sliding windows. The hooks write the clean value
at the suffix's first position. Before the first token where the prompts differ the clean run *is* the
corrupt run, so those cells are the corrupt metric and are not run. Masked LMs, the bridge and nnsight
backends, and ``head_out`` (every position at once) keep the full forward (``force_full`` picks it too).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import DynamicCache

from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.access.adapters import site_name
from neurotrace.lab.model.access.chat import apply_chat
from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.access.tokens import target_id, token_texts
from neurotrace.lab.model.runtime.nnsight_backend import traced
from neurotrace.lab.model.runtime.precision import Agreement, check_backend, lease_at, resolve
from neurotrace.lab.model.weights.loading import LoadedModel, ModelRef
from neurotrace.lab.patching.attn import AttnEdits, attention_edits
from neurotrace.lab.patching.path import parse_receivers, path_grid
from neurotrace.lab.patching.precision import Chosen
from neurotrace.lab.patching.precision import check as check_precision
from neurotrace.lab.patching.report import write_patch_report
from neurotrace.lab.patching.schema import PatchRequest, PatchResult
from neurotrace.lab.progress import NULL_REPORTER, Reporter
from neurotrace.lab.tracing import clean_states, shared_prefix

SITE_OF = {"resid_pre": "resid_pre", "attn_out": "attn_out", "mlp_out": "mlp_out"}
PART_OF = {"head_q": "q", "head_k": "k", "head_v": "v", "head_pattern": "pattern"}
Metric = Callable[[Tensor], Tensor]          # last-position logits (rows, vocab) -> (rows,)


@dataclass(frozen=True)
class Cell:
    """One patched run: write clean ``site[:, pos, cols]`` (pos None = every position) into the corrupt run."""

    site: str
    pos: int | None
    cols: slice


def cells_for(kind: str, n_layers: int, n_pos: int, heads: int, d_head: int) -> list[Cell]:
    """The cells of ``kind`` in result order: (layer, pos), (layer, head) or (layer, pos, head)."""
    full = slice(None)
    if kind in SITE_OF:
        return [Cell(site_name(SITE_OF[kind], layer), p, full) for layer in range(n_layers) for p in range(n_pos)]
    z = [f"blocks.{layer}.attn.hook_z" for layer in range(n_layers)]
    if kind == "head_out":
        return [Cell(z[layer], None, slice(h * d_head, (h + 1) * d_head)) for layer in range(n_layers)
                for h in range(heads)]
    return [Cell(z[layer], p, slice(h * d_head, (h + 1) * d_head)) for layer in range(n_layers)
            for p in range(n_pos) for h in range(heads)]


@torch.no_grad()
def clean_cache(lm: LoadedModel, ids: Tensor, sites: set[str]) -> dict[str, Tensor]:
    """Clean activations (pos, width) at ``sites``: standard sites through the tracing helper, hook_z here."""
    standard = sorted(s for s in sites if not s.endswith("attn.hook_z"))
    store, _ = clean_states(lm, ids, standard) if standard else ({}, None)
    z_sites = sorted(sites - set(standard))

    def save(act: Tensor, site: str) -> None:
        store[site] = act[0].detach().clone()

    if z_sites:
        with hooked(lm.model, lm.adapter, {s: save for s in z_sites}):
            lm.model(input_ids=ids[None].to(lm.device))
    return store


def _writer(rows: list[int], cells: list[Cell], clean: Tensor, start: int = 0) -> Callable[..., Tensor]:
    """Write each row's clean value; the activations cover positions ``start..`` (a suffix run)."""
    def put(act: Tensor, site: str) -> Tensor:
        act = act.clone()
        for row, cell in zip(rows, cells, strict=True):
            if cell.pos is None:
                act[row, :, cell.cols] = clean[:, cell.cols]
            else:
                act[row, cell.pos - start, cell.cols] = clean[cell.pos, cell.cols]
        return act
    return put


def _hooks(cells: list[Cell], clean: dict[str, Tensor], start: int = 0) -> dict[str, Callable[..., Tensor]]:
    """One writer per site, row ``i`` carrying ``cells[i]``'s patch."""
    by_site: dict[str, tuple[list[int], list[Cell]]] = {}
    for row, cell in enumerate(cells):
        by_site.setdefault(cell.site, ([], []))[0].append(row)
        by_site[cell.site][1].append(cell)
    return {s: _writer(rows, cs, clean[s], start) for s, (rows, cs) in by_site.items()}


@torch.no_grad()
def last_logits(lm: LoadedModel, ids: Tensor, hooks: dict[str, Callable[..., Tensor]] | None = None,
                cache: DynamicCache | None = None) -> Tensor:
    """(rows, vocab) logits at the last position of ``ids`` (rows, pos) with ``hooks`` attached; with
    ``cache``, ``ids`` continue the cached prefix (and the cache fills with their keys and values)."""
    body = lm.adapter.module(lm.model, lm.adapter.base)
    extra = {} if cache is None else {"cache": cache, "use_cache": True}
    with hooked(lm.model, lm.adapter, hooks or {}):
        hidden = body(input_ids=ids.to(lm.device), **extra).last_hidden_state[:, -1]    # (rows, d_model)
    return lm.adapter.logits_at(lm.model, hidden).float()


def supports_suffix_runs(lm: LoadedModel) -> bool:
    """Causal LMs on the plain backend (as :func:`neurotrace.lab.tracing.grids.fast_decoder.supports_fast_decoder`)."""
    return lm.lm_kind == "causal" and lm.bridge is None and not traced(lm)


def patch_cells(lm: LoadedModel, corrupt: Tensor, cells: list[Cell], clean: dict[str, Tensor], metric: Metric,
                batch_size: int, reporter: Reporter, label: str, same_prefix: int = 0,
                force_full: bool = False) -> Tensor:
    """The metric (cells,) with each cell patched, ``batch_size`` patched runs per forward; ``same_prefix``:
    how many leading tokens the clean and corrupt prompts share (their cells are the corrupt metric)."""
    if force_full or not supports_suffix_runs(lm) or any(c.pos is None for c in cells):
        return patch_cells_full(lm, corrupt, cells, clean, metric, batch_size, reporter, label)
    return patch_cells_suffix(lm, corrupt, cells, clean, metric, batch_size, reporter, label, same_prefix)


def patch_cells_full(lm: LoadedModel, corrupt: Tensor, cells: list[Cell], clean: dict[str, Tensor], metric: Metric,
                     batch_size: int, reporter: Reporter, label: str) -> Tensor:
    """Every patched run a full forward of the corrupt prompt."""
    out = []
    for start in range(0, len(cells), batch_size):
        reporter.step(start, len(cells), f"{label}: patched runs {start}-{min(start + batch_size, len(cells))}")
        chunk = cells[start:start + batch_size]
        out.append(metric(last_logits(lm, corrupt[None].expand(len(chunk), -1), _hooks(chunk, clean))))
    return torch.cat(out).cpu()


def prefix_cache(kv: DynamicCache, p: int, rows: int) -> DynamicCache:
    """A fresh cache holding the corrupt run's keys and values of positions ``< p``, for ``rows`` rows."""
    return DynamicCache(ddp_cache_data=[(layer.keys[:, :, :p].expand(rows, -1, -1, -1),
                                         layer.values[:, :, :p].expand(rows, -1, -1, -1)) for layer in kv.layers])


@torch.no_grad()
def patch_cells_suffix(lm: LoadedModel, corrupt: Tensor, cells: list[Cell], clean: dict[str, Tensor], metric: Metric,
                       batch_size: int, reporter: Reporter, label: str, same_prefix: int = 0) -> Tensor:
    """Same numbers as :func:`patch_cells_full`: the cells of one position ``p`` run tokens ``p..`` over
    the corrupt run's cached keys and values of positions ``< p`` (see the module docstring)."""
    kv = DynamicCache()
    corrupt_lg = last_logits(lm, corrupt[None], cache=kv)                   # fills kv: (1, kv_heads, pos, d_head)
    out = torch.empty(len(cells))
    prefix = [i for i, c in enumerate(cells) if c.pos < same_prefix]
    out[prefix] = metric(corrupt_lg).cpu().expand(len(prefix))
    by_pos: dict[int, list[int]] = {}
    for i, cell in enumerate(cells):
        if cell.pos >= same_prefix:
            by_pos.setdefault(cell.pos, []).append(i)
    done = len(prefix)
    for p, group in sorted(by_pos.items()):
        for start in range(0, len(group), batch_size):
            idx = group[start:start + batch_size]
            reporter.step(done, len(cells), f"{label}: patched runs {done}-{done + len(idx)} (position {p})")
            chunk = [cells[i] for i in idx]
            ids = corrupt[None, p:].expand(len(idx), -1)
            cache = prefix_cache(kv, p, len(idx)) if p > 0 else None      # p = 0: nothing to cache, the full forward
            out[idx] = metric(last_logits(lm, ids, _hooks(chunk, clean, p), cache)).cpu()
            done += len(idx)
    return out


@torch.no_grad()
def clean_parts(lm: LoadedModel, ids: Tensor) -> dict[tuple[int, str], Tensor]:
    """Every layer's per-head q, k, v (1, H, P, d) and pattern (1, H, P, P) on the clean prompt."""
    record: dict[tuple[int, str], Tensor] = {}
    with attention_edits(lm, AttnEdits(record=record)):
        lm.model(input_ids=ids[None].to(lm.device))
    return record


def patch_parts(lm: LoadedModel, corrupt: Tensor, part: str, clean: dict[tuple[int, str], Tensor], metric: Metric,
                batch_size: int, reporter: Reporter) -> Tensor:
    """The metric (layers, heads) with one head's ``part`` (q, k, v or pattern) patched at every position."""
    heads = clean[(0, part)].shape[1]
    cells = [(layer, h) for layer in range(lm.n_layers) for h in range(heads)]
    out = []
    for start in range(0, len(cells), batch_size):
        reporter.step(start, len(cells), f"head_{part}: patched runs {start}-{min(start + batch_size, len(cells))}")
        chunk = cells[start:start + batch_size]
        edits = AttnEdits(clean=clean)
        for row, (layer, h) in enumerate(chunk):
            edits.patches.setdefault(layer, []).append((row, part, h))
        with attention_edits(lm, edits):
            out.append(metric(last_logits(lm, corrupt[None].expand(len(chunk), -1))))
    return torch.cat(out).cpu().view(lm.n_layers, heads)


def make_metric(kind: str, target: int, contrast: int | None, clean_logits: Tensor) -> Metric:
    if kind == "logit_diff":
        return lambda lg: lg[:, target] - lg[:, contrast]
    if kind == "p_target":
        return lambda lg: torch.softmax(lg, -1)[:, target]
    lp_clean = torch.log_softmax(clean_logits, -1)
    return lambda lg: (lp_clean.exp() * (lp_clean - torch.log_softmax(lg, -1))).sum(-1)


def _prompts(lm: LoadedModel, request: PatchRequest) -> tuple[Tensor, Tensor]:
    if lm.lm_kind != "causal":
        raise InputError("model", "patch scores the next token and needs a causal LM", fix="use a causal LM")
    clean, corrupt = (torch.tensor(list(lm.tokenizer(t).input_ids)) for t in (request.clean, request.corrupt))
    if len(clean) == 0:
        raise InputError("clean", "the clean prompt tokenizes to nothing", fix="give some text")
    if len(corrupt) != len(clean):
        raise InputError("corrupt", f"the corrupt prompt has {len(corrupt)} tokens, the clean one {len(clean)}",
                         fix="use prompts of the same token length (swap words that are one token each)")
    return clean, corrupt


def _tokens(lm: LoadedModel, request: PatchRequest, clean_lg: Tensor, corrupt_lg: Tensor) -> tuple[int, int | None]:
    target = target_id(lm.tokenizer, request.target, request.clean) if request.target else int(clean_lg.argmax())
    if request.metric != "logit_diff":
        return target, None
    contrast = (target_id(lm.tokenizer, request.contrast, request.corrupt, field="contrast") if request.contrast
                else int(corrupt_lg.argmax()))
    if contrast == target:
        raise InputError("contrast", "the contrast token is the target token (the corrupt run predicts the target too)",
                         fix="name a contrast word, or use metric='p_target' or 'kl'")
    return target, contrast


CELL_KINDS = ("resid_pre", "attn_out", "mlp_out", "head_out", "head_out_pos")   # the kinds bfloat16 runs


@dataclass
class Measured:
    """One precision's patched grids of a request, and the metric they were read with."""

    clean: Tensor
    corrupt: Tensor
    target: int
    contrast: int | None
    metric: Metric
    m_clean: float
    m_corrupt: float
    plan: dict[str, list[Cell]]
    grids: dict[str, Tensor]


def measure(lm: LoadedModel, request: PatchRequest, kinds: list[str], reporter: Reporter,
            tokens: tuple[int, int | None] | None = None) -> Measured:
    """Patch ``kinds`` of ``request`` on ``lm``; ``tokens``: the (target, contrast) to score (default: read
    from this model's clean and corrupt runs)."""
    clean, corrupt = _prompts(lm, request)
    clean_lg, corrupt_lg = last_logits(lm, torch.stack([clean, corrupt]))
    target, contrast = tokens if tokens is not None else _tokens(lm, request, clean_lg, corrupt_lg)
    metric = make_metric(request.metric, target, contrast, clean_lg)
    m_clean, m_corrupt = (float(v) for v in metric(torch.stack([clean_lg, corrupt_lg])))
    heads = lm.n_heads
    d_head = int(getattr(lm.config, "head_dim", None) or lm.d_model // heads)
    plan = {k: cells_for(k, lm.n_layers, len(clean), heads, d_head) for k in kinds if k not in PART_OF and k != "path"}
    cache = clean_cache(lm, clean, {c.site for cells in plan.values() for c in cells})
    parts = clean_parts(lm, clean) if set(PART_OF) & set(kinds) else {}
    grids = {k: patch_parts(lm, corrupt, PART_OF[k], parts, metric, request.batch_size, reporter)
             for k in kinds if k in PART_OF}
    for kind, cells in plan.items():
        values = patch_cells(lm, corrupt, cells, cache, metric, request.batch_size, reporter, kind,
                             same_prefix=shared_prefix(clean, corrupt))
        shape = {"head_out": (lm.n_layers, heads), "head_out_pos": (lm.n_layers, len(clean), heads)}
        grids[kind] = values.view(shape.get(kind, (lm.n_layers, len(clean))))
    if "path" in kinds:
        grids["path"] = path_grid(lm, clean, corrupt, parse_receivers(request.receivers, lm.n_layers, heads),
                                  list(request.receiver_parts), heads, metric, last_logits, request.batch_size,
                                  reporter)
    return Measured(clean, corrupt, target, contrast, metric, m_clean, m_corrupt, plan, grids)


def check_cells(lm: LoadedModel, request: PatchRequest, fast: Measured) -> Agreement:
    """Recompute on the float32 ``lm`` the clean/corrupt metrics and a sample of ``fast``'s (bfloat16) cells."""
    def recompute(chosen: Chosen) -> tuple[tuple[float, float], list[float]]:
        clean_lg, corrupt_lg = last_logits(lm, torch.stack([fast.clean, fast.corrupt]))
        metric = make_metric(request.metric, fast.target, fast.contrast, clean_lg)
        m_clean, m_corrupt = (float(v) for v in metric(torch.stack([clean_lg, corrupt_lg])))
        cells = [fast.plan[k][i] for k, i in chosen]
        cache = clean_cache(lm, fast.clean, {c.site for c in cells})
        values = patch_cells(lm, fast.corrupt, cells, cache, metric, request.batch_size, NULL_REPORTER,
                             "float32 check", same_prefix=shared_prefix(fast.clean, fast.corrupt))
        return (m_clean, m_corrupt), values.tolist()

    differing = {i for i, (a, b) in enumerate(zip(fast.clean.tolist(), fast.corrupt.tolist(), strict=True)) if a != b}
    return check_precision(request, {k: fast.grids[k] for k in fast.plan}, (fast.m_clean, fast.m_corrupt),
                           token_texts(lm.tokenizer, fast.clean.tolist()), differing, recompute)


def run_patch(request: PatchRequest, *, lab: Lab, reporter: Reporter = NULL_REPORTER) -> PatchResult:
    """Does patching this component from the clean into the corrupt prompt restore the answer? Activation
    patching per layer x position, per head and per head x position, with a logit-difference, p or KL metric.
    In bfloat16, the layer x position and head kinds run in bfloat16 and a sample of their cells (the most
    restoring ones and a seeded random sample) is recomputed in float32; head_q/k/v/pattern and path run in
    float32."""
    lab.check(request)  # bounds and the whole-job estimate, before any work
    check_backend(request.precision, "hf")
    if ("path" in request.components) != bool(request.receivers):
        raise InputError("receivers", "path patching needs receivers, and receivers need components to include 'path'",
                         fix="give both components=[..., 'path'] and receivers=['L:H', ...], or neither")
    ref = ModelRef(model=request.model, device=request.device)
    with lab.cache.lease(ref) as lm:
        request = apply_chat(request, lm.tokenizer, request.model, single=("clean", "corrupt"))
        precision, note = resolve(request.precision, request.insist_precision, lm.device)
        reduced = [k for k in request.components if k in CELL_KINDS] if precision == "bfloat16" else []
        full = measure(lm, request, [k for k in request.components if k not in reduced], reporter)
    agreement = None
    if reduced:
        with lease_at(lab.cache, ref, "bfloat16") as lb:
            fast = measure(lb, request, reduced, reporter, tokens=(full.target, full.contrast))
        with lab.cache.lease(ref) as lm:
            agreement = check_cells(lm, request, fast)
        full.grids.update(fast.grids)
        full.m_clean, full.m_corrupt = fast.m_clean, fast.m_corrupt
    grids = {k: full.grids[k] for k in request.components}
    with lab.cache.lease(ref) as lm, lab.store.open_run("patch", request) as run:
        run.add_model(request.model, lm.fingerprint, lm.provenance)
        return write_patch_report(run, request, lm, full.clean, full.corrupt, grids, full.target, full.contrast,
                                  full.m_clean, full.m_corrupt, agreement=agreement, note=note)

"""attribute: direct logit attribution of the answer, and optional attribution patching."""

import torch

from neurotrace.lab.attribution.atp import clean_acts, estimates, exact_patch, gradients
from neurotrace.lab.attribution.dla import attribute, capture, frozen_norm, unembedding
from neurotrace.lab.attribution.report import write_report
from neurotrace.lab.attribution.schema import (
    AttributeRequest,
    AttributeResult,
    AttributionPatching,
    PatchEstimate,
)
from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.access.adapters import site_name
from neurotrace.lab.model.access.chat import apply_chat
from neurotrace.lab.model.access.tokens import target_id, token_texts
from neurotrace.lab.model.weights.loading import LoadedModel, ModelRef
from neurotrace.lab.progress import NULL_REPORTER, Reporter


def _ids(lm: LoadedModel, text: str, field: str) -> torch.Tensor:
    ids = list(lm.tokenizer(text).input_ids)
    if not ids:
        raise InputError(field, "the text tokenizes to nothing", fix="give some text")
    return torch.tensor(ids)


def metric_direction(lm: LoadedModel, target: int, contrast: int | None):
    """(u (d,), bias_U share, metric fn over logits) for a logit difference or a centred logit."""
    w_u, b_u = unembedding(lm)
    b_u = torch.zeros(w_u.shape[0], device=w_u.device) if b_u is None else b_u
    if contrast is None:
        return w_u[target] - w_u.mean(0), float(b_u[target] - b_u.mean()), lambda lg: lg[target] - lg.mean()
    return w_u[target] - w_u[contrast], float(b_u[target] - b_u[contrast]), lambda lg: lg[target] - lg[contrast]


def _patching(lm: LoadedModel, request: AttributeRequest, ids: torch.Tensor, metric, reporter: Reporter):
    corrupt = _ids(lm, request.corrupt_prompt, "corrupt_prompt")
    if len(corrupt) != len(ids):
        raise InputError("corrupt_prompt", f"the corrupt prompt has {len(corrupt)} tokens, the prompt {len(ids)}",
                         fix="use a corrupt prompt of the same token length (e.g. swap one subject word)")
    clean = clean_acts(lm, ids)
    with torch.no_grad():
        m_clean = float(metric(lm.model(input_ids=ids[None].to(lm.device)).logits[0, -1].float()))
    m_corrupt, corr_acts, grads = gradients(lm, corrupt, metric)
    h = lm.n_heads
    heads, neurons = estimates(lm, clean, corr_acts, grads, h)
    d_head = clean["blocks.0.attn.hook_z"].shape[-1] // h
    out = {}
    for kind, table in (("heads", heads), ("neurons", neurons)):
        order = table.flatten().abs().argsort(descending=True)[:request.top_k].tolist()
        rows = []
        for rank, i in enumerate(order):
            layer, unit = divmod(i, table.shape[1])
            exact = None
            if rank < request.check_top:
                reporter.step(rank, request.check_top, f"exact patch of the top {kind}")
                site, cols = ((f"blocks.{layer}.attn.hook_z", slice(unit * d_head, (unit + 1) * d_head))
                              if kind == "heads" else (site_name("mlp_post", layer), slice(unit, unit + 1)))
                exact = exact_patch(lm, corrupt, metric, site, cols, clean) - m_corrupt
            name = f"L{layer}H{unit}" if kind == "heads" else f"L{layer}N{unit}"
            rows.append(PatchEstimate(name=name, estimate=float(table[layer, unit]), exact=exact))
        out[kind] = rows
    return AttributionPatching(metric_clean=m_clean, metric_corrupt=m_corrupt, **out)


def run_attribute(request: AttributeRequest, *, lab: Lab, reporter: Reporter = NULL_REPORTER) -> AttributeResult:
    """Which components, heads and neurons write the answer? Direct logit attribution at the last position
    (final-norm scale frozen), optionally attribution patching between a clean and a corrupt prompt."""
    lab.check(request)  # bounds and the whole-job estimate, before any work
    with lab.cache.lease(ModelRef(model=request.model, device=request.device)) as lm:
        request = apply_chat(request, lm.tokenizer, request.model, single=("prompt", "corrupt_prompt"))
        ids = _ids(lm, request.prompt, "prompt")
        reporter.step(0, 3, "clean forward")
        acts, logits = capture(lm, ids, len(ids) - 1)
        target = target_id(lm.tokenizer, request.target, request.prompt) if request.target else int(logits.argmax())
        contrast = (target_id(lm.tokenizer, request.contrast, request.prompt, field="contrast")
                    if request.contrast else None)
        if contrast == target:
            raise InputError("contrast", "the contrast is the target's own token", fix="give another word")
        u, bias_u, metric = metric_direction(lm, target, contrast)
        norm = frozen_norm(lm, acts[site_name("resid_post", lm.n_layers - 1)])
        reporter.step(1, 3, "attributing")
        attr = attribute(lm, acts, norm, u, float(u @ norm.bias) + bias_u, float(metric(logits)))
        patching = _patching(lm, request, ids, metric, reporter) if request.corrupt_prompt else None
        reporter.step(2, 3, "writing the run")
        texts = token_texts(lm.tokenizer, [target] + ([contrast] if contrast is not None else []))
        with lab.store.open_run("attribute", request) as run:
            run.add_model(request.model, lm.fingerprint, lm.provenance)
            return write_report(run, request, attr, texts, patching)

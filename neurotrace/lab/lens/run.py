"""logit_lens: what each layer's residual stream predicts at every position of a prompt."""

import torch

from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab
from neurotrace.lab.lens.lens import fit_all, read_out, residual_rows, translate
from neurotrace.lab.lens.report import write_report
from neurotrace.lab.lens.schema import LogitLensRequest, LogitLensResult, TunedReport
from neurotrace.lab.model.access.chat import apply_chat
from neurotrace.lab.model.access.tokens import target_id
from neurotrace.lab.model.weights.loading import LoadedModel, ModelRef
from neurotrace.lab.progress import NULL_REPORTER, Reporter

MIN_FIT_STATES = 8


def _ids(lm: LoadedModel, text: str, field: str) -> torch.Tensor:
    ids = list(lm.tokenizer(text).input_ids)
    if not ids:
        raise InputError(field, "the text tokenizes to nothing", fix="give some text")
    limit = lm.max_positions
    if limit and len(ids) > limit:
        raise InputError(field, f"{len(ids)} tokens exceed the model's {limit} positions", fix="shorten it")
    return torch.tensor(ids)


def scored_position(lm: LoadedModel, ids: torch.Tensor) -> int:
    """The mask token's position for a masked LM (when the prompt has one), else the last position."""
    mask = getattr(lm.tokenizer, "mask_token_id", None) if lm.lm_kind == "masked" else None
    hits = (ids == mask).nonzero() if mask is not None else []
    return int(hits[0]) if len(hits) else len(ids) - 1


def _tuned(lm: LoadedModel, request: LogitLensRequest, rows: torch.Tensor, target: int, pos: int,
           reporter: Reporter) -> TunedReport:
    states = [rows]
    for i, text in enumerate(request.fit_prompts):
        reporter.step(i, len(request.fit_prompts) + 1, f"fitting states of prompt {i + 1}")
        states.append(residual_rows(lm, _ids(lm, text, f"fit_prompts[{i}]")))
    n = sum(s.shape[1] for s in states)
    if n < MIN_FIT_STATES:
        raise InputError("fit_prompts", f"only {n} token states to fit translators on (need {MIN_FIT_STATES})",
                         fix="add fit_prompts (a few sentences like the prompt)")
    translators, kl_lens, kl_tuned, n_train, n_held = fit_all(lm, states, request.holdout, request.ridge,
                                                             request.seed)
    last = rows[:, pos]                                                 # (rows, d)
    tuned_last = torch.stack([translate(last[r], *translators[r]) for r in range(len(translators))])
    p = torch.softmax(read_out(lm, tuned_last), -1)[:, target]
    return TunedReport(n_train=n_train, n_heldout=n_held, kl_logit_lens=kl_lens, kl_tuned=kl_tuned,
                       p_target=[float(v) for v in p])


def run_logit_lens(request: LogitLensRequest, *, lab: Lab, reporter: Reporter = NULL_REPORTER) -> LogitLensResult:
    """What does each layer predict? Read the residual stream after every block through the final norm and
    unembedding (logit lens), optionally with fitted affine translators (tuned lens)."""
    lab.check(request)  # bounds and the whole-job estimate, before any work
    with lab.cache.lease(ModelRef(model=request.model, device=request.device)) as lm:
        request = apply_chat(request, lm.tokenizer, request.model, single=("prompt",), many=("fit_prompts",))
        ids = _ids(lm, request.prompt, "prompt")
        reporter.step(0, 2, "reading the residual stream")
        rows = residual_rows(lm, ids)                                   # (n_layers + 1, pos, d)
        probs = torch.softmax(read_out(lm, rows), -1)                   # (rows, pos, vocab)
        pos = scored_position(lm, ids)
        target = (target_id(lm.tokenizer, request.target, request.prompt) if request.target
                  else int(probs[-1, pos].argmax()))
        tuned = _tuned(lm, request, rows, target, pos, reporter) if request.tuned else None
        reporter.step(1, 2, "writing the run")
        top_p, top_i = probs.topk(request.top_k, dim=-1)                # (rows, pos, k)
        with lab.store.open_run("logit_lens", request, seed=request.seed) as run:
            run.add_model(request.model, lm.fingerprint, lm.provenance)
            return write_report(run, request, lm, ids, probs[:, :, target], top_p, top_i, target, pos, tuned)

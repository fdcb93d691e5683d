"""edit: rewrite facts in a model's MLP weights (ROME, MEMIT) and measure the edit as CounterFact does.

1. Cases (:mod:`~neurotrace.lab.editing.counterfact.cases`): the facts to rewrite, their paraphrases, neighbourhood and
   unrelated facts. Every new target must be one token (typed error otherwise). A fact whose prompt the model
   does not answer with ``target_true`` is *unknown*: reported, never edited; none known is an error.
2. The layer: the request's; else the layer the model's latest trace located (MLP, last subject token);
   else ROME's choice (about 35% of the depth, as layer 17 of GPT-2 XL's 48). MEMIT takes 5 layers ending
   there.
3. The key covariance per layer (:mod:`~neurotrace.lab.editing.method.covariance`, cached), prefix contexts.
4. ROME: each fact edited alone from the original weights, its readings taken, the weights restored.
   MEMIT: all facts at once. Readings before and after give the metrics
   (:mod:`~neurotrace.lab.editing.counterfact.metrics`).
5. The edited model: the run stores the weight delta (``arrays/delta.safetensors``; for ROME with several
   facts, the sum of their independent updates) and its name ``<model>@edit:<run_id>`` loads the original
   plus that delta in any tool; the original model is never changed.
6. ``sweep_layers``: each fact edited at every layer; efficacy per layer beside the trace's indirect effect.
"""

from dataclasses import dataclass

from neurotrace.lab.editing.counterfact.cases import Case, build_cases
from neurotrace.lab.editing.counterfact.measure import (
    CaseIds,
    State,
    case_ids,
    next_token_probs,
    read_state,
    reference_texts,
)
from neurotrace.lab.editing.counterfact.text import context_prefixes
from neurotrace.lab.editing.located import Located, latest_trace, read_trace
from neurotrace.lab.editing.method.covariance import covariances
from neurotrace.lab.editing.method.updates import Update, apply, memit_updates, preserved, rome_update
from neurotrace.lab.editing.method.vectors import ValueSettings
from neurotrace.lab.editing.report import Outcome, write_outputs
from neurotrace.lab.editing.schema import EditRequest, EditResult
from neurotrace.lab.editing.sweep import sweep
from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.weights.loading import LoadedModel, ModelRef
from neurotrace.lab.progress import NULL_REPORTER, Reporter

ROME_DEPTH = 17 / 48
MEMIT_SPAN = 5
#: ROME's clamp |delta| <= 4 |v0|; where the MLP output is RMS-normalised before the residual add (Gemma 2/3,
#: OLMo 2) a value that large replaces the output's direction for every key the rank-one update reaches, so
#: neighbours with a partial key overlap flip too (docs/editing.md: gemma-3-270m at layer 4, ten known facts:
#: efficacy / neighbourhood 1.00 / 0.77 at 0.75, 1.00 / 0.83 at 0.65, 0.90 / 0.83 at 0.6, 0.80 / 0.93 at 0.5;
#: seven facts at 4: 1.00 / 0.19)
ROME_CLAMP = 4.0
POST_NORM_CLAMP = 0.65


@dataclass
class Chosen:
    layers: list[int]
    source: str
    trace: Located | None


def choose_layers(request: EditRequest, lab: Lab, lm: LoadedModel) -> Chosen:
    n = lm.n_layers
    trace_id = request.trace_run_id or latest_trace(lab, request.model)
    located = read_trace(lab, trace_id, request.model) if trace_id else None
    if request.layers is not None:
        bad = [x for x in request.layers if not 0 <= x < n]
        if bad or not request.layers:
            raise InputError("layers", f"layers {bad or request.layers} are out of range for {request.model!r} "
                             f"({n} layers)", fix=f"use layers in 0..{n - 1}, or omit `layers`")
        if request.method == "rome" and len(set(request.layers)) != 1:
            raise InputError("layers", "rome edits one layer", fix="give one layer, or method='memit' for a range")
        return Chosen(sorted(set(request.layers)), "request", located)
    if located is not None and located.layer is not None and located.layer < n:
        top, source = located.layer, f"trace run {located.run_id} (MLP peak at the last subject token)"
    else:
        top, source = round(ROME_DEPTH * (n - 1)), "ROME's choice (about 35% of the depth; no trace of this model)"
    if request.method == "rome":
        return Chosen([top], source, located)
    top = max(top, min(MEMIT_SPAN - 1, n - 1))
    return Chosen(list(range(top - min(MEMIT_SPAN, n) + 1, top + 1)), source, located)


def clamp_norm(request: EditRequest, lm: LoadedModel) -> float:
    """The request's clamp, else ROME's 4, or :data:`POST_NORM_CLAMP` where the MLP output is normalised."""
    if request.value.clamp_norm is not None:
        return request.value.clamp_norm
    return POST_NORM_CLAMP if lm.adapter.post_norms else ROME_CLAMP


def _settings(request: EditRequest, lm: LoadedModel) -> ValueSettings:
    v = request.value
    return ValueSettings(steps=v.steps, lr=v.lr, kl_factor=v.kl_factor, weight_decay=v.weight_decay,
                         clamp_norm=clamp_norm(request, lm))


def _field(request: EditRequest, i: int) -> str:
    return f"rewrites[{i}]" if request.rewrites else "pack"


def check_cases(request: EditRequest, lm: LoadedModel, cases: list[Case]
                ) -> tuple[list[int], list[CaseIds], list[str], list[str]]:
    """(indices of known cases, their ids, ids of unknown cases, notes). An inline new target of more than one
    token is a typed error; a pack fact whose new target is (another fact's answer) is left out with a note.
    A fact is known when the model's top-1 is the first token of ``target_true``."""
    ids: list[CaseIds | None] = []
    notes = []
    for i, c in enumerate(cases):
        try:
            ids.append(case_ids(lm, c, i))
        except InputError as exc:
            if request.rewrites:
                raise
            ids.append(None)
            notes.append(f"{c.id}: not edited, {exc.message}")
    tops = next_token_probs(lm, [(c.template, c.subject) for c in cases]).argmax(-1).tolist()
    known, unknown = [], []
    for i, (c, t) in enumerate(zip(cases, tops, strict=True)):
        if ids[i] is None:
            continue
        if c.target_true is None:
            c.target_true = lm.tokenizer.decode([t]).strip()
            ids[i].true = t
        (known if ids[i].true == t else unknown).append(i)
    if not known:
        raise InputError(_field(request, 0), f"{request.model!r} knows none of the {len(cases)} facts (its top-1 "
                         "is not target_true on any edit prompt), so there is nothing to rewrite",
                         fix="give facts the model answers correctly (or omit target_true to take its answer)")
    return known, [ids[i] for i in known], [cases[i].id for i in unknown], notes


def run_edit(request: EditRequest, *, lab: Lab, reporter: Reporter = NULL_REPORTER) -> EditResult:
    """Edit the facts, measure before and after, store the delta and name the edited model."""
    lab.check(request)
    all_cases = build_cases(request)
    with lab.cache.lease(ModelRef(model=request.model, device=request.device)) as lm:
        if lm.lm_kind != "causal":
            raise InputError("model", f"{request.model!r} is a masked LM; edit rewrites next-token facts",
                             fix="use a causal LM such as 'gemma-3-270m' or 'fact-gpt2'")
        chosen = choose_layers(request, lab, lm)
        known, ids, unknown, notes = check_cases(request, lm, all_cases)
        cases = [all_cases[i] for i in known]
        if request.value.clamp_norm is None and lm.adapter.post_norms:
            notes.append(f"clamp_norm {POST_NORM_CLAMP} (not ROME's {ROME_CLAMP}): this model normalises its MLP "
                         "output, so a larger value would replace it for every key the update reaches")
        fields = [_field(request, i) for i in known]
        with lab.store.open_run("edit", request, seed=request.seed) as run:
            run.add_model(request.model, lm.fingerprint, lm.provenance)
            if chosen.trace is not None:
                run.add_input(chosen.trace.run_id)
            prefixes = context_prefixes(lm, request.value.n_contexts, request.seed)
            cov_layers = list(range(lm.n_layers)) if request.sweep_layers else chosen.layers
            with reporter.stage("covariance"):
                covs, cov_info = covariances(lab, lm, cov_layers, request.covariance.tokens, request.seed,
                                             request.covariance.corpus, reporter)
            before = [read_state(lm, c, i, request.max_new_tokens, request.seed) for c, i in zip(cases, ids, strict=True)]
            refs = [reference_texts(lm, c, request.max_new_tokens, request.seed) if request.max_new_tokens else []
                    for c in cases]
            with reporter.stage("edit"):
                updates, after = _edit(request, lm, cases, ids, fields, chosen.layers, prefixes, covs, reporter)
            swept = None
            if request.sweep_layers:
                with reporter.stage("sweep"):
                    swept = sweep(lm, cases, ids, fields, prefixes, covs, _settings(request, lm), before, chosen.trace,
                                  reporter)
            outcome = Outcome(model=request.model, lm=lm, method=request.method, layers=chosen.layers,
                              layer_source=chosen.source, cases=cases, ids=ids, before=before, after=after,
                              refs=refs, updates=updates, unknown=unknown, covariance=cov_info, sweep=swept,
                              notes=notes)
            return write_outputs(run, request, outcome)


def _edit(request: EditRequest, lm: LoadedModel, cases: list[Case], ids: list[CaseIds], fields: list[str],
          layers: list[int], prefixes: list[str], covs: dict, reporter: Reporter) -> tuple[list[Update], list[State]]:
    settings = _settings(request, lm)
    if request.method == "memit":
        with preserved(lm, layers):
            updates = memit_updates(lm, cases, ids, layers, prefixes, covs, settings, request.covariance.memit_lambda,
                                    fields, reporter)
            after = [read_state(lm, c, i, request.max_new_tokens, request.seed) for c, i in zip(cases, ids, strict=True)]
        return updates, after
    updates, after = [], []
    for n, (case, case_ids_, field) in enumerate(zip(cases, ids, fields, strict=True)):
        reporter.step(n, len(cases), f"rome: {case.id}")
        with preserved(lm, layers):
            u = rome_update(lm, case, case_ids_, layers[0], prefixes, covs[layers[0]], settings, field, reporter)
            apply(lm, u)
            after.append(read_state(lm, case, case_ids_, request.max_new_tokens, request.seed))
        updates.append(u)
    return updates, after

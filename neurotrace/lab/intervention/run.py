"""intervene: edit SAE features or model components while the model runs, and compare with baseline.

For every prompt:

1. **Baseline**: generate ``max_new_tokens`` tokens (greedy, or sampled with a generator seeded by
   ``seed``) with no edits; read p(target) and the target-vs-foil logit difference at the prompt's end.
2. **Intervened**: generate again with every policy (:mod:`neurotrace.lab.intervention.policies`) applied at the
   steps and positions it lists (sampling reuses a fresh generator with the same seed, so only the
   edits can make the texts differ).
3. **Per-step metrics** (teacher-forced): re-run each step on the *baseline's* prefix with the
   step's policies, and report KL(baseline || intervened) of the next-token distributions and both
   probabilities of the baseline token. A step whose policies are inactive (and that no earlier
   edit reaches) has KL 0.
4. **Top causal features** (with an SAE): the ``rank_features`` features most active on the prompt
   are each ablated alone (error-preserving, all positions, step 0) in one batched forward; the
   effect is the change in log p(target) (or of the baseline's first token without a target). Both the
   activations and the ablations are at the positions the dictionary reads as it was fitted (not position 0,
   a special token or a massive-norm attention sink: there features fire in the hundreds;
   :mod:`neurotrace.lab.intervention.ranking`). The
   candidates leave out **dense** features (firing on more than 10% of tokens by the dictionary's own
   density, :mod:`neurotrace.lab.sae.density`: position or the mean direction, not a meaning) unless
   ``include_dense``; each ranked feature reports its density (null where the dictionary has none).

**Generation path** (:mod:`neurotrace.lab.capture.generation`): every policy is position-wise, so when
each one's ``steps`` cover all or none of the forwards that reuse the positions it touches (no
``steps``, for one), all three runs use the KV cache and the teacher-forced one is a single forward,
compared with a single unedited forward over the same tokens. Otherwise (e.g. ``steps=[2]`` on the
prompt) every forward recomputes the whole sequence, on all three runs. ``report.json``
(:class:`~neurotrace.lab.intervention.schema.InterveneReport`) names the path and why, per prompt and
overall (``generation``). It holds no timestamps or run ids of its own: rerunning the same request with
the same seed on the same machine reproduces it byte for byte.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch

from neurotrace.lab.capture import (
    COMPONENT_EDITS,
    POSITIONWISE,
    GenerationPlan,
    StepInfo,
    capture_info,
    clean_text_acts,
    knockout,
    load_trace_dataset,
    plan_step_edits,
    step_hooks,
    validate,
)
from neurotrace.lab.effects import Damage, NeutralSet, judge, new_collapses
from neurotrace.lab.errors import InputError, NotFound
from neurotrace.lab.explain import dictionary_labels
from neurotrace.lab.intervention.controls import Metric, control_effects
from neurotrace.lab.intervention.policies import (
    FEATURE_POLICIES,
    PolicyContext,
    check_policies,
    features_everywhere,
)
from neurotrace.lab.intervention.precision import PromptsCheck, compare, deciding_prompt, pick, to_agreement
from neurotrace.lab.intervention.ranking import rank_features, unfitted_positions
from neurotrace.lab.intervention.report import write_report
from neurotrace.lab.intervention.schema import (
    ControlEffects,
    InterveneRequest,
    InterveneResult,
    Outcome,
    PromptCase,
    PromptReport,
    StepMetrics,
)
from neurotrace.lab.intervention.structural import control_sets
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.access.chat import apply_chat
from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.access.sites import check_site
from neurotrace.lab.model.access.tokens import target_id, target_token_ids
from neurotrace.lab.model.runtime.ndif import check_execution
from neurotrace.lab.model.runtime.precision import check_backend, lease_pair, resolve
from neurotrace.lab.model.runtime.sampling import token_chooser
from neurotrace.lab.model.runtime.stepwise import (
    ContextAt,
    Continuation,
    continue_greedy,
)
from neurotrace.lab.model.weights.loading import LoadedModel, ModelRef
from neurotrace.lab.progress import NULL_REPORTER, Reporter
from neurotrace.lab.sae import (
    METRICS_FILE,
    Dictionary,
    SAEMetrics,
    check_fits,
    load_dictionary,
    load_sae_run,
    record_dictionary,
)

_KINDS = POSITIONWISE | {p.model_fields["kind"].default for p in FEATURE_POLICIES}


def _cases(request: InterveneRequest) -> list[PromptCase]:
    return [p if isinstance(p, PromptCase) else PromptCase(prompt=p) for p in request.prompts]


def policy_hooks(policies: list[Any], step: int, sae: Dictionary | None, ctx: PolicyContext, lm: LoadedModel | None = None,
                 info: StepInfo | None = None, load_states: Any = None) -> dict[str, list[Callable]]:
    """{site: [hook]} applying every policy active at ``step`` (component edits through capture's hooks);
    the forward feeds tokens from ``info.start`` (0 without ``info``)."""
    hooks: dict[str, list[Callable]] = {}
    start = info.start if info is not None else 0
    fctx = ctx if ctx.start == start else replace(ctx, start=start)      # shares ctx's source cache
    for policy in policies:
        if isinstance(policy, FEATURE_POLICIES) and policy.active(step):
            def fn(act: torch.Tensor, site: str, p: Any = policy) -> torch.Tensor:
                return p.apply(step, act, sae, fctx)
            hooks.setdefault(policy.site(sae), []).append(fn)
    if lm is not None and info is not None:
        edits = step_hooks(policies, StepInfo(step, info.prompt_len, info.source_step, start), lm, load_states,
                           ctx.text_acts)
        for site, fns in edits.items():
            hooks.setdefault(site, []).extend(fns)
    return hooks


def _context_at(lm: LoadedModel, policies: list[Any], sae: Dictionary | None, ctx: PolicyContext, info: StepInfo,
                load_states: Any) -> ContextAt:
    @contextmanager
    def context(step: int, start: int) -> Iterator[None]:
        here = replace(info, start=start)
        with knockout(lm, policies, StepInfo(step, info.prompt_len, start=start)), \
                hooked(lm.model, lm.adapter, policy_hooks(policies, step, sae, ctx, lm, here, load_states)):
            yield
    return context


def _chooser(request: InterveneRequest, lm: LoadedModel) -> Callable[[torch.Tensor], int] | None:
    return token_chooser(request.sampling, request.seed, lm.device)


def _outcome(lm: LoadedModel, cont: Continuation, case: PromptCase) -> Outcome:
    logp = torch.log_softmax(cont.logits[0], -1)
    out = Outcome(text=lm.tokenizer.decode(cont.tokens), tokens=cont.tokens,
                  top_token=lm.tokenizer.decode([int(logp.argmax())]))
    if case.target:
        t = target_id(lm.tokenizer, case.target)
        out.p_target = float(logp[t].exp())
        if case.foil:
            out.logit_diff = float(cont.logits[0][t] - cont.logits[0][target_id(lm.tokenizer, case.foil)])
    return out


def _runs(lm: LoadedModel, request: InterveneRequest, ids: list[int], policies: list[Any], context_at: ContextAt,
          cached: bool) -> tuple[Continuation, Continuation, Continuation, Continuation]:
    """(baseline, intervened, teacher-forced intervened, teacher-forced baseline), all on one path."""
    n = request.max_new_tokens
    base = continue_greedy(lm, ids, n, choose=_chooser(request, lm), incremental=cached)
    if not policies:
        return base, base, base, base
    edited = continue_greedy(lm, ids, n, context_at=context_at, choose=_chooser(request, lm), incremental=cached)
    if not base.tokens:
        return base, edited, edited, base
    forced = continue_greedy(lm, ids, n, context_at=context_at, forced=base.tokens, incremental=cached)
    # cached: the forced run is one forward, so compare it with one unedited forward over the same tokens
    reference = continue_greedy(lm, ids, n, forced=base.tokens, incremental=True) if cached else base
    return base, edited, forced, reference


def _per_step(lm: LoadedModel, tokens: list[int], base: Continuation, forced: Continuation,
              policies: list[Any]) -> list[StepMetrics]:
    rows = []
    for s, (lb, li) in enumerate(zip(base.logits, forced.logits, strict=True)):
        pb, pi = torch.log_softmax(lb, -1), torch.log_softmax(li, -1)
        tok = tokens[s] if s < len(tokens) else int(lb.argmax())
        rows.append(StepMetrics(step=s, baseline_token=lm.tokenizer.decode([tok]),
                                kl=float((pb.exp() * (pb - pi)).sum()), p_token_baseline=float(pb[tok].exp()),
                                p_token_intervened=float(pi[tok].exp()),
                                policies_active=[i for i, p in enumerate(policies) if p.active(s)]))
    return rows


def _policy_context(lm: LoadedModel, policies: list[Any], sae: Dictionary | None, ids: list[int],
                    text_acts: Any = None, unfitted: frozenset[int] | None = None) -> PolicyContext:
    """A PolicyContext with every source's clean forward done now, never inside an edited forward; feature
    edits at every position leave out the rows the dictionary was not trained on (``unfitted``, found here
    unless the caller already has them for these ``ids``)."""
    if unfitted is None:
        unfitted = unfitted_positions(lm, sae, ids) if sae is not None and features_everywhere(policies) else frozenset()
    ctx = PolicyContext(prompt_len=len(ids), n_heads=lm.n_heads, text_acts=text_acts or clean_text_acts(lm),
                        unfitted=unfitted)
    for p in policies:
        for site, text in p.sources(sae) if isinstance(p, FEATURE_POLICIES) else []:
            ctx.source(site, text)
        if getattr(p, "source", None) is not None and not isinstance(p, FEATURE_POLICIES):
            ctx.text_acts(p.site, p.source)
    return ctx


def _check_positions(policies: list[Any], prompt_len: int, n_new: int, i: int) -> None:
    for j, p in enumerate(policies):
        for field in ("positions", "query_positions", "key_positions"):
            pos = getattr(p, field, None)
            if pos is None:
                continue
            bad = [q for q in pos if not 0 <= (q if q >= 0 else prompt_len + q) < prompt_len + n_new]
            if bad:
                raise InputError("policies", f"policies[{j}].{field} {bad} fall outside prompt {i} ({prompt_len} "
                                 f"tokens + {n_new} generated)", fix=f"use positions in {-prompt_len}.."
                                 f"{prompt_len + n_new - 1} (negative = from the end of the prompt)")


def _prompt(lm: LoadedModel, request: InterveneRequest, case: PromptCase, sae: Dictionary | None, index: int,
            load_states: Any) -> PromptReport:
    ids = list(lm.tokenizer(case.prompt).input_ids)
    policies = list(request.policies)
    n = request.max_new_tokens
    _check_positions(policies, len(ids), n, index)
    ctx = _policy_context(lm, policies, sae, ids)
    info = StepInfo(0, len(ids), source_step=index)
    plan = plan_step_edits(policies, len(ids), max(1, n), lm.lm_kind, field="policies", positionwise=_KINDS)
    context_at = _context_at(lm, policies, sae, ctx, info, load_states)
    base, edited, forced, reference = _runs(lm, request, ids, policies, context_at, plan["path"] == "kv_cache")
    diverged = next((i for i, (a, b) in enumerate(zip(base.tokens, edited.tokens, strict=False)) if a != b), None)
    entry = PromptReport(prompt=case.prompt, target=case.target, foil=case.foil, baseline=_outcome(lm, base, case),
                         intervened=_outcome(lm, edited, case),
                         per_step=_per_step(lm, base.tokens, reference, forced, policies), diverged_at=diverged,
                         generation=GenerationPlan.model_validate(plan))
    metric = _metric(lm, case, base)
    if policies and request.controls:
        def sites_at(step: int) -> list[str]:
            return list(policy_hooks(policies, step, sae, ctx, lm, info, load_states))
        families = {name: [_bound(lm, ctrl, sae, case, index, load_states, ctx) for ctrl in sets]
                    for name, sets in _control_sets(lm, request, policies, sae, ctx, case, len(ids)).items()}
        entry.controls = ControlEffects.model_validate(control_effects(
            lm, ids, base.tokens, policies, lambda k: context_at(k, 0), sites_at, metric, request.controls,
            request.seed + index, families))
    if sae is not None and request.rank_features:
        entry.top_features = rank_features(lm, sae, ids, metric.tokens[0], request.rank_features,
                                           request.include_dense)
    return entry


def _metric(lm: LoadedModel, case: PromptCase, base: Continuation) -> Metric:
    """The effect's metric (see :mod:`neurotrace.lab.intervention.controls`)."""
    if not case.target:
        return Metric((int(base.logits[0].argmax()),), label="log p(the baseline's next token)")
    tokens = tuple(target_token_ids(lm.tokenizer, case.prompt, case.target)) or (target_id(lm.tokenizer, case.target),)
    if case.foil:
        return Metric(tokens, target_id(lm.tokenizer, case.foil, case.prompt, field="prompts"),
                      label=f"logit({case.target!r}) - logit({case.foil!r})")
    return Metric(tokens, label=f"log p({case.target!r})")


def _bound(lm: LoadedModel, policies: list[Any], sae: Dictionary | None, case: PromptCase, index: int,
           load_states: Any, prompt_ctx: PolicyContext) -> Callable[[int], Any]:
    """step -> the context applying ``policies`` (a control of the prompt's) to a full forward over
    ``case.prompt`` (+ generated tokens); the prompt's context lends its clean activations and unfitted rows."""
    ids = list(lm.tokenizer(case.prompt).input_ids)
    n = len(ids)
    ctx = _policy_context(lm, policies, sae, ids, prompt_ctx.text_acts, prompt_ctx.unfitted)
    context = _context_at(lm, policies, sae, ctx, StepInfo(0, n, source_step=index), load_states)
    return lambda step: context(step, 0)


def _control_sets(lm: LoadedModel, request: InterveneRequest, policies: list[Any], sae: Dictionary | None,
                  ctx: PolicyContext, case: PromptCase, prompt_len: int) -> dict[str, list[list[Any]]]:
    mass = None
    if sae is not None and any(isinstance(p, FEATURE_POLICIES) for p in policies):
        rows = [p for p in range(prompt_len) if p not in ctx.unfitted]    # the rows a feature edit reaches
        with torch.no_grad():
            acts = ctx.text_acts(sae.cfg.site, case.prompt).to(lm.device)
            mass = sae.encode(acts[rows] if rows else acts).float().sum(0).cpu()
    return control_sets(policies, n=request.controls, seed=request.seed, n_layers=lm.n_layers, n_heads=lm.n_heads,
                        d_mlp=lm.d_mlp, prompt_len=prompt_len, feature_mass=mass,
                        is_feature=lambda p: isinstance(p, FEATURE_POLICIES))


def damage(lm: LoadedModel, request: InterveneRequest, entries: list[PromptReport], sae: Dictionary | None,
           load_states: Any) -> Damage | None:
    """The policies on neutral text (the prompts' prefixes and plain sentences) and the generations' collapse."""
    policies = list(request.policies)
    if not policies:
        return None
    step = next((s for s in range(request.max_new_tokens + 1) if any(p.active(s) for p in policies)), 0)
    neutral = NeutralSet(lm, [list(lm.tokenizer(e.prompt).input_ids) for e in entries])

    acts = clean_text_acts(lm)

    def edit_for(ids: Any) -> Any:
        ctx = _policy_context(lm, policies, sae, list(ids), acts)
        return _context_at(lm, policies, sae, ctx, StepInfo(0, len(ids), source_step=0), load_states)(step, 0)

    generated = [e for e in entries if e.baseline.tokens or e.intervened.tokens]
    collapsed = new_collapses([(e.baseline.tokens, e.baseline.text) for e in generated],
                              [(e.intervened.tokens, e.intervened.text) for e in generated]) if generated else None
    return judge(neutral.measure(edit_for), len(generated), collapsed)


def _loader(lab: Lab, run: Any) -> Callable[[str, str], tuple[Any, list[dict]]]:
    cache: dict[tuple[str, str], tuple[Any, list[dict]]] = {}

    def load(run_id: str, site: str) -> tuple[Any, list[dict]]:
        if (run_id, site) not in cache:
            ds = load_trace_dataset(lab, run_id, site, field="policies")
            run.add_input(run_id)
            cache[(run_id, site)] = (ds.states, ds.steps)
        return cache[(run_id, site)]
    return load


def sae_caution(lab: Lab, run_id: str) -> str | None:
    """A warning when fit_sae judged the SAE marginal or unusable (null when usable, or its metrics are
    missing or unreadable: runs written before the verdict)."""
    try:
        metrics = SAEMetrics.model_validate(lab.store.read_json(run_id, METRICS_FILE))
    except (NotFound, OSError, ValueError):
        return None
    if metrics.verdict == "usable":
        return None
    why = f" ({', '.join(metrics.below_bar)})" if metrics.below_bar else ""
    return f"the SAE was judged {metrics.verdict} by fit_sae{why}: its features may not be meaningful"


def _dictionary(lab: Lab, request: InterveneRequest) -> Dictionary | None:
    """The dictionary of ``fit_sae_run_id`` (a complete fit_sae run) or ``dictionary`` (any reference)."""
    if request.fit_sae_run_id and request.dictionary:
        raise InputError("dictionary", "both fit_sae_run_id and dictionary given",
                         fix="pass one of them (dictionary takes a run id too)")
    if request.fit_sae_run_id:
        load_sae_run(lab, request.fit_sae_run_id)                       # a complete fit_sae run, or a typed error
    field = "fit_sae_run_id" if request.fit_sae_run_id else "dictionary"
    ref = request.fit_sae_run_id or request.dictionary
    d = load_dictionary(lab, ref, field=field) if ref else None
    if d is not None and d.cfg.transcoder:
        raise InputError(field, f"{ref} is a transcoder ({d.cfg.site} -> {d.cfg.out_site}); intervene edits an SAE's "
                         "features in place at one site", fix="pass an SAE (site == output site)")
    return d


def run_intervene(request: InterveneRequest, *, lab: Lab, reporter: Reporter = NULL_REPORTER) -> InterveneResult:
    """Apply SAE-feature or component policies per generation step and compare with the baseline
    (p(target), logit differences, text, per-step KL); rank SAE features by causal effect; write report.json."""
    lab.check(request)  # bounds and the whole-job estimate, before any work
    check_execution(request)
    sae = _dictionary(lab, request)
    model = request.model or (sae.cfg.model if sae is not None else None)
    if model is None:
        raise InputError("model", "no model given and no SAE to take it from", fix="pass model or fit_sae_run_id")
    check_backend(request.precision, request.backend, bool(request.remote))
    precision, note = resolve(request.precision, request.insist_precision, request.device)
    with lease_pair(lab.cache, ModelRef(model=model, device=request.device, dtype=request.dtype,
                                        backend=request.backend), precision) as (work, lm):
        request = apply_chat(request, lm.tokenizer, model, many=("prompts",))
        cases = _cases(request)
        if lm.lm_kind != "causal" and request.max_new_tokens:
            raise InputError("max_new_tokens", "a masked LM does not generate", fix="use max_new_tokens=0")
        sae = sae.to(lm.device) if sae is not None else None
        if sae is not None:
            check_fits(sae, lm, model, field="dictionary" if request.dictionary else "fit_sae_run_id")
        check_policies(list(request.policies), sae)
        for p in request.policies:
            if not isinstance(p, COMPONENT_EDITS):
                check_site(p.site(sae), lm, field="policies")
        validate([p for p in request.policies if isinstance(p, COMPONENT_EDITS)], lm,
                 lambda run_id: capture_info(lab.store, run_id, "policies").sites, field="policies")
        with lab.store.open_run("intervene", request, seed=request.seed) as run:
            run.add_model(model, lm.fingerprint, lm.provenance)
            load_states = _loader(lab, run)
            entries = []
            for i, case in enumerate(cases):
                reporter.step(i, len(cases), f"prompt {i + 1} of {len(cases)}")
                entries.append(_prompt(work, request, case, sae, i, load_states))
            reporter.step(len(cases), len(cases), "writing report")
            if sae is not None:
                record_dictionary(run, sae)
            caution = sae_caution(lab, sae.cfg.source) if sae is not None and sae.cfg.kind == "run" else None
            harm = damage(lm, request, entries, sae, load_states)      # float32 either way: it decides `destructive`
            agreed = None
            if precision == "bfloat16":   # the deciding prompt and a seeded sample again, in float32
                reporter.step(len(cases), len(cases), "float32 recheck of the deciding prompt and a seeded sample")
                picked, n_deciding = pick(len(entries), deciding_prompt(entries), request.seed)
                again = {i: _prompt(lm, request, cases[i], sae, i, load_states) for i in picked}
                check = compare(entries, again, harm, bool(request.max_new_tokens),
                                PromptsCheck(picked=picked, n_deciding=n_deciding, n_prompts=len(entries)))
                agreed = to_agreement(check, request.seed)
            return write_report(run, request, lm, sae, entries, lab, caution, harm,
                                names=named_features(lab, sae, list(request.policies)),
                                precision=(precision, note, agreed))


def named_features(lab: Lab, sae: Dictionary | None, policies: list) -> str | None:
    """Whether each edited SAE feature has a name (explain) and how well the name predicts, in one sentence."""
    edited = sorted({f for p in policies for f in getattr(p, "features", None) or []})
    if sae is None or not edited:
        return None
    labels = dictionary_labels(lab, sae)
    parts = []
    for f in edited[:8]:
        label = labels.get(str(f))
        parts.append(f"feature {f} is named {label.explanation!r} ({label.verdict}: detection "
                     f"{label.detection:.2f}, fuzzing {label.fuzzing:.2f})" if label else f"feature {f} is unnamed")
    unnamed = [f for f in edited if str(f) not in labels]
    tail = (f" (explain can name {'it' if len(unnamed) == 1 else 'them'} and score the name blind)"
            if unnamed else "")
    return "Names: " + "; ".join(parts) + tail

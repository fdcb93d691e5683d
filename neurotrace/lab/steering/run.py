"""steer: does adding a direction to the residual stream move the model, more than its controls do?

1. The direction (:mod:`neurotrace.lab.steering.directions`): a difference of means over contrastive
   prompt pairs, an SAE feature's decoder row, or a probe's direction; it lives at one site
   (``blocks.L.hook_resid_pre`` for pairs), and ``layers`` moves it to the same hook of other layers.
2. Scale: alphas are in units of ``ref_norm``, the mean residual norm at the first site at the steered
   prompts' last token; the added vector is ``alpha * ref_norm * d / |d|``. The shuffled control gets
   the same factor (``ref_norm / |d|``), so it keeps its size relative to ``d``; each random control is
   a seeded Gaussian direction with norm ``alpha * ref_norm``.
3. Measure (:mod:`neurotrace.lab.steering.measure`): p(targets) at the last position for every alpha
   (and 0) and every condition: the direction, each random direction, the shuffled direction, and the
   direction on ``control_prompts``; greedy steered text for the first few prompts at every alpha.
4. Judge (:mod:`neurotrace.lab.steering.verdict`): ``causal``, ``weak``, ``confounded`` or ``no effect``
   from the changes at the largest |alpha|, by thresholds the report prints.
"""

import math
import re

import torch

from neurotrace.lab.effects import Damage, NeutralSet, judge, new_collapses
from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.access.chat import apply_chat
from neurotrace.lab.model.access.tokens import target_id
from neurotrace.lab.model.runtime.pooling import collect, tokenize_prompts
from neurotrace.lab.model.weights.loading import LoadedModel, ModelRef
from neurotrace.lab.progress import NULL_REPORTER, Reporter
from neurotrace.lab.sae import check_fits, record_dictionary
from neurotrace.lab.seeding import make_generator
from neurotrace.lab.steering.directions import Direction, resolve
from neurotrace.lab.steering.measure import neutral_edit, steered_generations, target_probs
from neurotrace.lab.steering.report import Measured, write_outputs
from neurotrace.lab.steering.schema import PairsDirection, SteerRequest, SteerResult
from neurotrace.lab.steering.verdict import concept_score

MAX_TEXT_PROMPTS = 3
LAYER_RE = re.compile(r"^blocks\.(\d+)\.")


def _alphas(values: list[float]) -> list[float]:
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise InputError("alphas", f"alphas must be finite, got {bad}", fix="remove nan/inf values")
    out = sorted({0.0, *map(float, values)})
    if len(out) == 1:
        raise InputError("alphas", "no nonzero alpha", fix="give e.g. [0.5, 1, 2]")
    return out


def _sites(request: SteerRequest, d: Direction, lm: LoadedModel) -> list[str]:
    if request.layers is None:
        return [d.site]
    bad = [layer for layer in request.layers if not 0 <= layer < lm.n_layers]
    if bad or not request.layers or not LAYER_RE.match(d.site):
        raise InputError("layers", f"layers {bad or request.layers} cannot take a direction from {d.site}",
                         fix=f"use layers in 0..{lm.n_layers - 1}, or omit `layers`")
    return [LAYER_RE.sub(f"blocks.{layer}.", d.site) for layer in sorted(set(request.layers))]


def _width_check(d: Direction, lm: LoadedModel) -> None:
    width = lm.d_mlp if d.site.endswith("mlp.hook_post") else lm.d_model
    if d.vector.numel() != width:
        raise InputError("direction_from", f"the direction is {d.vector.numel()} wide but {d.site} of "
                         f"{lm.ref.model!r} is {width} wide", fix="use a direction fitted on this model")
    if float(d.vector.norm()) == 0.0:
        raise InputError("direction_from", "the direction is zero (the concept and control prompts give the "
                         "same residual)", fix="use pairs that differ in the concept")


def run_steer(request: SteerRequest, *, lab: Lab, reporter: Reporter = NULL_REPORTER) -> SteerResult:
    """Steer along a direction with an alpha sweep and its controls (see the module docstring)."""
    lab.check(request)  # bounds and the whole-job estimate, before any work
    alphas = _alphas(request.alphas)
    ref = ModelRef(model=request.model, device=request.device)
    with lab.cache.lease(ref) as lm:
        request = apply_chat(request, lm.tokenizer, request.model, many=("prompts", "control_prompts"))
        if lm.lm_kind != "causal":
            raise InputError("model", f"{request.model!r} is a masked LM; steer generates text",
                             fix="use a causal LM such as 'fact-gpt2'")
        # an SAE or probe direction is read from disk (no forward): its checks come before the run opens
        d = None if isinstance(request.direction_from, PairsDirection) else _checked(request, lab, lm, reporter)
        with lab.store.open_run("steer", request, seed=request.seed) as run:
            run.add_model(request.model, lm.fingerprint, lm.provenance)
            d = d or _checked(request, lab, lm, reporter)
            if d.input_run:
                run.add_input(d.input_run)
            if d.dictionary is not None:
                record_dictionary(run, d.dictionary)
            sites = _sites(request, d, lm)
            measured = _measure(request, lm, d, sites, alphas, reporter)
            return write_outputs(run, request, d, sites, alphas, measured)


def _checked(request: SteerRequest, lab: Lab, lm: LoadedModel, reporter: Reporter) -> Direction:
    """The request's direction, checked against the model (its dictionary fits, its width)."""
    d = resolve(request, lab, lm, reporter)
    if d.dictionary is not None:
        check_fits(d.dictionary, lm, request.model, field="direction_from")
    _width_check(d, lm)
    return d


def _measure(request: SteerRequest, lm: LoadedModel, d: Direction, sites: list[str], alphas: list[float],
             reporter: Reporter) -> Measured:
    ids = tokenize_prompts(lm, request.prompts, extra_positions=request.max_new_tokens)
    ctrl = tokenize_prompts(lm, request.control_prompts, "control_prompts") if request.control_prompts else []
    targets = sorted({target_id(lm.tokenizer, t, field="targets") for t in request.targets})
    ref_norm = float(collect(lm, ids, [sites[0]], "last")[sites[0]].norm(dim=-1).mean())
    scale = ref_norm / float(d.vector.norm())
    g = make_generator(request.seed + 7919)
    rand = torch.randn(request.n_random, d.vector.numel(), generator=g)
    rand = rand / rand.norm(dim=1, keepdim=True) * ref_norm                          # (n_random, width)
    base = [d.vector * scale, *rand] + ([d.shuffled * scale] if d.shuffled is not None else [])
    a = torch.tensor(alphas)
    vectors = torch.cat([a[:, None] * b[None] for b in base])                         # (conds * alphas, width)
    probs = target_probs(lm, ids, sites, vectors, targets, request.positions, reporter)
    probs = probs.reshape(len(base), len(alphas), len(ids))                           # (cond, alpha, prompt)
    ctrl_probs = (target_probs(lm, ctrl, sites, a[:, None] * base[0][None], targets, request.positions, reporter)
                  if ctrl else None)                                                  # (alpha, control prompt)
    texts, concept, gens = _generations(request, lm, ids, sites, base[: 1 + request.n_random], a, reporter)
    damage = _damage(lm, ids, sites, a, base[0], gens)
    return Measured(ref_norm=ref_norm, probs=probs, ctrl_probs=ctrl_probs, n_random=request.n_random,
                    has_shuffled=d.shuffled is not None, texts=texts, target_ids=targets, concept=concept,
                    damage=damage)


def _generations(request: SteerRequest, lm: LoadedModel, ids: list[list[int]], sites: list[str],
                 base: list[torch.Tensor], a: torch.Tensor, reporter: Reporter
                 ) -> tuple[list[dict], torch.Tensor | None, list[list[tuple[list[int], str]]]]:
    """Greedy text of the first prompts for the direction and every random direction at every alpha: the
    direction's texts, the concept score (condition, alpha) averaged over prompts, and per prompt every
    generation (condition-major rows)."""
    if not request.max_new_tokens:
        return [], None, []
    n = min(MAX_TEXT_PROMPTS, len(ids))
    concept_words = [*request.targets, *request.concept_words]
    vectors = torch.cat([a[:, None] * b[None] for b in base])                        # (conds * alphas, width)
    scores = torch.zeros(len(base), len(a), dtype=torch.float64)
    texts, gens = [], []
    for i in range(n):
        reporter.step(i, n, f"steered text for prompt {i + 1}")
        out = steered_generations(lm, ids[i], sites, vectors, request.positions, request.max_new_tokens)
        gens.append(out)
        for r, (_, text) in enumerate(out):
            scores[r // len(a), r % len(a)] += concept_score(text, concept_words, request.contrast_words) / n
        texts += [{"alpha": float(alpha), "prompt": request.prompts[i], "text": t}
                  for alpha, (_, t) in zip(a.tolist(), out[: len(a)], strict=True)]
    return texts, scores, gens


def _damage(lm: LoadedModel, ids: list[list[int]], sites: list[str], a: torch.Tensor, direction: torch.Tensor,
            gens: list[list[tuple[list[int], str]]]) -> list[Damage]:
    """Per alpha: the direction added at every position of neutral text, and its generations' collapse."""
    neutral = NeutralSet(lm, ids)
    j0 = a.tolist().index(0.0)
    out = []
    for j, alpha in enumerate(a.tolist()):
        measured = neutral.measure(neutral_edit(lm, sites, alpha * direction))
        base = [g[j0] for g in gens]
        edited = [g[j] for g in gens]
        collapsed = new_collapses(base, edited) if gens else None
        out.append(judge(measured, len(edited), collapsed))
    return out

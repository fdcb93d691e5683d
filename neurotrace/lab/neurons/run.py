"""find_neurons: which MLP neurons answer a question? Rank them, or show where one fires.

A neuron is one unit of ``blocks.{L}.mlp.hook_post`` (the MLP hidden vector after the nonlinearity),
written ``"L:i"`` exactly as clamp_sweep takes it. Three modes:

1. ``contrast``: record every neuron of the chosen layers on the concept ``prompts`` (group A) and the
   ``control_prompts`` (group B), pooled per prompt at the scored (last) token or over all tokens, and
   rank neurons by Cohen's d of A vs B, with a seeded permutation p-value and Bonferroni / BH
   corrections over every neuron tested (:mod:`neurotrace.lab.neurons.stats`).
2. ``collapse``: generate greedily from ``prompts`` with clamp_sweep's generator and collapse rules
   (:mod:`neurotrace.lab.neurons.collapse`); group A = prompts whose output collapsed, B = healthy ones;
   the activation is pooled over the last prompt token and the first ``window`` generated tokens. The
   top neurons are the candidates to hand to ``clamp_sweep``.
3. ``top_examples``: for one ``neuron``, every (prompt, position) activation over ``prompts``, highest
   first.

A ranking is evidence of association, not cause: test the top neurons with clamp_sweep or intervene.
"""

import torch
from torch import Tensor

from neurotrace.lab.clamping import generation_ids
from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.access.adapters import site_name
from neurotrace.lab.model.access.chat import apply_chat
from neurotrace.lab.model.access.neurons import parse_neuron
from neurotrace.lab.model.runtime.pooling import collect, tokenize_prompts
from neurotrace.lab.model.runtime.precision import lease_pair, resolve
from neurotrace.lab.model.weights.loading import LoadedModel, ModelRef
from neurotrace.lab.neurons.collapse import generate_and_record
from neurotrace.lab.neurons.precision import recheck_examples, recheck_ranking
from neurotrace.lab.neurons.report import write_examples, write_ranking
from neurotrace.lab.neurons.schema import FindNeuronsRequest, FindNeuronsResult
from neurotrace.lab.neurons.stats import contrast
from neurotrace.lab.progress import NULL_REPORTER, Reporter
from neurotrace.lab.runs import Run

BATCH_SIZE = 32  # prompts per forward


def run_find_neurons(request: FindNeuronsRequest, *, lab: Lab,
                     reporter: Reporter = NULL_REPORTER) -> FindNeuronsResult:
    """Rank MLP neurons by contrast or collapse, or list one neuron's top examples (module docstring)."""
    lab.check(request)  # bounds and the whole-job estimate, before any work
    _check_fields(request)
    precision, note = resolve(request.precision, request.insist_precision, request.device)
    ref = ModelRef(model=request.model, device=request.device)
    with lease_pair(lab.cache, ref, precision) as (work, lm):
        templated = apply_chat(request, lm.tokenizer, request.model, many=("prompts", "control_prompts"))
        if request.mode != "collapse":    # collapse mode generates as clamp_sweep does (chat_template = chat)
            request = templated
        if request.mode == "collapse" and lm.lm_kind != "causal":
            raise InputError("mode", f"{request.model!r} is a masked LM; collapse mode needs generation",
                             fix="use a causal LM, or mode='contrast'")
        with lab.store.open_run("find_neurons", request, seed=request.seed) as run:
            run.add_model(request.model, lm.fingerprint, lm.provenance)
            if request.mode == "top_examples":
                return _top_examples(run, request, work, reporter, lm if precision == "bfloat16" else None, note)
            layers = _layers(request, lm)
            x, n_a, generations, (ids, order, reasons) = _groups(run, request, work, layers, reporter)
            stats = contrast(x, n_a, request.n_permutations, request.seed, reporter)
            agreed = None
            if precision == "bfloat16":   # the deciding prompts and a seeded sample again, in float32
                reporter.step(0, 1, "float32 recheck of the deciding prompts and a seeded sample")
                agreed = recheck_ranking(lm, request, layers, ids, order, x, n_a, stats, reasons)
            return write_ranking(run, request, lm, layers, stats, n_a, x.shape[0] - n_a, generations,
                                 (precision, note, agreed))


def _check_fields(request: FindNeuronsRequest) -> None:
    if request.mode == "contrast" and not request.control_prompts:
        raise InputError("control_prompts", "contrast mode needs control prompts to compare with",
                         fix="give control_prompts (prompts without the concept), or use mode='collapse'")
    if request.mode == "contrast" and len(request.prompts) + len(request.control_prompts) < 3:
        raise InputError("prompts", "a contrast needs at least 3 prompts in all", fix="give more prompts")
    if request.mode == "top_examples" and not request.neuron:
        raise InputError("neuron", "top_examples mode needs a neuron", fix="give neuron='layer:index', e.g. '5:12'")


def _layers(request: FindNeuronsRequest, lm: LoadedModel) -> list[int]:
    if request.layers is None:
        return list(range(lm.n_layers))
    bad = [layer for layer in request.layers if not 0 <= layer < lm.n_layers]
    if bad or not request.layers:
        raise InputError("layers", f"layers {bad or '[]'} are out of range ({lm.n_layers} layers)",
                         fix=f"use layers in 0..{lm.n_layers - 1} or omit `layers`")
    return sorted(set(request.layers))


def _stack(acts: dict[int, Tensor], layers: list[int]) -> Tensor:
    return torch.cat([acts[layer] for layer in layers], 1)             # (prompts, layers * d_mlp)


def _groups(run: Run, request: FindNeuronsRequest, lm: LoadedModel, layers: list[int],
            reporter: Reporter) -> tuple[Tensor, int, list[dict] | None, tuple]:
    """(activations with group A first, n_a, collapse-mode generations or None, (every prompt's token ids,
    the prompt of each activation row, collapse mode's reasons per prompt or None))."""
    sites = [site_name("mlp_post", layer) for layer in layers]
    if request.mode == "contrast":
        ids = tokenize_prompts(lm, request.prompts) + tokenize_prompts(lm, request.control_prompts,
                                                                       "control_prompts")
        acts = collect(lm, ids, sites, request.position, reporter, BATCH_SIZE)
        return _stack({layer: acts[s] for layer, s in zip(layers, sites, strict=True)}, layers), \
            len(request.prompts), None, (ids, list(range(len(ids))), None)
    ids = _generation_ids(lm, request)
    gen = generate_and_record(lm, ids, layers, max_new_tokens=request.max_new_tokens, window=request.window,
                              thresholds=request.thresholds, batch_size=BATCH_SIZE, reporter=reporter)
    rows = [{"prompt_index": i, "prompt": p, "output": gen.texts[i], "collapsed": bool(gen.reasons[i]),
             "reasons": "; ".join(gen.reasons[i])} for i, p in enumerate(request.prompts)]
    run.write_csv("tables/generations.csv", rows)
    collapsed = [i for i, r in enumerate(gen.reasons) if r]
    healthy = [i for i, r in enumerate(gen.reasons) if not r]
    if not collapsed or not healthy:
        which = "none" if not collapsed else "every one"
        raise InputError("prompts", f"{which} of the {len(ids)} generations collapsed, so there is nothing to "
                         "contrast", fix="mix prompts that loop with prompts that do not (see "
                         "tables/generations.csv of this run), or raise max_new_tokens")
    x = _stack(gen.acts, layers)
    return x[collapsed + healthy], len(collapsed), [rows[i] for i in collapsed + healthy], \
        (ids, collapsed + healthy, gen.reasons)


def _generation_ids(lm: LoadedModel, request: FindNeuronsRequest) -> list[list[int]]:
    """clamp_sweep's tokenisation (its BOS rule; chat -> its chat_template), so the hand-off reproduces these
    baselines."""
    limit, out = lm.max_positions, []
    for i, text in enumerate(request.prompts):
        ids = generation_ids(lm, text, chat_template=request.chat, model=request.model)
        if not ids:
            raise InputError("prompts", f"prompts[{i}] tokenizes to nothing", fix="give it text")
        if limit and len(ids) + request.max_new_tokens > limit:
            raise InputError("prompts", f"prompts[{i}] has {len(ids)} tokens (+{request.max_new_tokens} generated); "
                             f"the model has {limit} positions", fix="shorten the prompt or lower max_new_tokens")
        out.append(ids)
    return out


def _top_examples(run: Run, request: FindNeuronsRequest, lm: LoadedModel, reporter: Reporter,
                  lm32: LoadedModel | None = None, note: str | None = None) -> FindNeuronsResult:
    """One neuron's activations at every position; ``lm32``: the float32 model of a bfloat16 run's recheck."""
    ref = request.neuron or ""
    parsed = parse_neuron(ref, lm.n_layers, lm.d_mlp, field="neuron")
    if len(parsed) != 1:
        raise InputError("neuron", f"{ref!r} names a neuron in every layer", fix="give one layer, e.g. '5:12'")
    (layer, (index,)), = parsed.items()
    ids = tokenize_prompts(lm, request.prompts)
    site = site_name("mlp_post", layer)
    acts = collect(lm, ids, [site], "all", reporter, BATCH_SIZE)[site]
    values = [a[:, index] for a in acts]                                   # per prompt: (pos,)
    agreed = recheck_examples(lm32, request, ids, site, index, values) if lm32 is not None else None
    return write_examples(run, request, lm, layer, index, ids, values,
                          ("bfloat16" if lm32 is not None else "float32", note, agreed))

"""Turn a find_neurons run into its artifacts and result.

Written files:

* ``tables/neurons.csv``: the ranked neurons (at most ``TABLE_ROWS``): rank, neuron ('L:i'), layer,
  index, mean_a, mean_b, diff, cohens_d, moderated_d (the ranking key, see
  :mod:`neurotrace.lab.neurons.stats`), p_value, p_bonferroni, q_bh.
* ``arrays/contrast.safetensors``: for each layer, the full (d_mlp,) vectors ``L.cohens_d``,
  ``L.diff``, ``L.p_value`` (every neuron, not only the ranked ones).
* ``tables/generations.csv`` (collapse mode): each prompt's greedy output and collapse reasons.
* ``tables/examples.csv`` (top_examples): every (prompt, position) activation, highest first.
* ``neurons_results.json`` (input of :mod:`neurotrace.lab.neurons.figures`), ``report.md``, figures.
"""

import json
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from neurotrace.lab.model.access.neurons import neuron_label
from neurotrace.lab.model.access.tokens import token_texts
from neurotrace.lab.model.runtime.precision import Agreement
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.neurons.figures import FIGURES, RESULTS_FILE
from neurotrace.lab.neurons.schema import (
    Example,
    FindNeuronsRequest,
    FindNeuronsResult,
    NeuronExamplesResults,
    NeuronRankingResults,
    NeuronScore,
)
from neurotrace.lab.neurons.stats import Contrast, rank
from neurotrace.lab.runs import Run

TABLE_ROWS = 1000
CONTEXT_TOKENS = 8
GROUPS = {"contrast": ("concept", "control"), "collapse": ("collapsed", "healthy")}


def min_attainable_p(n_a: int, n_b: int, n_permutations: int) -> float:
    """About the smallest p the test can give: one exceedance in P shuffles, or the most extreme of the
    C(n, n_a) distinct splits (two of them when the groups are the same size and the test is two-sided)."""
    splits = math.comb(n_a + n_b, n_a) / (2 if n_a == n_b else 1)
    return max(1 / (1 + n_permutations), 1 / splits)


def _scores(stats: Contrast, layers: list[int], d_mlp: int, order: Tensor, k: int) -> list[NeuronScore]:
    out = []
    for col in order[:k].tolist():
        layer, index = layers[col // d_mlp], col % d_mlp
        out.append(NeuronScore(neuron=neuron_label(layer, index), mean_a=float(stats.mean_a[col]), mean_b=float(stats.mean_b[col]),
                               cohens_d=float(stats.cohens_d[col]), p_value=float(stats.p_value[col]),
                               p_bonferroni=float(stats.p_bonferroni[col]), q_bh=float(stats.q_bh[col])))
    return out


def _tensors(stats: Contrast, layers: list[int], d_mlp: int) -> dict[str, Tensor]:
    out = {}
    for j, layer in enumerate(layers):
        cols = slice(j * d_mlp, (j + 1) * d_mlp)
        for name in ("cohens_d", "diff", "p_value"):
            out[f"{layer}.{name}"] = getattr(stats, name)[cols].float()
    return out


def _with_precision(summary: str, precision: tuple[str, str | None, Agreement | None]) -> str:
    """The summary with resolve's note and the bfloat16 agreement after it."""
    _, note, agreed = precision
    return " ".join(t for t in (summary, note, agreed.summary if agreed else None) if t)


def write_ranking(run: Run, request: FindNeuronsRequest, lm: LoadedModel, layers: list[int], stats: Contrast,
                  n_a: int, n_b: int, generations: list[dict] | None,
                  precision: tuple[str, str | None, Agreement | None] = ("float32", None, None)) -> FindNeuronsResult:
    """Every artifact of a ranking and the result; ``precision`` = (the precision run, resolve's note, the
    bfloat16 run's agreement)."""
    order = rank(stats)
    m = order.numel()
    table = _scores(stats, layers, lm.d_mlp, order, min(TABLE_ROWS, m))
    moderated = stats.moderated_d[order[: len(table)]].tolist()
    rows = [{"rank": i + 1, **s.model_dump(), "layer": s.neuron.split(":")[0], "index": s.neuron.split(":")[1],
             "diff": s.mean_a - s.mean_b, "moderated_d": md}
            for i, (s, md) in enumerate(zip(table, moderated, strict=True))]
    table_uri = run.write_csv("tables/neurons.csv", rows, ["rank", "neuron", "layer", "index", "mean_a", "mean_b",
                                                           "diff", "cohens_d", "moderated_d", "p_value",
                                                           "p_bonferroni", "q_bh"])
    run.write_tensors("arrays/contrast.safetensors", _tensors(stats, layers, lm.d_mlp),
                      metadata={"layers": ",".join(map(str, layers)), "d_mlp": str(lm.d_mlp)})
    top = table[: request.top_k]
    a_name, b_name = GROUPS[request.mode]
    results = NeuronRankingResults(
        mode=request.mode, model=request.model, groups=(a_name, b_name), n_a=n_a, n_b=n_b, n_tested=m,
        position=request.position, n_permutations=request.n_permutations,
        min_p=min_attainable_p(n_a, n_b, request.n_permutations), top=table[:50],
        n_bonferroni_05=int((stats.p_bonferroni < 0.05).sum()), n_bh_05=int((stats.q_bh < 0.05).sum()),
        precision=precision[0], precision_agreement=precision[2])
    run.write_json(RESULTS_FILE, results.model_dump(mode="json"))
    report_uri = run.write_text("report.md", _markdown(request, results, top, generations))
    figures = [run.write_figure("figures/ranking.png", FIGURES["ranking"](results))]
    summary = _with_precision(_ranking_summary(request, results, top), precision)
    run.set_summary(summary)
    return FindNeuronsResult(run_id=run.run_id, summary=summary, artifacts=run.artifact_uris(), figures=figures,
                             next=_ranking_next(request, top, generations, report_uri), mode=request.mode,
                             n_a=n_a, n_b=n_b, n_tested=m, top=top, table=table_uri, precision=precision[0],
                             precision_agreement=precision[2])


def _ranking_summary(request: FindNeuronsRequest, results: NeuronRankingResults, top: list[NeuronScore]) -> str:
    a, b = results.groups
    where = ("the last prompt token and the first "
             f"{request.window} generated tokens" if request.mode == "collapse" else f"{request.position} position")
    text = (f"Ranked {results.n_tested} MLP neurons of {request.model} by (moderated) Cohen's d between "
            f"{results.n_a} {a} and {results.n_b} {b} prompts ({where}).")
    if top:
        text += " Top: " + ", ".join(f"{s.neuron} (d={s.cohens_d:.3g}, p={s.p_value:.2g}, Bonferroni "
                                     f"{s.p_bonferroni:.2g})" for s in top[:3]) + "."
    text += (f" {results.n_bonferroni_05} neurons pass Bonferroni at 0.05, {results.n_bh_05} pass BH q < "
             f"0.05 (smallest attainable p with these group sizes and {request.n_permutations} permutations: "
             f"{results.min_p:.2g}). "
             "Association only: test causally before concluding.")
    return text


HANDOFF_COLLAPSED, HANDOFF_HEALTHY = 8, 4


def clamp_handoff(request: FindNeuronsRequest, neuron: str, generations: list[dict] | None) -> dict:
    """The clamp_sweep request that tests ``neuron`` on collapsed prompts (and a few healthy ones, for induced
    collapses), generating exactly as this run did: same prompts, max_new_tokens, greedy sampling, collapse
    thresholds and tokenisation (chat -> chat_template; BOS by the same rule)."""
    rows = generations or []
    prompts = ([g["prompt"] for g in rows if g["collapsed"]][:HANDOFF_COLLAPSED]
               + [g["prompt"] for g in rows if not g["collapsed"]][:HANDOFF_HEALTHY])
    out = {"model": request.model, "neurons": [neuron], "prompts": prompts, "max_new_tokens": request.max_new_tokens}
    if request.precision != "float32":                # the same precision generates the same baselines
        out["precision"] = request.precision
    return {**out, "chat_template": True} if request.chat else out


def _ranking_next(request: FindNeuronsRequest, top: list[NeuronScore], generations: list[dict] | None,
                  report_uri: str) -> str:
    if not top:
        return f"Read {report_uri}."
    s = top[0]
    if request.mode == "collapse":
        return (f"Call `clamp_sweep` with {json.dumps({'request': clamp_handoff(request, s.neuron, generations)})} "
                "to test whether clamping it rescues the collapsed prompts (its baselines are these generations: "
                "same tokenisation, BOS rule and collapse rules); its random-neuron controls are the control.")
    return (f"Test {s.neuron} causally: intervene with a policy {{'kind': 'set_neurons', 'neurons': "
            f"['{s.neuron}'], 'value': 0}}, or clamp_sweep with neurons ['{s.neuron}']; see what it "
            f"responds to with find_neurons mode='top_examples', neuron='{s.neuron}'.")


def _markdown(request: FindNeuronsRequest, results: NeuronRankingResults, top: list[NeuronScore],
              generations: list[dict] | None) -> str:
    a, b = results.groups
    lines = [f"# find_neurons ({request.mode}) on {request.model}", "",
             f"Group A: {results.n_a} {a} prompts; group B: {results.n_b} {b} prompts; "
             f"{results.n_tested} neurons tested (blocks.{{L}}.mlp.hook_post).", "",
             "Statistics: Cohen's d with the pooled sample SD (floored at 1e-6); ranked by the moderated d "
             "diff / (SD + 0.05 x median SD over neurons), so near-constant neurons do not top the list; two-sided permutation p-value "
             f"of the mean difference over {request.n_permutations} seeded label shuffles (seed {request.seed}), "
             f"p = (1 + exceedances) / (1 + permutations); with {results.n_a} + {results.n_b} prompts p cannot go "
             f"much below {results.min_p:.2g}.", "",
             f"Multiple comparisons: {results.n_tested} neurons were tested; Bonferroni multiplies p by that "
             "count, BH q-values control the false-discovery rate. "
             f"{results.n_bonferroni_05} pass Bonferroni at 0.05, {results.n_bh_05} pass BH at 0.05.", "",
             "| rank | neuron | mean A | mean B | d | p | Bonferroni | BH q |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {i} | {s.neuron} | {s.mean_a:.4g} | {s.mean_b:.4g} | {s.cohens_d:.4g} | {s.p_value:.3g} | "
              f"{s.p_bonferroni:.3g} | {s.q_bh:.3g} |" for i, s in enumerate(top, 1)]
    if generations:
        lines += ["", "## Generations", ""]
        lines += [f"- {'COLLAPSED' if g['collapsed'] else 'healthy'}: `{g['prompt']}` -> `{g['output']}` "
                  f"{g['reasons']}" for g in generations[:50]]
    return "\n".join(lines) + "\n"


def write_examples(run: Run, request: FindNeuronsRequest, lm: LoadedModel, layer: int, index: int,
                   ids: Sequence[Sequence[int]], values: Sequence[Tensor],
                   precision: tuple[str, str | None, Agreement | None] = ("float32", None, None)) -> FindNeuronsResult:
    flat = [(float(v), p, pos) for p, vec in enumerate(values) for pos, v in enumerate(vec.tolist())]
    flat.sort(key=lambda t: (-t[0], t[1], t[2]))
    rows = []
    for act, p, pos in flat[:TABLE_ROWS]:
        start = max(0, pos - CONTEXT_TOKENS)
        rows.append(Example(prompt_index=p, pos=pos, token=token_texts(lm.tokenizer, [ids[p][pos]])[0],
                            activation=act, context=lm.tokenizer.decode(list(ids[p][start:pos + 1]))))
    ref = neuron_label(layer, index)
    table_uri = run.write_csv("tables/examples.csv", [{"rank": r, **e.model_dump()} for r, e in enumerate(rows, 1)])
    all_acts = torch.cat([v.float() for v in values])
    results = NeuronExamplesResults(mode="top_examples", model=request.model, neuron=ref, n_positions=len(flat),
                                    mean=float(all_acts.mean()), max=float(all_acts.max()), examples=rows[:50],
                                    precision=precision[0], precision_agreement=precision[2])
    run.write_json(RESULTS_FILE, results.model_dump(mode="json"))
    figures = [run.write_figure("figures/examples.png", FIGURES["examples"](results))]
    top = rows[: request.top_k]
    summary = (f"Neuron {ref} of {request.model} over {len(ids)} prompts ({len(flat)} positions): mean activation "
               f"{results.mean:.4g}, max {results.max:.4g}. Top: " +
               ", ".join(f"{e.token!r} in prompt {e.prompt_index} ({e.activation:.3g})" for e in top[:5]) + ".")
    summary = _with_precision(summary, precision)
    run.set_summary(summary)
    nxt = (f"Check that the pattern is specific with find_neurons mode='contrast' (prompts like the top examples "
           f"vs controls), then test it causally with clamp_sweep neurons=['{ref}'] or intervene set_neurons "
           f"{{'neurons': ['{ref}']}}.")
    return FindNeuronsResult(run_id=run.run_id, summary=summary, artifacts=run.artifact_uris(), figures=figures,
                             next=nxt, mode="top_examples", n_a=len(ids), examples=top, table=table_uri,
                             precision=precision[0], precision_agreement=precision[2])

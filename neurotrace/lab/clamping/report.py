"""Turn a finished clamp sweep into its run-directory artifacts and result.

Written files (all under the run directory):

* ``tables/clamp_sweep.csv``: one row per (prompt, neurons, value): core_id, type, level, neurons,
  sweep ('baseline' or the value), prompt, output, every metric of :mod:`neurotrace.lab.effects.collapse`,
  is_collapsed, collapse_reasons, intervention_improves_baseline (blank for baseline rows and for
  prompts whose baseline did not collapse).
* ``tables/generations.jsonl``: the same rows with the generated token ids.
* ``tables/sweep_summary.csv``: per (neurons, value), controls included: collapse rate, recoveries,
  collapse types, mean metrics.
* ``arrays/mean_mlp_post.safetensors``: for each clamped layer ``blocks.{L}.mlp.hook_post``, a
  (conditions, d_mlp) matrix of the mean post-clamp activation over all real positions (prompt and
  generated) of all prompts; ``n_positions`` gives the counts; the metadata's ``conditions`` lists
  the (neurons, value) of each matrix row.
* ``clamp_results.json``: the :class:`~neurotrace.lab.clamping.schema.ClampResults` record (summaries,
  verdicts and collapsed cases); the input of :mod:`neurotrace.lab.clamping.figures`.
* ``report.md``: thresholds, the per-value table and every collapsed baseline with what recovered it.
* ``figures/improvement_rate.png`` and ``figures/sweep_metrics.png``.
"""

import json
from collections.abc import Callable, Mapping

import torch

from neurotrace.lab.clamping.figures import FIGURES, RESULTS_FILE
from neurotrace.lab.clamping.prompt_grid import PromptItem
from neurotrace.lab.clamping.schema import (
    ClampResults,
    ClampSweepRequest,
    ClampSweepResult,
    GroupVerdict,
    ValueSummary,
)
from neurotrace.lab.clamping.stream import RowSink
from neurotrace.lab.clamping.sweep import Condition, Row, SweepOutput
from neurotrace.lab.clamping.verdict import RULES, group_verdicts
from neurotrace.lab.effects import COLLAPSE_TYPES, Damage, collapse_type, describe_thresholds
from neurotrace.lab.model.runtime.precision import Agreement
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.runs import Run

MAX_CASES = 200  # collapsed baselines written out in full in the report


def _value_text(v: float | None) -> str:
    return "baseline" if v is None else f"{v:g}"


def summarise(rows: list[Row], conds: list[Condition]) -> list[ValueSummary]:
    base = {r.prompt: bool(r.reasons) for r in rows if r.cond == 0}
    n_base_collapsed = sum(base.values())
    out = []
    for ci, cond in enumerate(conds):
        sel = [r for r in rows if r.cond == ci]
        n = max(len(sel), 1)
        improved = sum(1 for r in sel if ci and base[r.prompt] and not r.reasons)
        types = [collapse_type(r.reasons) for r in sel]
        out.append(ValueSummary(
            n_empty=types.count("empty"), n_loop=types.count("loop"), n_repetitive=types.count("repetitive"),
            control_of=cond.control_of,
            neurons=cond.label, value=cond.value, n=len(sel), n_collapsed=sum(bool(r.reasons) for r in sel),
            collapse_rate=sum(bool(r.reasons) for r in sel) / n, n_improved=improved,
            improvement_rate=(improved / n_base_collapsed) if n_base_collapsed else None,
            n_induced=sum(1 for r in sel if ci and not base[r.prompt] and r.reasons),
            mean_distinct_2=sum(r.metrics["distinct_2"] for r in sel) / n,
            mean_loop_frac=sum(r.metrics["loop_frac"] for r in sel) / n,
            mean_norm_entropy=sum(r.metrics["norm_entropy"] for r in sel) / n,
            mean_compression_ratio=sum(r.metrics["compression_ratio"] for r in sel) / n))
    return out


def best_values(per_value: list[ValueSummary], k: int = 3) -> list[ValueSummary]:
    cands = [s for s in per_value if s.value is not None and s.n_improved > 0 and s.control_of is None]
    return sorted(cands, key=lambda s: (-s.n_improved, s.n_induced, abs(s.value or 0.0)))[:k]


def _md_table(per_value: list[ValueSummary]) -> list[str]:
    lines = ["| neurons | value | collapsed (empty/loop/other) | improved | induced | distinct_2 | loop_frac | "
             "norm_entropy |", "|---|---|---|---|---|---|---|---|"]
    for s in per_value:
        rate = "" if s.improvement_rate is None else f" ({s.improvement_rate:.0%})"
        lines.append(f"| {s.neurons} | {_value_text(s.value)} | {s.n_collapsed}/{s.n} ({s.n_empty}/{s.n_loop}/"
                     f"{s.n_repetitive}) | {s.n_improved}{rate} | {s.n_induced} | {s.mean_distinct_2:.2f} | "
                     f"{s.mean_loop_frac:.2f} | "
                     f"{s.mean_norm_entropy:.2f} |")
    return lines


def _quote(text: str) -> str:
    return "`" + text.replace("`", "'").replace("\n", "⏎") + "`"


def _types_text(types: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {t}" for t, n in types.items() if n) or "none"


def _verdict_lines(groups: list[GroupVerdict]) -> list[str]:
    if not groups or groups[0].verdict is None:
        return ["No random-neuron controls were run (controls=0): the recoveries below have no baseline to "
                "beat, so they do not show the neurons are specific.", ""]
    lines = ["## Verdict against random same-layer neurons", "", f"Rules: {RULES}", ""]
    lines += [f"- **{g.neurons}**: {g.verdict} - {g.reason}." for g in groups]
    return lines + [""]


def markdown(request: ClampSweepRequest, rec: ClampResults) -> str:
    th = rec.thresholds
    lines = [f"# clamp_sweep on {rec.model}", "",
             f"Neurons {', '.join(rec.neurons)} ({rec.neuron_mode}), clamped at position "
             f"'{rec.position}', {rec.max_new_tokens} new tokens, sampling: {request.sampling.kind}, "
             f"{rec.controls} random-neuron control(s) per group.",
             f"{rec.n_prompts} prompts x {rec.n_settings} settings = {rec.n_rows} generations; "
             f"{rec.n_collapsed_baselines} baselines collapsed "
             f"({_types_text(rec.baseline_collapse_types)}), {rec.n_recovered} recovered by at "
             "least one value of the requested neurons.", "",
             *[f"- Note: {n}" for n in rec.notes], "",
             *([f"Precision: bfloat16 (norms in float32). {rec.precision_agreement.summary} Rechecked rows: "
                f"{', '.join(rec.precision_agreement.chosen)}.", ""] if rec.precision_agreement else []),
             *_verdict_lines(rec.groups),
             "## Collapse rules (any one flags an output)", "",
             *[f"- {rule}" for rule in describe_thresholds(th)], "",
             "Types: empty = fewer than min_tokens tokens; loop = the loop rule fired; other (repetitive) = low "
             "distinct-2/entropy without a long loop. Metrics are computed on the generated tokens only "
             "(end-of-text excluded). An intervened row *improves* its baseline when the baseline is collapsed "
             "and the row is not; this says nothing about fluency or truth, so read the recovered texts below.",
             "", "## Per value (requested neurons; controls in tables/sweep_summary.csv)", "",
             *_md_table(rec.per_value), "", "## Collapsed baselines", ""]
    for case in rec.collapsed[:MAX_CASES]:
        lines += [f"### {case.core_id} · {case.type or '-'} · {case.level or '-'}", "",
                  f"- prompt: {_quote(case.prompt)}", f"- baseline: {_quote(case.baseline)}",
                  f"- why collapsed ({case.collapse_type}): {'; '.join(case.reasons)}; recovered by "
                  f"{case.recovered_by_controls} control setting(s)",
                  f"- recovered by {len(case.recovered_by)} setting(s):" if case.recovered_by
                  else "- not recovered by any value", ""]
        lines += [f"  - {r.neurons} = {_value_text(r.value)}: {_quote(r.output)}" for r in case.recovered_by]
        lines.append("")
    if len(rec.collapsed) > MAX_CASES:
        lines.append(f"({len(rec.collapsed) - MAX_CASES} more in {RESULTS_FILE})")
    return "\n".join(lines) + "\n"


def mean_tensors(out: SweepOutput) -> dict[str, torch.Tensor]:
    counts = out.act_count.clamp(min=1).double()[:, None]
    tensors = {f"blocks.{layer}.mlp.hook_post": (s / counts).float() for layer, s in out.act_sum.items()}
    tensors["n_positions"] = out.act_count
    return tensors


def notes(request: ClampSweepRequest, conds: list[Condition], lm: LoadedModel, bos: bool) -> list[str]:
    """Caveats the reader needs: identical position modes, BOS and chat-template use."""
    out = []
    layers = {layer for c in conds if c.control_of is None for layer in c.neurons}
    if layers == {lm.n_layers - 1}:
        out.append(f"every clamped neuron is in the last block's MLP (layer {lm.n_layers - 1}), whose output at "
                   "earlier positions reaches no later computation, so position 'all' and 'last' give identical "
                   "generations here")
    if request.chat_template:
        out.append("prompts were wrapped in the tokenizer's chat template (a user turn + generation prompt)")
    else:
        how = "default for the family, as TransformerLens" if request.prepend_bos is None else "requested"
        out.append(f"prompts {'start with' if bos else 'have no'} BOS ({how})")
    return out


def with_damage(groups: list[GroupVerdict], check: Callable[[str, float], Damage] | None) -> list[GroupVerdict]:
    """Each group's damage at its best value; a destructive clamp's verdict becomes `destructive`."""
    for g in groups:
        if check is None or g.best_value is None:
            continue
        g.damage = check(g.neurons, g.best_value)
        if g.damage.destructive and g.verdict is not None:
            g.verdict, g.reason = "destructive", (f"at its best value {g.best_value:g} it breaks neutral text ("
                                                  + "; ".join(g.damage.reasons) + f"); before that: {g.reason}")
    return groups


def write_outputs(run: Run, request: ClampSweepRequest, prompts: list[PromptItem], prompt_ids: list[list[int]],
                  conds: list[Condition], out: SweepOutput, sink: RowSink, lm: LoadedModel,
                  damage_check: Callable[[str, float], Damage] | None = None,
                  precision: tuple[str, str | None, Agreement | None] = ("float32", None, None)) -> ClampSweepResult:
    """Every artifact and the result; ``precision`` = (the precision run, resolve's note, the bfloat16 run's
    agreement with its float32 recheck)."""
    ran, note, agreed = precision
    all_values = sink.summaries()
    per_value = [s for s in all_values if s.control_of is None]
    cases = sink.collapsed_cases()
    groups = with_damage(group_verdicts(all_values, len(cases), request.controls), damage_check)
    bos = lm.tokenizer.bos_token_id
    types = {t: sum(1 for c in cases if c.collapse_type == t) for t in COLLAPSE_TYPES}
    rec = ClampResults(model=request.model, neurons=list(request.neurons), neuron_mode=request.neuron_mode,
                       position=request.position, max_new_tokens=request.max_new_tokens,
                       thresholds=request.thresholds, n_prompts=len(prompts), n_rows=sink.n_rows,
                       n_settings=len(conds), n_collapsed_baselines=len(cases),
                       n_recovered=sum(1 for c in cases if c.recovered_by), baseline_collapse_types=types,
                       controls=request.controls, groups=groups,
                       notes=notes(request, conds, lm, bool(prompt_ids) and prompt_ids[0][:1] == [bos]),
                       per_value=per_value, controls_per_value=[s for s in all_values if s.control_of is not None],
                       collapsed=cases, tokens_generated=out.tokens_generated, seconds=out.seconds,
                       precision=ran, precision_agreement=agreed)
    table_uri = sink.finish()   # tables/clamp_sweep.csv and tables/generations.jsonl, from the spools
    run.write_csv("tables/sweep_summary.csv", [s.model_dump() for s in all_values])
    if out.act_sum:
        meta = {"conditions": json.dumps([[c.label, c.value] for c in conds]), "d_mlp": str(lm.d_mlp)}
        run.write_tensors("arrays/mean_mlp_post.safetensors", mean_tensors(out), metadata=meta)
    run.write_json(RESULTS_FILE, rec.model_dump(mode="json"))
    report_uri = run.write_text("report.md", markdown(request, rec))
    figures = [run.write_figure(f"figures/{kind}.png", FIGURES[kind](rec)) for kind in FIGURES]
    best = best_values(per_value)
    summary = _summary(request, rec, best, " ".join(t for t in (note, agreed.summary if agreed else None) if t))
    run.set_summary(summary)
    return ClampSweepResult(
        run_id=run.run_id, summary=summary, artifacts=run.artifact_uris(), figures=figures,
        next=f"Read {report_uri} for each collapsed prompt and the outputs that recovered it; re-render figures "
             f"with plot(run_id='{run.run_id}', kind='improvement_rate' | 'sweep_metrics').",
        n_prompts=len(prompts), n_rows=sink.n_rows, n_collapsed_baselines=len(cases),
        n_recovered=rec.n_recovered, baseline_collapse_types=dict(rec.baseline_collapse_types),
        verdict=groups[0].verdict if groups else None, groups=groups, best=best, per_value=per_value,
        notes=rec.notes, tokens_generated=out.tokens_generated, seconds=round(out.seconds, 3),
        precision=ran, precision_agreement=agreed, report=report_uri, table=table_uri, plot=figures[0])


def _summary(request: ClampSweepRequest, rec: ClampResults, best: list[ValueSummary], precision: str = "") -> str:
    """The summary; ``precision`` (bfloat16's agreement, or why float32 ran) is kept whole at its end."""
    text = _findings(request, rec, best)
    if not precision:
        return text[:1900]
    return text[:max(400, 1900 - len(precision) - 1)] + " " + precision


def _findings(request: ClampSweepRequest, rec: ClampResults, best: list[ValueSummary]) -> str:
    n_base, n_prompts = rec.n_collapsed_baselines, rec.n_prompts
    text = (f"Clamped {', '.join(rec.neurons)} of {rec.model} ({rec.position} positions) over "
            f"{len(rec.per_value) - 1} settings plus the baseline on {n_prompts} prompts, with "
            f"{rec.controls} random same-layer control(s) per group ({rec.tokens_generated} tokens in "
            f"{rec.seconds:.1f}s). {n_base} of {n_prompts} baselines collapsed")
    if not n_base:
        return text + "; nothing to recover (see the per-value collapse rates for induced collapses)."
    types = rec.baseline_collapse_types
    text += f" ({_types_text(types)})"
    n_rec = rec.n_recovered
    text += f"; {n_rec} {'was' if n_rec == 1 else 'were'} recovered by at least one value."
    if best:
        text += " Best: " + ", ".join(f"{b.neurons}={_value_text(b.value)} recovers {b.n_improved}/{n_base}"
                                      f" (induces {b.n_induced})" for b in best[:2]) + "."
    for g in rec.groups[:3]:
        if g.verdict is not None:
            text += f" Verdict {g.neurons}: {g.verdict} ({g.reason})."
    if types.get("empty", 0) * 2 > n_base and not request.chat_template:
        text += (" Most collapses are empty outputs, not loops: for an instruct model retry with "
                 "chat_template=true.")
    return text

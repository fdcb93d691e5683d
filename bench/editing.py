"""ROME on gemma-3-270m: efficacy and neighbourhood specificity under one or more settings (issue #29).

Loads the model once, builds the known-facts cases (CounterFact's recipe, :mod:`neurotrace.lab.editing.counterfact.cases`),
keeps the facts the model knows, and for each setting edits every fact alone (ROME, from the original weights)
and reads the edit prompt and its neighbourhood before and after. Prints one line per setting:

    setting  n_facts  efficacy  neighbourhood(pre filtered / unfiltered -> post)  mean |delta|/|v0|  seconds

plus, per layer asked, the mean share of the rank-one update a neighbour's key receives
(``(C^-1 k*) . k_n / (C^-1 k*) . k*``). Run niced, one thread:

    nice -n 10 python bench/editing.py --facts 12 --layer 4 --set clamp_norm=4 --set clamp_norm=0.75

Each ``--set`` is a comma list of ValueOptions fields (and ``tokens=`` for the covariance, ``layer=``).
"""

import argparse
import os
import time

import torch

from neurotrace import EditRequest
from neurotrace.lab.editing.counterfact.cases import build_cases
from neurotrace.lab.editing.counterfact.measure import next_token_probs, read_state
from neurotrace.lab.editing.counterfact.metrics import wilson
from neurotrace.lab.editing.counterfact.text import batch, context_prefixes
from neurotrace.lab.editing.method.covariance import covariances
from neurotrace.lab.editing.method.updates import apply, preserved, rome_update
from neurotrace.lab.editing.method.vectors import ValueSettings, down_proj, mean_key
from neurotrace.lab.editing.run import POST_NORM_CLAMP, ROME_CLAMP, check_cases
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.access.tokens import target_token_ids
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.lab.progress import NULL_REPORTER


def parse(spec: str, base: dict) -> dict:
    out = dict(base)
    for part in filter(None, spec.split(",")):
        key, value = part.split("=")
        out[key] = float(value) if "." in value or key not in ("steps", "n_contexts", "tokens", "layer") else int(value)
    return out


def rate(hits: list[bool]) -> str:
    """k/n = share [95% Wilson band]."""
    if not hits:
        return "n=0"
    k, n = sum(hits), len(hits)
    low, high = wilson(k, n)
    return f"{k}/{n}={k / n:.2f} [{low:.2f},{high:.2f}]"


def unfiltered_pre(lm, case, new: int) -> tuple[int, int]:
    """CounterFact's neighbourhood score of the unedited model over every neighbour prompt (no filter)."""
    probs = next_token_probs(lm, [(p.template, p.subject) for p in case.neighbours])
    hits = 0
    for row, p in zip(probs, case.neighbours, strict=True):
        t = target_token_ids(lm.tokenizer, p.template.format(p.subject), p.target)[0]
        hits += float(row[t]) > float(row[new])
    return hits, len(case.neighbours)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--facts", type=int, default=12, help="pack facts taken (unknown ones are dropped)")
    ap.add_argument("--skip", type=int, default=0, help="leave out the first SKIP of those (a held-out set)")
    ap.add_argument("--layer", type=int, default=4)
    ap.add_argument("--set", action="append", default=[], help="settings, e.g. clamp_norm=1,steps=25")
    ap.add_argument("--runs", default=os.environ.get("NEUROTRACE_RUNS_DIR", "/tmp/neurotrace-bench-editing"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    lab = Lab(LabSettings(runs_dir=args.runs, threads=1))
    request = EditRequest.model_validate({"model": args.model, "pack": "known-facts", "max_facts": args.facts})
    base = {**request.value.model_dump(), "tokens": request.covariance.tokens, "layer": args.layer}
    cases = build_cases(request)[args.skip:]
    with lab.cache.lease(ModelRef(model=args.model)) as lm:
        known, ids, unknown, _ = check_cases(request, lm, cases)
        base["clamp_norm"] = POST_NORM_CLAMP if lm.adapter.post_norms else ROME_CLAMP    # the tool's default
        cases = [cases[i] for i in known]
        pre = [unfiltered_pre(lm, c, i.new) for c, i in zip(cases, ids, strict=True)]
        print(f"{len(cases)} known facts (unknown: {unknown}); unedited neighbourhood score over every neighbour "
              f"{sum(h for h, _ in pre)}/{sum(n for _, n in pre)}", flush=True)
        for spec in args.set or [""]:
            s = parse(spec, base)
            layer, t0 = s["layer"], time.time()
            prefixes = context_prefixes(lm, s["n_contexts"], 0)
            cov = covariances(lab, lm, [layer], s["tokens"], 0, request.covariance.corpus, NULL_REPORTER)[0][layer]
            settings = ValueSettings(steps=s["steps"], lr=s["lr"], kl_factor=s["kl_factor"],
                                     weight_decay=s["weight_decay"], clamp_norm=s["clamp_norm"])
            eff, para, nb_pre, nb_post, same_pre, same_post, ratio, spill = [], [], [], [], [], [], [], []
            for case, case_ids in zip(cases, ids, strict=True):
                before = read_state(lm, case, case_ids, 0, 0)
                with preserved(lm, [layer]):
                    u = rome_update(lm, case, case_ids, layer, prefixes, cov, settings, "pack", NULL_REPORTER)
                    with torch.no_grad():
                        v0 = float(down_proj(lm, layer)(u.key[None].to(lm.device)).norm())
                    apply(lm, u)
                    after = read_state(lm, case, case_ids, 0, 0)
                eff += after.efficacy()
                if not after.efficacy()[0]:
                    print(f"  not rewritten: {case.id} ({case.target_true} -> {case.target_new}) "
                          f"p_new {after.p_new[0]:.3f} p_true {after.p_true[0]:.3f}", flush=True)
                para += after.generalisation()
                nb_pre += before.specificity()
                nb_post += after.specificity()
                same = [p.target == case.target_true for p in case_ids.neighbours]   # CounterFact's own kind
                same_pre += [h for h, s_ in zip(before.specificity(), same, strict=True) if s_]
                same_post += [h for h, s_ in zip(after.specificity(), same, strict=True) if s_]
                ratio.append(u.value_norm / v0)
                cinv_k = torch.linalg.solve(cov, u.key.double())
                for p in case_ids.neighbours:
                    k_n = mean_key(lm, layer, batch(lm, [p.template], p.subject, [""], "pack")).double()
                    spill.append(float(cinv_k @ k_n / (cinv_k @ u.key.double())))
            print(f"{spec or 'defaults':<40} n={len(eff)} efficacy {rate(eff)} paraphrase {rate(para)} "
                  f"neighbourhood {rate(nb_pre)} -> {rate(nb_post)} same-object neighbours {rate(same_pre)} -> "
                  f"{rate(same_post)} "
                  f"|delta|/|Wk| {sum(ratio)/len(ratio):.2f} spill {sum(spill)/len(spill):.2f} {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()

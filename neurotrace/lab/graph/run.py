"""graph: the attribution graph of one prompt over per-layer transcoders, pruned, exported, and checked
by interventions."""

from pathlib import Path

import torch

from neurotrace.lab.errors import InputError
from neurotrace.lab.graph.attribute import AttributionGraph, build_graph
from neurotrace.lab.graph.checks import actual, choose, pearson, predicted
from neurotrace.lab.graph.cost import MAX_N_LOGITS, exact_bytes
from neurotrace.lab.graph.prune import prune, scores
from neurotrace.lab.graph.replacement.dictionaries import dictionary_transcoders
from neurotrace.lab.graph.replacement.forward import real_forward
from neurotrace.lab.graph.replacement.transcoders import (
    TranscoderSet,
    calibrate,
    check_against,
    load_transcoders,
    random_transcoders,
)
from neurotrace.lab.graph.report import write_report
from neurotrace.lab.graph.schema import GraphChecks, GraphRequest, GraphResult, InterventionCheck
from neurotrace.lab.inputs import shown_path
from neurotrace.lab.jobs import job_budget
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.access.tokens import target_id
from neurotrace.lab.model.weights.loading import LoadedModel, ModelRef
from neurotrace.lab.progress import NULL_REPORTER, Reporter

DESIRED_LOGIT_PROB = 0.95                        # circuit-tracer's default for the logit nodes


def _folder(lab: Lab, value: str) -> Path:
    """The allowed folder ``value`` names (under an input root, resolved, so no symlink or '..' leads out)."""
    given = Path(value)
    fix = "put the transcoder folder under the runs directory or inputs/ beside it and pass its path"
    if "\x00" in value or value.startswith("~"):
        raise InputError("transcoders.path", "not a usable folder path", fix=fix)
    candidates = [given] if given.is_absolute() else [root / given for root in lab.inputs.roots]
    for candidate in candidates:
        real = candidate.resolve()
        if not any(real.is_relative_to(root) for root in lab.inputs.roots):
            raise InputError("transcoders.path", "the folder is outside the allowed input directories", fix=fix)
        if real.is_dir():
            return real
    raise InputError("transcoders.path", f"no folder {value!r} in the allowed input directories", fix=fix)


def transcoder_set(lab: Lab, request: GraphRequest, lm: LoadedModel) -> TranscoderSet:
    """The request's transcoders, checked against the model (a random set is calibrated later, on the prompt)."""
    src = request.transcoders
    if src.kind == "random":
        return random_transcoders(lm.n_layers, lm.d_model, src.width_multiple * lm.d_model, seed=src.seed)
    if src.kind == "dictionary":
        tcs = dictionary_transcoders(lab, list(src.refs))
    else:
        folder = _folder(lab, src.path)
        tcs = load_transcoders(folder, shown_path(folder, lab.store.root))
    check_against(tcs, lm.n_layers, lm.d_model, request.model, lm.adapter.post_norms)
    return tcs


def prompt_ids(lm: LoadedModel, prompt: str) -> torch.Tensor:
    """The prompt's ids with a special token first (circuit-tracer's rule: the tokenizer's own, else BOS, pad,
    EOS or any special token is prepended); that position carries no features."""
    tok = lm.tokenizer
    ids = list(tok(prompt).input_ids)
    specials = set(tok.all_special_ids)
    if not ids or ids[0] not in specials:
        first = next((t for t in (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, *tok.all_special_ids)
                      if t is not None), None)
        ids = ([first] if first is not None else []) + ids
    if len(ids) < 2:
        raise InputError("prompt", "the prompt tokenizes to nothing", fix="give some text")
    return torch.tensor(ids)


def _checks(lm: LoadedModel, request: GraphRequest, g: AttributionGraph, tcs: TranscoderSet, influence, labels
            ) -> GraphChecks | None:
    if request.check_top == 0 or g.n_features == 0:
        return None
    c = -1.0 if request.steer_factor is None else request.steer_factor - 1.0
    top, rnd = choose(g, influence, request.check_top, request.check_top, seed=0)
    nodes = top + rnd
    pred, act = predicted(g, nodes, c), actual(lm, g, tcs, nodes, c)
    rows = [InterventionCheck(node=labels[n], group="top" if i < len(top) else "random", predicted=float(pred[i]),
                              actual=float(act[i])) for i, n in enumerate(nodes)]
    k = len(top)
    return GraphChecks(intervention="ablate" if request.steer_factor is None else f"steer x{request.steer_factor:g}",
                       rows=rows, correlation_top=pearson(pred[:k], act[:k]),
                       correlation_random=pearson(pred[k:], act[k:]) if rnd else None,
                       mean_abs_actual_top=float(act[:k].abs().mean()),
                       mean_abs_actual_random=float(act[k:].abs().mean()) if rnd else None)


def run_graph(request: GraphRequest, *, lab: Lab, reporter: Reporter = NULL_REPORTER) -> GraphResult:
    """Which features, errors and tokens carry the answer? circuit-tracer's attribution graph on the local
    replacement model, pruned by influence, exported for Neuronpedia, checked by interventions."""
    lab.check(request)  # bounds and the whole-job estimate, before any work
    with lab.cache.lease(ModelRef(model=request.model, device=request.device)) as lm:
        tcs = transcoder_set(lab, request, lm)
        ids = prompt_ids(lm, request.prompt)
        targets = [target_id(lm.tokenizer, request.target, request.prompt)] if request.target else None
        real = real_forward(lm, ids)
        mlp_in = real[1]
        if request.transcoders.kind == "random":
            calibrate(tcs, mlp_in, request.transcoders.l0)
        with torch.no_grad():
            n_active = int(sum(int((t.encode(x)[1:] != 0).sum()) for t, x in zip(tcs.layers, mlp_in, strict=True)))
        need = exact_bytes(request, lm.n_layers, lm.d_model, lm.d_mlp, lm.n_heads, len(ids), n_active,
                           1 if targets else MAX_N_LOGITS, tcs.width)
        if need > job_budget(lab):
            raise InputError("max_feature_nodes", f"this prompt fires {n_active:,} features over {len(ids)} "
                             f"positions; the graph would need about {need / 2**30:.1f} GiB, over the job budget "
                             f"of {job_budget(lab) / 2**30:.1f} GiB", fix="lower max_feature_nodes or batch_size, "
                             "or shorten the prompt")
        with reporter.stage("attribution"):
            g = build_graph(lm, ids, tcs, targets, max_n_logits=MAX_N_LOGITS, desired_logit_prob=DESIRED_LOGIT_PROB,
                            max_feature_nodes=request.max_feature_nodes,
                            batch_size=request.batch_size, reporter=reporter, real=real)
        pruned = prune(g.adjacency, g.logit_probs, g.n_features, g.n_pos, request.node_threshold,
                       request.edge_threshold)
        graph_scores = scores(g.adjacency, g.logit_probs, g.n_features, g.n_errors, g.n_pos)
        reporter.step(0, 1, "intervention checks")
        with lab.store.open_run("graph", request, seed=0) as run:
            run.add_model(request.model, lm.fingerprint, lm.provenance)
            return write_report(run, request, lm, g, tcs, pruned, graph_scores,
                                lambda labels: _checks(lm, request, g, tcs, pruned.node_influence, labels))

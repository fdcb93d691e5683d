"""explain: evidence for one unit, an explanation (the client's LLM, the agent, or a user), and its blind score.

Three ways through, one scoring:

* **sampling** (one call): the server builds evidence and a quiz (:func:`prepare_explain`), the client's LLM writes
  the explanation and answers both quizzes; :func:`run_explain` gets the replies and scores them;
* **two calls** (a client without sampling, or ``judge: manual``): the first call returns the evidence and the quiz
  and keeps the key (``quiz_key.json`` beside the run, never served); the second sends ``quiz_run_id``, the
  explanation and the answers, and is scored against the kept key;
* a **given** explanation (typed by a user) goes through either judge the same way.

Scores are stored with the unit (:mod:`neurotrace.lab.explain.labels`) so other tools can show the name beside
the index.
"""

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

import numpy as np
import torch

from neurotrace.lab.capture import corpus_texts, forward_batches, token_contexts
from neurotrace.lab.errors import InputError
from neurotrace.lab.explain.evidence import Activations, Builder, split_pools
from neurotrace.lab.explain.figures import FIGURES
from neurotrace.lab.explain.labels import Label, save_label, unit_key
from neurotrace.lab.explain.schema import (
    KEY_FILE,
    RESULTS_FILE,
    AnswerSheet,
    Evidence,
    ExplainRequest,
    ExplainResult,
    ExplainResults,
    Quiz,
    QuizKey,
)
from neurotrace.lab.explain.scoring import score
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.access.neurons import parse_neuron
from neurotrace.lab.model.access.tokens import token_texts
from neurotrace.lab.model.weights.loading import LoadedModel, ModelRef
from neurotrace.lab.progress import NULL_REPORTER, Reporter
from neurotrace.lab.runs import atomic_write_text
from neurotrace.lab.sae import check_fits, load_dictionary, record_dictionary

TOP_TOKENS = 10
HEAD_RE = re.compile(r"^(\d+):(\d+)$")
_MEMO: "WeakKeyDictionary[Lab, OrderedDict[str, Prepared]]" = WeakKeyDictionary()
_MEMO_LOCK = threading.Lock()


@dataclass
class Prepared:
    """What a first call builds: the evidence, the quiz and its key (kept by the server)."""

    unit: str
    unit_key: str
    evidence: Evidence
    quiz: Quiz
    key: QuizKey
    dictionary: Any = None


def _unit(lm: LoadedModel, request: ExplainRequest, lab: Lab):
    """(label, site, activation fn on [b, T, D] states -> [b, T], output direction [d_model], dictionary)."""
    if request.neuron is not None:
        ((layer, (index,)),) = parse_neuron(request.neuron, lm.n_layers, lm.d_mlp, "neuron").items()
        if len(parse_neuron(request.neuron, lm.n_layers, lm.d_mlp, "neuron")) != 1:
            raise InputError("neuron", "a wildcard layer names many neurons", fix="name one, e.g. '11:373'")
        down = lm.adapter.module(lm.model, lm.adapter.mlp_down, layer)
        param = next(down.parameters())
        with torch.no_grad():
            onehot = torch.zeros(2, lm.d_mlp, dtype=param.dtype, device=param.device)
            onehot[0, index] = 1.0
            out = down(onehot).float()
        return (f"neuron {layer}:{index}", f"blocks.{layer}.mlp.hook_post", lambda s: s[..., index].float(),
                out[0] - out[1], None)
    if request.head is not None:
        return _head(lm, request.head)
    d = load_dictionary(lab, request.dictionary or "", field="dictionary")
    check_fits(d, lm, request.model)
    if request.feature is None or request.feature >= d.cfg.d_sae:
        raise InputError("feature", f"feature {request.feature} is out of range: the dictionary has "
                         f"{d.cfg.d_sae} features", fix=f"use 0..{d.cfg.d_sae - 1}")
    idx = request.feature
    direction = d.W_dec[idx].detach().float() if d.cfg.d_out == lm.d_model else None

    def acts(states: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return d.encode(states.float())[..., idx]
    return f"feature {idx} of {request.dictionary}", d.cfg.site, acts, direction, d


def _head(lm: LoadedModel, ref: str):
    """A head's activation per token: the norm of its slice of ``attn.hook_z`` (what it writes, before W_O)."""
    m = HEAD_RE.match(ref.strip())
    if not m:
        raise InputError("head", f"{ref!r} is not 'layer:head'", fix="write e.g. '12:2'")
    layer, head = int(m.group(1)), int(m.group(2))
    if layer >= lm.n_layers or head >= lm.n_heads:
        raise InputError("head", f"head {ref} is out of range ({lm.n_layers} layers x {lm.n_heads} heads)",
                         fix=f"use layers 0..{lm.n_layers - 1} and heads 0..{lm.n_heads - 1}")

    def acts(states: torch.Tensor) -> torch.Tensor:
        d_head = states.shape[-1] // lm.n_heads
        return states[..., head * d_head:(head + 1) * d_head].float().norm(dim=-1)
    return f"head {layer}:{head}", f"blocks.{layer}.attn.hook_z", acts, None, None


def promoted_tokens(lm: LoadedModel, direction: torch.Tensor | None) -> tuple[list[str], list[str]]:
    """Tokens a residual direction promotes and suppresses through the final norm and the unembedding (the
    norm applied to the direction itself, minus its effect on zero: a LayerNorm's bias cancels)."""
    if direction is None or lm.lm_kind != "causal":
        return [], []
    param = next(lm.model.parameters())
    x = torch.stack([direction, torch.zeros_like(direction)]).to(param.device, param.dtype)[:, None, :]
    with torch.no_grad():
        if lm.adapter.final_norm:
            x = lm.adapter.module(lm.model, lm.adapter.final_norm)(x)
        logits = lm.adapter.logits_at(lm.model, x).float()[:, 0]
    effect = logits[0] - logits[1]
    up = token_texts(lm.tokenizer, effect.topk(TOP_TOKENS).indices.tolist())
    down = token_texts(lm.tokenizer, (-effect).topk(TOP_TOKENS).indices.tolist())
    return up, down


def _memo_key(request: ExplainRequest) -> str:
    return request.model_dump_json(exclude={"explanation", "judge", "quiz_run_id", "answers"})


def prepare_explain(request: ExplainRequest, *, lab: Lab, reporter: Reporter = NULL_REPORTER) -> Prepared:
    """Activations of the unit over the corpus, its evidence and a blind quiz (memoised per request: a sampling
    call's resolvers may run it on every protocol round)."""
    key = _memo_key(request)
    with _MEMO_LOCK:
        hit = _MEMO.setdefault(lab, OrderedDict()).get(key)
    if hit is not None:
        return hit
    lab.check(request)
    with lab.cache.lease(ModelRef(model=request.model, device=request.device)) as lm:
        label, site, act_fn, direction, dictionary = _unit(lm, request, lab)
        texts = corpus_texts(lab, request.corpus)
        contexts = token_contexts(lm.tokenizer, texts, request.context_size, request.max_tokens, request.seed,
                                  prepend_bos=True)
        rows = []
        for _start, states in forward_batches(lm, contexts, [site], request.batch_size, reporter):
            rows.append(act_fn(states[site]).cpu().numpy())
        acts = np.concatenate(rows).astype(np.float32)
        acts[:, 0] = 0.0   # the BOS position (an attention sink) is never evidence
        builder = Builder(lm.tokenizer, Activations(contexts, acts), request.fire_fraction, request.seed)
        evidence_pool, held_out = split_pools(len(contexts), request.seed)
        promoted, suppressed = promoted_tokens(lm, direction)
        evidence = builder.evidence(evidence_pool, label, site, promoted, suppressed)
        quiz, quiz_key = builder.quiz(held_out, request.n_quiz)
        fingerprint = lm.fingerprint
    unit = unit_key(fingerprint, dictionary)
    index = request.neuron or (f"head {request.head}" if request.head else str(request.feature))
    quiz_key = quiz_key.model_copy(update={"unit_key": unit, "unit_index": index, "seed": request.seed})
    prepared = Prepared(label, unit, evidence, quiz, quiz_key, dictionary)
    with _MEMO_LOCK:
        memo = _MEMO.setdefault(lab, OrderedDict())
        memo[key] = prepared
        while len(memo) > 4:
            memo.popitem(last=False)
    return prepared


def _second_call(request: ExplainRequest, lab: Lab) -> tuple[ExplainResults, QuizKey]:
    run_id = request.quiz_run_id or ""
    try:
        manifest = lab.store.manifest(run_id)
    except Exception as exc:
        raise InputError("quiz_run_id", f"no run {run_id!r}", fix="pass the run_id the first explain call "
                         "returned") from exc
    if manifest.tool != "explain":
        raise InputError("quiz_run_id", f"run {run_id} is a {manifest.tool} run, not an explain quiz",
                         fix="pass the run_id of the explain call that returned the quiz")
    rec = ExplainResults.model_validate(lab.store.read_json(run_id, RESULTS_FILE))
    key_path = lab.store.run_dir(run_id) / KEY_FILE
    if rec.scores is not None or not key_path.is_file():
        raise InputError("quiz_run_id", f"run {run_id} holds no open quiz (it was scored already)",
                         fix="answer the quiz of a first call that returned one")
    return rec, QuizKey.model_validate_json(key_path.read_text(encoding="utf-8"))


def _summary(rec: ExplainResults) -> str:
    ev = rec.evidence
    head = (f"{rec.unit} of {rec.model} fires on {ev.density:.2%} of corpus tokens (max {ev.max_activation:.3g}, "
            f"threshold {ev.threshold:.3g})")
    if ev.promoted:
        head += f"; its output promotes {', '.join(repr(t) for t in ev.promoted[:4])}"
    if rec.scores is None:
        return (head + f". Quiz ready: {len(rec.quiz.detection)} detection and {len(rec.quiz.fuzzing)} fuzzing "
                "items await an explanation and answers.")
    s = rec.scores
    return (head + f". Explanation ({rec.explainer}): {rec.explanation!r}. Scored blind by {rec.judge}: "
            f"detection balanced accuracy {s.detection.balanced_accuracy:.2f} (95% {s.detection.ci95[0]:.2f}-"
            f"{s.detection.ci95[1]:.2f}, n={s.detection.n}; scrambled-key null {s.detection.null_mean:.2f}, "
            f"p={s.detection.p_value:.3g}), fuzzing {s.fuzzing.balanced_accuracy:.2f} (95% {s.fuzzing.ci95[0]:.2f}-"
            f"{s.fuzzing.ci95[1]:.2f}, n={s.fuzzing.n}, null {s.fuzzing.null_mean:.2f}): {s.verdict}.")


def run_explain(request: ExplainRequest, *, lab: Lab, reporter: Reporter = NULL_REPORTER,
                prepared: Prepared | None = None, explanation: str | None = None,
                answers: AnswerSheet | None = None, transcript: list[dict[str, str]] | None = None) -> ExplainResult:
    """What does this unit do? Build corpus evidence and a held-out quiz; score an explanation blind.

    ``explanation``/``answers`` come from the client's LLM (sampling) when the MCP face has them; otherwise from
    the request (a typed explanation; the second call of the two-call form)."""
    lab.check(request)
    key: QuizKey | None = None
    if request.quiz_run_id:
        rec, key = _second_call(request, lab)
        explanation, answers, explainer, judge = request.explanation, request.answers, "given", "manual"
        dictionary = None
    else:
        prepared = prepared or prepare_explain(request, lab=lab, reporter=reporter)
        explanation = explanation or request.explanation
        explainer = "given" if request.explanation else ("sampling" if explanation else None)
        judge = "sampling" if answers is not None else None
        rec = ExplainResults(model=request.model, unit=prepared.unit, evidence=prepared.evidence,
                             quiz=prepared.quiz, explanation=explanation, explainer=explainer, judge=judge)
        key, dictionary = prepared.key, prepared.dictionary
    scores = score(answers, key, key.seed) if (answers is not None and explanation) else None
    rec = rec.model_copy(update={"explanation": explanation, "scores": scores, "judge": judge,
                                 "explainer": explainer, "quiz_run_id": request.quiz_run_id})
    with lab.store.open_run("explain", request, seed=request.seed) as run:
        if request.quiz_run_id:
            run.add_input(request.quiz_run_id)
        elif dictionary is not None:
            record_dictionary(run, dictionary)
        run.write_json(RESULTS_FILE, rec.model_dump(mode="json"))
        run.write_csv("tables/evidence.csv", [
            {"kind": kind, "rank": i, "max_activation": ex.max_activation, "text": ex.text}
            for kind, exs in (("top", rec.evidence.top), ("quantile", rec.evidence.quantiles))
            for i, ex in enumerate(exs)])
        if transcript:
            run.write_json("llm_transcript.json", transcript)
        if scores is None:
            atomic_write_text(run.dir / KEY_FILE, key.model_dump_json())   # kept, never listed or served
        else:
            run.write_json("quiz_key.revealed.json", key.model_dump(mode="json"))
            save_label(lab, key.unit_key, key.unit_index,
                       Label(unit=rec.unit, explanation=explanation or "", verdict=scores.verdict,
                             detection=scores.detection.balanced_accuracy,
                             fuzzing=scores.fuzzing.balanced_accuracy, run_id=run.run_id))
        figs = [run.write_figure(f"figures/{name}.png", fn(rec)) for name, fn in FIGURES.items()]
        if request.quiz_run_id:   # a quiz is scored once: its key is revealed here and leaves the quiz run
            (lab.store.run_dir(request.quiz_run_id) / KEY_FILE).unlink(missing_ok=True)
        summary = _summary(rec)
        run.set_summary(summary)
        if scores is None:
            nxt = (f"Read the evidence, then call explain with quiz_run_id='{run.run_id}', explanation='<one "
                   "sentence>' and answers={'detection': [ids that fire], 'fuzzing': [ids marked correctly]}.")
        elif scores.verdict == "predictive":
            nxt = "The name predicts activations: test it causally with intervene or steer on this unit."
        else:
            nxt = "Refine the explanation (read tables/evidence.csv) and score it again with explanation='...'."
        return ExplainResult(run_id=run.run_id, summary=summary, artifacts=run.artifact_uris(), figures=figs, next=nxt,
                             model=request.model or rec.model, unit=rec.unit, explanation=explanation,
                             scores=scores, quiz=rec.quiz if scores is None else None,
                             top=rec.evidence.top[:3], promoted=rec.evidence.promoted)


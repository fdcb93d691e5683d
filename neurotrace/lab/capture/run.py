"""capture: record activations at chosen sites over a prompt set or a multi-step episode.

* **Sites** are chosen by name patterns (:func:`neurotrace.lab.model.access.sites.select_sites`): globs such as
  ``blocks.*.hook_resid_post`` or ``re:`` regexes over ``hook_embed``, ``blocks.{L}.hook_resid_pre``,
  ``hook_attn_out``, ``hook_mlp_out``, ``hook_resid_post``, ``mlp.hook_post`` and ``attn.hook_z``.
* **Steps.** A prompt set is a list of independent steps. An *episode* is a sequence of steps where
  each step's output feeds the next: the running transcript (token ids) is the previous transcript,
  the previous step's generated tokens, then ``joiner + text`` of the new step (a scripted conversation
  turn, a tool result, ...). Each step greedily generates ``max_new_tokens`` tokens (0 = a single
  forward pass) and carries the caller's ``metadata``. With ``chat`` an episode is a conversation: each
  step's text is a user turn, each step's output the assistant's answer, and every step's prompt is the
  whole conversation so far in the model's chat template (re-rendered and re-tokenized each turn, as a chat
  front end does; ``joiner`` is not used). Prompts with ``chat`` are each one templated user message.
* **What is stored.** Each step's *last* forward pass (its prompt plus all but the final generated
  token) is recorded: every position (``positions='all'``) or only the prompt's last token
  (``'last'``), minus the first ``skip_positions`` positions and, with ``skip_bos``, BOS tokens.
  States go to ``arrays/states/<site>.npy`` ``[N, D]`` in chunks (see
  :mod:`neurotrace.lab.capture.store`); ``trace.jsonl`` has one line per step with pointers to its rows,
  ``arrays/index.npy`` is ``[N, 3]`` = (step, position, token id) per row.
* **Step-scoped interventions** (:mod:`neurotrace.lab.capture.edits`) apply only at their listed steps;
  the recorded states are the intervened ones.
* **Generation** uses the KV cache (:mod:`neurotrace.lab.capture.generation`): a step's edits are the
  same in all of its forwards, so each position is recorded from the forward where it was newest,
  which equals the last forward of recomputation. ``capture.json`` and each trace line name the path.

Reload with ``load_trace_dataset(lab, run_id, site)``; fit an SAE with ``fit_sae``.
"""

from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from neurotrace.lab.capture.batched import capture_corpus, corpus_contexts, forward_batches
from neurotrace.lab.capture.edits import StepInfo, TextActs, clean_text_acts, knockout, step_hooks, validate
from neurotrace.lab.capture.generation import overall_plan, plan_fixed_edits
from neurotrace.lab.capture.precision import StatesCheck, pick_steps, to_agreement
from neurotrace.lab.capture.schema import (
    CaptureRecord,
    CaptureRequest,
    CaptureResult,
    CaptureSite,
    EpisodeStep,
    GenerationPlan,
)
from neurotrace.lab.capture.store import (
    CAPTURE_FILE,
    StateWriter,
    capture_info,
    load_trace_dataset,
    states_path,
)
from neurotrace.lab.errors import InputError
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.access.chat import apply_chat, templated
from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.access.sites import select_sites
from neurotrace.lab.model.access.tokens import target_id
from neurotrace.lab.model.runtime.ndif import check_execution
from neurotrace.lab.model.runtime.precision import Agreement, check_backend, lease_pair, resolve
from neurotrace.lab.model.runtime.stepwise import continue_greedy
from neurotrace.lab.model.weights.loading import LoadedModel, ModelRef
from neurotrace.lab.progress import NULL_REPORTER, Reporter


def _steps(request: CaptureRequest, lm: LoadedModel) -> tuple[list[EpisodeStep], bool, str]:
    if bool(request.prompts) == bool(request.episode):
        raise InputError("prompts", "give exactly one of `prompts`, `episode` and `corpus`",
                         fix="pass independent prompts, an episode of steps, or a corpus")
    if request.episode:
        if lm.lm_kind != "causal":
            raise InputError("episode", "episodes continue a transcript and need a causal LM",
                             fix="use `prompts` for masked LMs")
        return list(request.episode), True, "episode"
    steps = [p if isinstance(p, EpisodeStep) else EpisodeStep(text=p) for p in request.prompts]
    return steps, False, "prompts"


def _new_tokens(step: EpisodeStep, request: CaptureRequest, lm: LoadedModel, field: str) -> int:
    n = request.max_new_tokens if step.max_new_tokens is None else step.max_new_tokens
    if n and lm.lm_kind != "causal":
        raise InputError("max_new_tokens", "a masked LM does not generate", fix="use max_new_tokens=0")
    return n


def _check_len(ids: list[int], n_new: int, lm: LoadedModel, field: str, i: int) -> None:
    limit = lm.max_positions
    if not ids:
        raise InputError(field, f"step {i} tokenizes to nothing", fix="give it text")
    if limit and len(ids) + n_new > limit:
        raise InputError(field, f"step {i} has {len(ids)} tokens; with {n_new} new tokens it exceeds the "
                         f"model's {limit} positions", fix="shorten the transcript or generate fewer tokens")


class _Recorder:
    """The states of the latest forward per site, positions from 0: a forward that starts at position 0
    replaces them (recomputation, or the prompt's forward), a later one extends them (the KV cache)."""

    def __init__(self, sites: list[str]) -> None:
        self.parts: dict[str, list[torch.Tensor]] = {}
        self.sites = sites
        self.start = 0

    def hook(self, act: torch.Tensor, site: str) -> None:
        if self.start == 0:
            self.parts[site] = []
        self.parts[site].append(act.detach()[0])
        return None

    def states(self, site: str) -> torch.Tensor:
        """(positions, width) of ``site``, every position the step's last forward covers."""
        parts = self.parts[site]
        return parts[0] if len(parts) == 1 else torch.cat(parts)


@contextmanager
def _forward_context(lm: LoadedModel, request: CaptureRequest, rec: _Recorder, info: StepInfo,
                     load_states: Callable, text_acts: TextActs, start: int) -> Any:
    info, rec.start = replace(info, start=start), start
    hooks = step_hooks(request.interventions, info, lm, load_states, text_acts)
    for site in rec.sites:
        hooks.setdefault(site, []).append(rec.hook)
    with ExitStack() as stack:
        stack.enter_context(knockout(lm, request.interventions, info))
        stack.enter_context(hooked(lm.model, lm.adapter, hooks))
        yield


def _run_step(lm: LoadedModel, request: CaptureRequest, step: EpisodeStep, i: int, ids: list[int], n_new: int,
              rec: _Recorder, load_states: Callable) -> tuple[dict[str, Any], list[int], dict[str, str]]:
    info = StepInfo(step=i, prompt_len=len(ids))
    text_acts = clean_text_acts(lm)
    plan = plan_fixed_edits(lm.lm_kind, max(1, n_new), sum(s.active(i) for s in request.interventions))
    cont = continue_greedy(lm, ids, n_new, context_at=lambda _k, start: _forward_context(
                               lm, request, rec, info, load_states, text_acts, start),
                           stop_at_eos=request.stop_at_eos, incremental=plan["path"] == "kv_cache")
    recorded = ids + cont.tokens[:-1] if cont.tokens else list(ids)
    probs = torch.softmax(cont.logits[0], -1)
    line: dict[str, Any] = {"step": i, "prompt": step.text, "output": lm.tokenizer.decode(cont.tokens),
                            "metadata": step.metadata, "token_ids": recorded,
                            "tokens": [lm.tokenizer.decode([t]) for t in recorded],
                            "generated_ids": cont.tokens, "prompt_len": len(ids),
                            "top_token": lm.tokenizer.decode([int(probs.argmax())]),
                            "interventions": [j for j, s in enumerate(request.interventions) if s.active(i)],
                            "generation": plan["path"]}
    if step.target is not None:      # after a chat template's turn header the answer has no leading space
        after = step.text if step.text[-1:].isspace() else ""
        line["target"], line["p_target"] = step.target, float(probs[target_id(lm.tokenizer, step.target, after)])
    return line, cont.tokens, plan


def _loader(lab: Lab, run: Any) -> Callable[[str, str], tuple[np.ndarray, list[dict]]]:
    cache: dict[tuple[str, str], tuple[np.ndarray, list[dict]]] = {}

    def load(run_id: str, site: str) -> tuple[np.ndarray, list[dict]]:
        if (run_id, site) not in cache:
            ds = load_trace_dataset(lab, run_id, site, field="interventions")
            run.add_input(run_id)
            cache[(run_id, site)] = (ds.states, ds.steps)
        return cache[(run_id, site)]
    return load


def _sites_of(lab: Lab) -> Callable[[str], dict[str, Any]]:
    def sites(run_id: str) -> dict[str, Any]:
        return capture_info(lab.store, run_id, "interventions").sites
    return sites


def run_capture(request: CaptureRequest, *, lab: Lab, reporter: Reporter = NULL_REPORTER) -> CaptureResult:
    """Record activations at sites chosen by pattern over prompts or a multi-step episode (optionally with
    step-scoped ablations/patches); writes trace.jsonl and one [N, D] states array per site."""
    lab.check(request)  # bounds and the whole-job estimate, before any work
    check_execution(request)
    check_backend(request.precision, request.backend, bool(request.remote))
    precision, note = resolve(request.precision, request.insist_precision, request.device)
    ref = ModelRef(model=request.model, device=request.device, dtype=request.dtype, backend=request.backend)
    with lease_pair(lab.cache, ref, precision) as (work, lm):
        sites = select_sites(request.sites, lm)
        if request.chat and request.corpus is not None:
            raise InputError("chat", "a corpus is taken as written, not as chat messages",
                             fix="give the conversations in `prompts` (or an episode), or drop chat")
        if request.prompts:       # an episode keeps `chat`: its turns are templated as the conversation grows
            request = apply_chat(request, lm.tokenizer, request.model, many=("prompts",), inner="text")
        elif request.chat and request.episode:      # no template: refused before the run opens
            templated(lm.tokenizer, request.episode[0].text, chat=True, model=request.model)
        if request.corpus is not None:
            if request.prompts or request.episode:
                raise InputError("corpus", "give exactly one of `prompts`, `episode` and `corpus`",
                                 fix="drop the prompts/episode, or the corpus")
            contexts = corpus_contexts(lab, request, lm)
        else:
            steps, is_episode, field = _steps(request, lm)
            validate(request.interventions, lm, _sites_of(lab))
        n_items = contexts.shape[0] if request.corpus is not None else len(steps)
        keep = pick_steps(n_items, request.seed) if precision == "bfloat16" else None
        with lab.store.open_run("capture", request) as run:
            run.add_model(request.model, lm.fingerprint, lm.provenance)
            if request.corpus is not None:
                lines, widths, writer, plan = capture_corpus(work, request, contexts, sites, run, reporter, keep)
            else:
                lines, widths, writer, plan = _capture_steps(work, request, steps, is_episode, field, sites, run,
                                                             lab, reporter, keep)
            agreed = None
            if keep is not None:   # the sampled steps again, in float32
                reporter.step(0, 1, "float32 recheck of a seeded sample of steps")
                check = (_recheck_corpus(lm, request, contexts, sites, lines, keep) if request.corpus is not None
                         else _recheck_steps(lm, request, sites, lines, keep, _loader(lab, run)))
                agreed = to_agreement(check, request.seed, "contexts" if request.corpus is not None else "steps")
            return _finish(run, request, lm, lines, widths, writer, plan, (precision, note, agreed))


def _capture_steps(lm: LoadedModel, request: CaptureRequest, steps: list[EpisodeStep], is_episode: bool,
                   field: str, sites: list[str], run: Any, lab: Lab, reporter: Reporter,
                   keep: dict[int, dict[str, np.ndarray]] | None = None) -> tuple:
    """Run every step into ``run``; ``keep``: step -> {} to fill with its stored rows per site (the float32
    recheck's sample of a bfloat16 capture)."""
    rec, load_states = _Recorder(sites), _loader(lab, run)
    lines: list[dict[str, Any]] = []
    writer: StateWriter | None = None
    transcript: list[int] = []
    messages: list[dict[str, str]] = []
    n_rows = 0
    plans: list[dict[str, str]] = []
    for i, step in enumerate(steps):
        reporter.step(i, len(steps), f"step {i + 1} of {len(steps)}")
        if is_episode and request.chat:        # the conversation so far, re-rendered in the chat template
            messages.append({"role": "user", "content": step.text})
            step = step.model_copy(update={"text": templated(lm.tokenizer, messages, chat=True, model=request.model)})
            ids = list(lm.tokenizer(step.text).input_ids)
        elif is_episode and i > 0:
            extra = lm.tokenizer(request.joiner + step.text, add_special_tokens=False).input_ids if step.text else []
            ids = transcript + extra
        else:
            ids = list(lm.tokenizer(step.text).input_ids)
        n_new = _new_tokens(step, request, lm, field)
        _check_len(ids, n_new, lm, field, i)
        line, generated, plan = _run_step(lm, request, step, i, ids, n_new, rec, load_states)
        plans.append(plan)
        if writer is None:
            widths = {s: int(rec.states(s).shape[-1]) for s in sites}
            writer = StateWriter(run, widths, request.store_dtype, request.chunk_rows)
        positions = _recorded_positions(request, line["token_ids"], len(ids), lm.tokenizer.bos_token_id)
        for s in sites:
            rows = rec.states(s)[positions].float().cpu().numpy()
            writer.append(s, rows)
            if keep is not None and i in keep:
                keep[i][s] = rows.astype(request.store_dtype)
        line["positions"], line["rows"] = positions, [n_rows, n_rows + len(positions)]
        n_rows += len(positions)
        lines.append(line)
        transcript = ids + generated
        messages.append({"role": "assistant", "content": lm.tokenizer.decode(generated, skip_special_tokens=True)})
    reporter.step(len(steps), len(steps), "writing states")
    return lines, widths, writer, overall_plan(plans, "step")


def _recorded_positions(request: CaptureRequest, token_ids: list[int], prompt_len: int,
                        bos: int | None) -> list[int]:
    """The positions that get a row: all or the prompt's last, minus the first ``skip_positions`` and BOS."""
    positions = list(range(len(token_ids))) if request.positions == "all" else [prompt_len - 1]
    return [p for p in positions if p >= request.skip_positions
            and not (request.skip_bos and bos is not None and token_ids[p] == bos)]


def _recheck_steps(lm32: LoadedModel, request: CaptureRequest, sites: list[str], lines: list[dict],
                   keep: dict[int, dict[str, np.ndarray]], load_states: Callable) -> StatesCheck:
    """Each kept step teacher-forced in float32 on the tokens the bfloat16 run recorded, with its edits."""
    check = StatesCheck(picked=list(keep), n_steps=len(lines))
    for i, kept in keep.items():
        line, check.current = lines[i], i
        ids, generated = line["token_ids"][:line["prompt_len"]], list(line["generated_ids"])
        rec, info, text_acts = _Recorder(sites), StepInfo(step=i, prompt_len=len(ids)), clean_text_acts(lm32)
        plan = plan_fixed_edits(lm32.lm_kind, max(1, len(generated)), sum(s.active(i) for s in request.interventions))
        cont = continue_greedy(lm32, ids, len(generated), context_at=lambda _k, start, rec=rec, info=info, acts=text_acts:
                               _forward_context(lm32, request, rec, info, load_states, acts, start),
                               forced=generated or None, stop_at_eos=request.stop_at_eos,
                               incremental=plan["path"] == "kv_cache")
        for s in sites:
            rows = rec.states(s)[line["positions"]].float().cpu().numpy().astype(request.store_dtype)
            check.add(s, kept[s], rows)
            check.n_rows += rows.shape[0] if s == sites[0] else 0
        check.greedy(i, generated, [int(logits.argmax()) for logits in cont.logits[:len(generated)]])
    return check


def _recheck_corpus(lm32: LoadedModel, request: CaptureRequest, contexts: torch.Tensor, sites: list[str],
                    lines: list[dict], keep: dict[int, dict[str, np.ndarray]]) -> StatesCheck:
    """The kept corpus contexts through the float32 model, stopped at the deepest site as the capture was."""
    check = StatesCheck(picked=list(keep), n_steps=len(lines))
    order = sorted(keep)
    dtype = getattr(torch, request.store_dtype)
    for start, states in forward_batches(lm32, contexts[order], sites, request.batch_size, dtype=dtype):
        for j in range(next(iter(states.values())).shape[0]):
            i = check.current = order[start + j]
            for s in sites:
                rows = states[s][j][lines[i]["positions"]].numpy()
                check.add(s, keep[i][s], rows)
                check.n_rows += rows.shape[0] if s == sites[0] else 0
    return check


def _finish(run: Any, request: CaptureRequest, lm: LoadedModel, lines: list[dict], widths: dict[str, int],
            writer: StateWriter, plan: dict[str, str],
            precision: tuple[str, str | None, Agreement | None] = ("float32", None, None)) -> CaptureResult:
    """capture.json, trace.jsonl and the result; ``precision`` = (the precision run, resolve's note, the
    bfloat16 run's agreement)."""
    ran, note, agreed = precision
    states = writer.finish()
    index = np.array([(ln["step"], p, ln["token_ids"][p]) for ln in lines for p in ln["positions"]], dtype=np.int64)
    run.write_npy("arrays/index.npy", index.reshape(-1, 3))
    trace = run.write_jsonl("trace.jsonl", lines)
    n_rows = int(index.shape[0])
    record = CaptureRecord(model=request.model, lm_kind=lm.lm_kind, fingerprint=lm.fingerprint,
                           positions=request.positions, skip_positions=request.skip_positions,
                           skip_bos=request.skip_bos, n_rows=n_rows, n_steps=len(lines),
                           store_dtype=request.store_dtype,
                           special_ids=sorted(int(i) for i in lm.tokenizer.all_special_ids),
                           generation=GenerationPlan.model_validate(plan),
                           sites={s: CaptureSite(width=w, path=states_path(s)) for s, w in widths.items()},
                           precision=ran, precision_agreement=agreed)
    run.write_json(CAPTURE_FILE, record.model_dump(mode="json"))
    sites = list(widths)
    over = (f"{len(lines)} context(s) of {request.context_size} tokens from corpus {request.corpus}"
            if request.corpus is not None else f"{len(lines)} step(s)")
    summary = (f"Captured {n_rows} rows x {len(sites)} site(s) ({', '.join(sites[:4])}"
               f"{', ...' if len(sites) > 4 else ''}) over {over} of {request.model}"
               + (f" with {len(request.interventions)} step-scoped intervention(s)" if request.interventions else "")
               + ".")
    summary = " ".join(t for t in (summary, note, agreed.summary if agreed else None) if t)
    run.set_summary(summary)
    nxt = (f"Call fit_sae with capture_run_id='{run.run_id}' and site='{sites[0]}' to learn sparse features of "
           "these states; or read trace.jsonl for the per-step outputs.")
    return CaptureResult(run_id=run.run_id, summary=summary, artifacts=run.artifact_uris(), n_steps=len(lines),
                         n_rows=n_rows, sites=sites, widths=widths, outputs=[ln["output"] for ln in lines[:20]],
                         trace=trace, states=states, next=nxt, precision=ran, precision_agreement=agreed)

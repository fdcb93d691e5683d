"""tokenize: each text's tokens (ids, decoded pieces, count) in each model, from the tokenizer files alone.

Texts are tokenized as the experiment tools tokenize prompts (special tokens such as BOS included unless
``special_tokens`` is false; chat-templated with ``chat`` or for a list of messages), so a position here
is a position in their results. The reply lists a bounded number of tokens per row (and of rows, so it stays
agent-sized); ``tokens.json`` holds them all.
"""

import json

from neurotrace.lab.errors import LabError
from neurotrace.lab.lab import Lab
from neurotrace.lab.model.access.chat import templated
from neurotrace.lab.model.access.tokens import token_texts
from neurotrace.lab.model.weights.loading import TokenizerOnly, load_tokenizer
from neurotrace.lab.progress import NULL_REPORTER, Reporter
from neurotrace.lab.tokenize.schema import TABLE_FILE, TokenizeRequest, TokenizeResult, TokenRow, TokenTable

ROWS_CHARS = 4500       # the listed rows' JSON: with counts and summary the reply stays within 8K characters
MIN_SHOWN, MAX_SHOWN = 8, 64
SUMMARY_TEXTS = 6


def _tokenizer(name: str, index: int, lab: Lab) -> TokenizerOnly:
    try:
        return load_tokenizer(name, trust_remote_code=lab.settings.trust_remote_code)
    except LabError as exc:     # the loaders name 'model'; the request's field is models[i]
        raise type(exc)(f"models[{index}]", exc.message, fix=exc.fix) from exc


def _label(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def _summary(request: TokenizeRequest, counts: dict[str, list[int]]) -> str:
    models = list(counts)
    lines = []
    for t in range(min(len(request.texts), SUMMARY_TEXTS)):
        given = request.texts[t]
        label = _label(given) if isinstance(given, str) else f"text {t} (messages)"
        lines.append(f"{label}: " + ", ".join(f"{m} {counts[m][t]}" for m in models))
    text = (f"Token counts of {len(request.texts)} text(s) in {len(models)} model(s)"
            + (" (special tokens included)" if request.special_tokens else "") + ": " + "; ".join(lines))
    if len(request.texts) > SUMMARY_TEXTS:
        text += f"; {len(request.texts) - SUMMARY_TEXTS} more in counts"
    if len(request.texts) > 1:
        same = [m for m in models if len(set(counts[m])) == 1]
        differ = [m for m in models if m not in same]
        text += (". Same length in every text: " + (", ".join(same) or "no model")
                 + ("; lengths differ in " + ", ".join(differ) if differ else ""))
    return text + "."


def listed(rows: list[TokenRow]) -> tuple[list[TokenRow], int]:
    """The rows the reply lists and the tokens shown per row: at most :data:`MAX_SHOWN` tokens a row, halved
    (down to :data:`MIN_SHOWN`) and then the rows halved until their JSON fits :data:`ROWS_CHARS`."""
    cap, n = MAX_SHOWN, len(rows)
    while True:
        shown = [r.model_copy(update={"ids": r.ids[:cap], "tokens": r.tokens[:cap], "shown": min(cap, r.n_tokens)})
                 for r in rows[:n]]
        if len(json.dumps([r.model_dump(mode="json") for r in shown])) <= ROWS_CHARS or (cap, n) == (MIN_SHOWN, 1):
            return shown, cap
        if cap > MIN_SHOWN:
            cap = max(MIN_SHOWN, cap // 2)
        else:
            n = max(1, n // 2)


def run_tokenize(request: TokenizeRequest, *, lab: Lab, reporter: Reporter = NULL_REPORTER) -> TokenizeResult:
    """How do these texts tokenize? Each text's token ids, pieces and count in each model (tokenizer only)."""
    lab.check(request)
    models = list(dict.fromkeys(request.models))
    rows: list[TokenRow] = []
    texts: dict[str, list[str]] = {}
    for k, name in enumerate(models):
        reporter.step(k, len(models), f"tokenizing with {name}")
        tok = _tokenizer(name, request.models.index(name), lab).tokenizer
        texts[name] = [templated(tok, t, chat=request.chat, model=name, field=f"texts[{i}]")
                       for i, t in enumerate(request.texts)]
        for i, text in enumerate(texts[name]):
            ids = [int(x) for x in tok(text, add_special_tokens=request.special_tokens)["input_ids"]]
            unk = tok.unk_token_id
            rows.append(TokenRow(model=name, text=i, n_tokens=len(ids), ids=ids, tokens=token_texts(tok, ids),
                                 shown=len(ids), n_unknown=sum(x == unk for x in ids) if unk is not None else 0))
    counts = {m: [r.n_tokens for r in rows if r.model == m] for m in models}
    shown, cap = listed(rows)
    summary = _summary(request, counts)
    unknown = [r for r in rows if r.n_unknown]
    if unknown:
        summary += " Out of vocabulary (unknown tokens): " + ", ".join(
            f"text {r.text} in {r.model} ({r.n_unknown})" for r in unknown[:6]) + "."
    with lab.store.open_run("tokenize", request) as run:
        table_uri = run.write_json(TABLE_FILE, TokenTable(texts=texts, rows=rows).model_dump(mode="json"))
        run.set_summary(summary)
        artifacts = run.artifact_uris()
    cut = sum(r.shown < r.n_tokens for r in shown)
    if cut:
        summary += f" {cut} row(s) list their first {cap} tokens"
    if len(shown) < len(rows):
        summary += f"{';' if cut else ''} only {len(shown)} of {len(rows)} (model, text) rows are listed"
    if cut or len(shown) < len(rows):
        summary += f"; every token of every row is in {TABLE_FILE}."
    reporter.step(len(models), len(models), "done")
    return TokenizeResult(
        run_id=run.run_id, summary=summary,
        artifacts=artifacts, counts=counts, rows=shown, table_uri=table_uri,
        next="For a subject swap the clean and corrupt prompts need the same count in every model traced; "
             "generate_facts checks that for a fact set and suggests same-length corrupt subjects.")

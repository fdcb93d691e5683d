"""capture over a corpus: the built-in corpus, files from the input directories, token contexts, and batched
forwards that equal plain forward hooks exactly while stopping at the deepest captured layer."""

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from neurotrace import CaptureRequest, run_capture
from neurotrace.lab.capture import load_trace_dataset
from neurotrace.lab.capture.corpus import BUILTIN, corpus_texts, passages, token_contexts
from neurotrace.lab.errors import Cancelled, InputError
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.access.hooks import recording
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.lab.progress import NULL_REPORTER, Reporter

DATA = Path(__file__).resolve().parents[3] / "neurotrace" / "data" / "corpus"
SITES = ["blocks.0.hook_resid_post", "blocks.1.mlp.hook_post"]


@pytest.fixture
def lab(tmp_path):
    (tmp_path / "inputs").mkdir()
    return Lab(LabSettings(runs_dir=tmp_path / "runs", max_input_bytes=4096))


def _capture(lab, model, **kw):
    kw.setdefault("corpus", "python-docs")
    reporter = kw.pop("reporter", NULL_REPORTER)
    request = CaptureRequest(model=str(model), sites=kw.pop("sites", SITES), **kw)
    return run_capture(request, lab=lab, reporter=reporter)


def test_the_builtin_corpus_is_real_prose_of_a_few_megabytes_with_a_card_naming_source_and_licence(lab):
    texts = corpus_texts(lab, "python-docs")
    size = sum(len(t.encode("utf-8")) for t in texts)
    assert 3e6 < size < 20e6 and len(texts) > 1000
    words = " ".join(texts[:200]).split()
    assert sum(w.isalpha() for w in words) / len(words) > 0.6          # prose, not code or tables
    card = (DATA / "python-docs.md").read_text(encoding="utf-8")
    for needed in ("python3.11-doc", "PSF License", "scripts/build_corpus.py"):
        assert needed in card
    assert "PSF LICENSE AGREEMENT FOR PYTHON" in (DATA / "python-docs.LICENSE.txt").read_text(encoding="utf-8")
    assert set(BUILTIN) == {"python-docs"}


def test_passages_keep_whole_paragraphs_under_the_limit():
    doc = "\n\n".join(f"paragraph {i} " + "word " * 30 for i in range(40))
    parts = passages(doc, limit=500)
    assert len(parts) > 5 and all(len(p) <= 500 + 200 for p in parts)
    assert " ".join(" ".join(parts).split()) == " ".join(doc.split())


def test_token_contexts_are_fixed_seeded_budgeted_and_start_with_bos(lab, tiny_gpt2):
    with lab.cache.lease(ModelRef(model=str(tiny_gpt2))) as lm:
        tok = lm.tokenizer
    texts = corpus_texts(lab, "python-docs")
    a = token_contexts(tok, texts, context_size=32, max_tokens=32 * 50, seed=3)
    b = token_contexts(tok, texts, context_size=32, max_tokens=32 * 50, seed=3)
    c = token_contexts(tok, texts, context_size=32, max_tokens=32 * 50, seed=4)
    assert a.shape == (50, 32) and a.dtype == torch.long and torch.equal(a, b) and not torch.equal(a, c)
    assert (a[:, 0] == tok.bos_token_id).all()
    plain = token_contexts(tok, texts, context_size=32, max_tokens=32 * 50, seed=3, prepend_bos=False)
    assert plain.shape == (50, 32) and not (plain[:, 0] == tok.bos_token_id).all()
    assert len(set(plain[0].tolist())) > 3                          # text, not padding


def test_corpus_capture_equals_plain_forward_hooks_exactly_and_stops_at_the_deepest_site(lab, tiny_gpt2):
    calls = {"after": 0}
    with lab.cache.lease(ModelRef(model=str(tiny_gpt2))) as lm:
        last = lm.adapter.module(lm.model, lm.adapter.blocks)[-1]
        handle = last.register_forward_hook(lambda *_: calls.__setitem__("after", calls["after"] + 1))
    try:
        result = _capture(lab, tiny_gpt2, context_size=16, max_tokens=16 * 10, batch_size=4, seed=1)
    finally:
        handle.remove()
    assert calls["after"] == 0       # the last block never finished: the forward stopped inside it (mlp.hook_post)
    assert result.n_rows == 160 and result.sites == SITES
    with lab.cache.lease(ModelRef(model=str(tiny_gpt2))) as lm:
        contexts = token_contexts(lm.tokenizer, corpus_texts(lab, "python-docs"), 16, 160, seed=1)
        with recording(lm.model, lm.adapter, SITES) as store, torch.no_grad():
            lm.model(input_ids=contexts)                                        # one plain full forward
            expected = {s: store[s].reshape(-1, store[s].shape[-1]).numpy() for s in SITES}
    for s in SITES:
        ds = load_trace_dataset(lab, result.run_id, s)
        assert np.array_equal(np.asarray(ds.states), expected[s])
    assert ds.meta["token_id"].tolist() == contexts.flatten().tolist()
    assert ds.steps[3]["token_ids"] == contexts[3].tolist() and ds.token(16 * 3 + 5) == ds.steps[3]["tokens"][5]


def test_float16_storage_skip_bos_and_a_jsonl_file_from_the_input_directories(lab, tiny_gpt2, tmp_path):
    lines = [json.dumps({"text": f"The river number {i} flows past the old mill and into the sea."}) for i in range(20)]
    (tmp_path / "inputs" / "rivers.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    full = _capture(lab, tiny_gpt2, corpus="rivers.jsonl", context_size=8, max_tokens=64, seed=0)
    half = _capture(lab, tiny_gpt2, corpus="rivers.jsonl", context_size=8, max_tokens=64, seed=0,
                    store_dtype="float16", skip_bos=True)
    a = load_trace_dataset(lab, full.run_id, SITES[0])
    b = load_trace_dataset(lab, half.run_id, SITES[0])
    assert b.states.dtype == np.float16 and len(b) < len(a)
    keep = a.meta["token_id"] != a.steps[0]["token_ids"][0]          # BOS (GPT-2's BOS is also its separator)
    np.testing.assert_allclose(b.states.astype(np.float32), np.asarray(a.states)[keep], rtol=1e-3, atol=1e-3)
    assert "river" in "".join(a.steps[0]["tokens"])


@pytest.mark.parametrize(("name", "content", "match"), [
    ("../outside.txt", b"some text here", "outside the allowed input directories"),
    ("latin1.txt", "caf\u00e9 cr\u00e8me".encode("latin-1"), "not UTF-8"),
    ("empty.txt", b"  \n\n ", "holds no text"),
    ("big.txt", b"word " * 2000, "over the input limit"),
    ("bad.jsonl", b'{"text": "fine"}\nnot json\n', "line 2"),
    ("notes.pdf", b"%PDF", "neither a built-in corpus"),
])
def test_bad_corpus_files_get_a_typed_error_naming_the_field_and_no_run(lab, tiny_gpt2, tmp_path, name, content,
                                                                       match):
    target = (tmp_path / "inputs" / name).resolve()
    target.write_bytes(content)
    with pytest.raises(InputError, match=match) as err:
        _capture(lab, tiny_gpt2, corpus=name if not name.startswith("..") else str(target), context_size=16)
    assert err.value.field == "corpus" and err.value.fix
    assert not any(lab.store.root.glob("*/manifest.json")) if lab.store.root.exists() else True


def test_corpus_requests_that_cannot_work_are_refused(lab, tiny_gpt2):
    with pytest.raises(InputError, match="exactly one") as err:
        _capture(lab, tiny_gpt2, prompts=["hello"])
    assert err.value.field == "corpus"
    with pytest.raises(InputError) as err:
        _capture(lab, tiny_gpt2, max_new_tokens=3)
    assert err.value.field == "max_new_tokens"
    with pytest.raises(InputError) as err:
        _capture(lab, tiny_gpt2, context_size=4096)
    assert err.value.field == "context_size"


def test_a_cancel_lands_within_a_batch(lab, tiny_gpt2):
    reporter = Reporter()
    seen = threading.Event()
    with lab.cache.lease(ModelRef(model=str(tiny_gpt2))) as lm:
        first = lm.adapter.module(lm.model, lm.adapter.blocks)[0]

    def cancel_in_block0(*_):
        seen.set()
        reporter.cancel()

    handle = first.register_forward_hook(cancel_in_block0)
    try:
        with pytest.raises(Cancelled):
            _capture(lab, tiny_gpt2, context_size=16, max_tokens=16 * 8, batch_size=8, reporter=reporter)
    finally:
        handle.remove()
    assert seen.is_set()
    assert not list(lab.store.root.rglob("*.npy"))

"""ROME's and MEMIT's updates equal the papers' closed forms, written here straight from the equations in numpy,
on random matrices and on tiny GPT-2 (Conv1D) and Llama (Linear) models given the same key, value and covariance."""

import numpy as np
import pytest
import torch

from neurotrace.lab.editing.counterfact.cases import Case
from neurotrace.lab.editing.counterfact.measure import case_ids
from neurotrace.lab.editing.counterfact.text import batch, context_prefixes, logits_at_last
from neurotrace.lab.editing.method.covariance import covariances
from neurotrace.lab.editing.method.rome import memit_delta, rome_delta, weight_matrix
from neurotrace.lab.editing.method.updates import apply, preserved, rome_update
from neurotrace.lab.editing.method.vectors import ValueSettings, down_proj
from neurotrace.lab.lab import Lab, LabSettings
from neurotrace.lab.model.weights.loading import ModelRef
from neurotrace.lab.progress import NULL_REPORTER


def rome_reference(w: np.ndarray, c: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Meng et al. 2022, eq. 2: W' = W + Λ (C^-1 k*)^T, Λ = (v* - W k*) / ((C^-1 k*)^T k*); returns W' - W."""
    cinv_k = np.linalg.inv(c) @ k
    lam = (v - w @ k) / (cinv_k @ k)
    return np.outer(lam, cinv_k)


def memit_reference(c: np.ndarray, k: np.ndarray, r: np.ndarray, lam: float) -> np.ndarray:
    """Meng et al. 2023, eq. 14: Δ = R K^T (λ C0 + K K^T)^-1."""
    return r @ k.T @ np.linalg.inv(lam * c + k @ k.T)


def _spd(n: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.standard_normal((4 * n, n))
    return a.T @ a / (4 * n)


def test_rome_delta_equals_the_closed_form_and_meets_the_constraint():
    rng = np.random.default_rng(0)
    w, c = rng.standard_normal((6, 10)), _spd(10, rng)
    k, v = rng.standard_normal(10), rng.standard_normal(6)
    got = rome_delta(torch.tensor(w), torch.tensor(c), torch.tensor(k), torch.tensor(v)).numpy()
    np.testing.assert_allclose(got, rome_reference(w, c, k, v), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose((w + got) @ k, v, rtol=1e-10, atol=1e-10)      # W' k* = v*
    assert np.linalg.matrix_rank(got) == 1


def test_memit_delta_equals_the_closed_form():
    rng = np.random.default_rng(1)
    c, k, r = _spd(12, rng), rng.standard_normal((12, 3)), rng.standard_normal((5, 3))
    got = memit_delta(torch.tensor(c), torch.tensor(k), torch.tensor(r), 50.0).numpy()
    np.testing.assert_allclose(got, memit_reference(c, k, r, 50.0), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("family", ["tiny_gpt2", "tiny_llama"])
def test_rome_update_on_a_tiny_model_equals_the_reference(family, request, tmp_path):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs", threads=1))
    path = str(request.getfixturevalue(family))
    case = Case(id="x", relation="capital_of", template="the capital of {} is", subject="france",
                target_new="rome", target_true=None)
    with lab.cache.lease(ModelRef(model=path)) as lm:
        ids = case_ids(lm, case, 0)
        ids.true = 0
        prefixes = context_prefixes(lm, 2, seed=0, length=3)
        cov = covariances(lab, lm, [0], 512, 0, "python-docs", NULL_REPORTER)[0][0]
        mod = down_proj(lm, 0)
        w0 = mod.weight.detach().clone()
        settings = ValueSettings(steps=5, lr=0.5, kl_factor=0.0625, weight_decay=0.5, clamp_norm=4.0)
        u = rome_update(lm, case, ids, 0, prefixes, cov, settings, "rewrites[0]", NULL_REPORTER)
        # layer 0: a change at the subject reaches the last token through layer 1's attention
        # the key, independently: the projection's input at the subject ('france') in every prefixed prompt
        seen = []
        handle = mod.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
        for p in prefixes:
            enc = lm.tokenizer(p + "the capital of france is")
            pos = len(enc["input_ids"]) - 2                             # the subject of "... france is"
            lm.model(input_ids=torch.tensor([enc["input_ids"]]))
            seen[-1] = seen[-1][0, pos]
        handle.remove()
        key = torch.stack(seen).mean(0)
        torch.testing.assert_close(u.key, key, rtol=1e-5, atol=1e-6)
        w = weight_matrix(mod).detach().double().numpy()
        bias = mod.bias.detach().double().numpy() if mod.bias is not None else 0.0
        ref = rome_reference(w, cov.double().numpy(), u.key.double().numpy(), u.value.double().numpy() - bias)
        np.testing.assert_allclose(u.delta.double().numpy(), ref, rtol=1e-4, atol=1e-6)
        with preserved(lm, [0]):
            apply(lm, u)
            out = mod(u.key[None])[0]
            torch.testing.assert_close(out, u.value, rtol=1e-4, atol=1e-4)       # W' k* + b = v*
            assert u.value_norm > 0 and not torch.equal(mod.weight, w0), u.value_norm
        assert torch.equal(mod.weight, w0)                                        # restored exactly


@pytest.mark.parametrize("family", ["tiny_gpt2", "tiny_llama"])
def test_last_token_logits_through_body_and_head_equal_the_models(family, request, tmp_path):
    lab = Lab(LabSettings(runs_dir=tmp_path / "runs", threads=1))
    with lab.cache.lease(ModelRef(model=str(request.getfixturevalue(family)))) as lm:
        b = batch(lm, ["the capital of {} is", "{} is a"], "france", ["", "two italian. "], "x")
        full = lm.model(input_ids=b.ids, attention_mask=b.mask).logits[torch.arange(4), b.last]
        torch.testing.assert_close(logits_at_last(lm, b), full, rtol=1e-5, atol=1e-5)

"""The ``precision`` option shared by the heavy tools: float32 (the default) or bfloat16, measured against float32.

* **Request fields.** ``precision: Precision = "float32"`` and ``insist_precision: InsistPrecision = False``
  (declare them with these annotations so every tool reads the same).
* **Which precision runs.** :func:`resolve` keeps float32 where bfloat16 would be slower: a GPU without
  bfloat16 (``torch.cuda.is_bf16_supported``), or a CPU whose bfloat16 matmuls are not clearly faster than
  float32 ones (measured once per process on a small matmul, :func:`bf16_speedup`). Then the run is
  float32 with a note saying so, unless the request insists. ``NEUROTRACE_FAST_BF16=0|1`` overrides the
  measurement (tests, or a machine known either way).
* **The bfloat16 model.** :func:`lease_at` leases, through the lab's model cache, a bfloat16 copy of the
  float32 model (its own cache entry, counted in the memory budget; the float32 model is never touched).
  Following what the families' reference code keeps in float32 (transformers' Llama/Gemma RMSNorm compute
  in float32; their eager attention takes its softmax in float32; log-softmax over the vocabulary is taken
  on float32 logits), every norm module of the copy keeps float32 weights and computes in float32, and the
  residual stream is float32. Measured on gemma-3-270m (bench/trace.py), two more places decide most of the
  gap to float32, and both are kept at no cost:

  - the norms whose output *is* the residual's increment (Gemma's post norms) and the final norm keep
    their float32 output (rounding it to bfloat16 alone doubled the error of p(target));
  - the unembedding is an :class:`ExactTopHead`: bfloat16 logits over the whole vocabulary, each row's
    largest ones recomputed exactly (the logits' own bfloat16 rounding moves p by up to ~0.015).

  The other norms hand bfloat16 to the next product. Rotary tables and other buffers stay as loaded.
  Tools whose runs share once-per-input forwards (trace's clean and corrupted runs) compute those on the
  float32 model and run only the rows in bfloat16 (``exact_grid(..., anchor=)``).
* **Agreement.** A bfloat16 run recomputes a sample of what it reports in float32: every peak plus a seeded
  random sample of the rest (:func:`choose`), and reports an :class:`Agreement`: how many were
  recomputed, which, the largest absolute difference of the reported quantity, and the readings that
  would change (:func:`changed_readings`), with a sentence naming the float32 run to make.
"""

import copy
import functools
import os
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, Field
from torch import nn

from neurotrace.lab.errors import InputError
from neurotrace.lab.model.weights.cache import ModelCache
from neurotrace.lab.model.weights.loading import LoadedModel, ModelRef, fingerprint

PrecisionName = Literal["float32", "bfloat16"]
Precision = Annotated[PrecisionName, Field(description="bfloat16: faster; agreement with float32 reported.")]
InsistPrecision = Annotated[bool, Field(description="bfloat16 even where it is not faster.")]

DTYPE: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}
FAST_ENOUGH = 1.2           # bfloat16 counts as fast when its matmul is at least this much quicker
VARIANT = "bfloat16-norms-float32"
TOP_EXACT = 32            # logits per row the bfloat16 unembedding recomputes exactly
ENV_FAST = "NEUROTRACE_FAST_BF16"


# -- is bfloat16 worth it here ---------------------------------------------------------------

@functools.cache
def bf16_speedup(threads: int) -> float:
    """float32 time / bfloat16 time of a 256x640 @ 640x2048 matmul on this CPU with ``threads`` threads
    (best of 3 each; measured once per process and thread count)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 640, generator=g), torch.randn(640, 2048, generator=g)

    def best(x: torch.Tensor, y: torch.Tensor) -> float:
        torch.mm(x, y)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            torch.mm(x, y)
            times.append(time.perf_counter() - t)
        return min(times)

    return best(a, b) / max(best(a.bfloat16(), b.bfloat16()), 1e-9)


def fast_bfloat16(device: torch.device | str) -> tuple[bool, str]:
    """Whether bfloat16 is faster than float32 on ``device``, and how that was found out."""
    forced = os.environ.get(ENV_FAST, "").strip()
    if forced in ("0", "1"):
        return forced == "1", f"{ENV_FAST}={forced}"
    dev = torch.device(device)
    if dev.type == "cuda":
        ok = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        return ok, "this GPU " + ("supports" if ok else "does not support") + " bfloat16"
    if dev.type != "cpu":
        return True, f"assumed on {dev.type}"
    ratio = bf16_speedup(torch.get_num_threads())
    return ratio >= FAST_ENOUGH, f"a bfloat16 matmul ran {ratio:.2f}x float32's speed on this CPU"


def resolve(requested: PrecisionName, insist: bool, device: torch.device | str) -> tuple[PrecisionName, str | None]:
    """The precision to run and a note for the summary (None when nothing needs saying)."""
    if requested == "float32":
        return "float32", None
    fast, how = fast_bfloat16(device)
    if fast:
        return "bfloat16", None
    if insist:
        return "bfloat16", f"bfloat16 as insisted, though it is not faster here ({how})"
    return "float32", (f"ran in float32: bfloat16 is not faster here ({how}); "
                       "set insist_precision=true to run bfloat16 anyway")


def check_backend(precision: PrecisionName, backend: str, remote: bool = False) -> None:
    """bfloat16 runs on the torch-hooks backend, locally."""
    if precision != "float32" and (backend != "hf" or remote):
        raise InputError("precision", "bfloat16 runs locally with backend='hf' only",
                         fix="set precision='float32' or backend='hf' (and remote=false)")


def bytes_per_value(precision: PrecisionName) -> int:
    """Bytes of one weight or activation value in ``precision`` (for cost models)."""
    return 2 if precision == "bfloat16" else 4


# -- the bfloat16 model -------------------------------------------------------------------------

def is_norm(module: nn.Module) -> bool:
    """LayerNorm and every family's RMSNorm (GemmaRMSNorm, LlamaRMSNorm, ...)."""
    name = type(module).__name__
    return isinstance(module, nn.LayerNorm) or name.endswith(("RMSNorm", "LayerNorm"))


def _to_float32(_module: nn.Module, args: tuple, kwargs: dict) -> Any:
    if args and torch.is_tensor(args[0]) and args[0].dtype != torch.float32:
        return (args[0].float(), *args[1:]), kwargs
    return None


def _back_to(dtype: torch.dtype) -> Callable[[nn.Module, Any, Any], Any]:
    def back(_module: nn.Module, _args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return tuple(o.to(dtype) if torch.is_tensor(o) and o.is_floating_point() else o for o in output)
        return output.to(dtype) if torch.is_tensor(output) else None

    return back


class ExactTopHead(nn.Linear):
    """A bfloat16 unembedding whose largest logits are exact: every logit is computed in bfloat16 (the fast
    product over the whole vocabulary), returned as float32, and each row's ``k`` largest are recomputed in
    float32 from the float32 input and the weights split in two bfloat16 halves (``weight + lo`` carries 16
    mantissa bits). The softmax over the vocabulary is dominated by those logits, so p(target) keeps almost
    float32's precision at bfloat16's cost (a 256k vocabulary: the bfloat16 rounding of the logits alone
    moves p by up to ~0.015)."""

    def __init__(self, linear: nn.Linear, reference: torch.Tensor, k: int = TOP_EXACT) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features, self.k = linear.in_features, linear.out_features, k
        self.weight, self.bias = linear.weight, linear.bias
        self.register_buffer("lo", (reference.float() - self.weight.float()).to(self.weight.dtype), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = nn.functional.linear(x.to(self.weight.dtype), self.weight, self.bias).float()
        k = min(self.k, z.shape[-1])
        if k == 0 or z.numel() == 0:
            return z
        top = z.topk(k, dim=-1).indices                                           # (..., k)
        w = self.weight[top].float() + self.lo[top].float()                       # (..., k, D)
        exact = (w @ x.float().unsqueeze(-1)).squeeze(-1)
        if self.bias is not None:
            exact = exact + self.bias.float()[top]
        return z.scatter_(-1, top, exact)


def reduced_copy(model: nn.Module, dtype: torch.dtype = torch.bfloat16, *, residual_norms: Collection[str] = (),
                 final_norm: str | None = None, head: str | None = None) -> nn.Module:
    """A copy of ``model`` with its weights in ``dtype``, except the norms' (float32, computing in float32).

    * The residual stream stays float32: the embedding's output is cast to float32, and each sublayer's
      output is added to it there.
    * The norms named in ``residual_norms`` (whose output *is* what the residual stream receives: Gemma's
      post norms) keep their float32 output, as does ``final_norm`` when it feeds an exact head; the others
      cast it back to ``dtype`` for the next product.
    * ``head`` (the unembedding's path), when it is an ``nn.Linear``, becomes an :class:`ExactTopHead`.

    The original's tensors are never written (each copied parameter is new; buffers are copied as they are)."""
    memo: dict[int, Any] = {}
    for module in model.modules():
        keep = is_norm(module)
        for p in module.parameters(recurse=False):
            if id(p) not in memo:
                memo[id(p)] = nn.Parameter(p.detach().to(torch.float32 if keep or not p.is_floating_point()
                                                          else dtype, copy=True), requires_grad=False)
    out = copy.deepcopy(model, memo)
    unembed = out.get_submodule(head) if head else None
    exact_head = isinstance(unembed, nn.Linear)
    float32_out = {*residual_norms, *([final_norm] if exact_head and final_norm else [])}
    for name, module in out.named_modules():
        if is_norm(module):
            module.register_forward_pre_hook(_to_float32, with_kwargs=True)
            if name not in float32_out:
                module.register_forward_hook(_back_to(dtype))
        elif type(module).__name__.endswith("RotaryEmbedding"):   # cos/sin follow the float32 stream: give
            module.register_forward_hook(_back_to(dtype))           # the attention its own dtype back
    embed = out.get_input_embeddings() if hasattr(out, "get_input_embeddings") else None
    if embed is not None:        # the residual stream in float32: every sublayer's output is added to it there
        embed.register_forward_hook(_back_to(torch.float32))
    if exact_head:
        parent, _, leaf = head.rpartition(".")
        setattr(out.get_submodule(parent) if parent else out, leaf,
                ExactTopHead(unembed, model.get_submodule(head).weight.detach()))
    return out


def reduced_model(loaded: LoadedModel) -> LoadedModel:
    """The bfloat16 copy of a loaded float32 model (:func:`reduced_copy`), as a LoadedModel of its own key:
    the adapter's post norms and final norm keep float32 outputs, and a linear unembedding is exact on
    each row's largest logits."""
    ad = loaded.adapter
    post = ([ad.attn_out.replace("{L}", str(i)) for i in range(loaded.n_layers)]
            + [ad.mlp_out.replace("{L}", str(i)) for i in range(loaded.n_layers)]) if ad.post_norms else []
    model = reduced_copy(loaded.model, residual_norms=post, final_norm=ad.final_norm,
                         head=ad.unembed if ad.final_norm else None)
    ref = loaded.ref.model_copy(update={"dtype": "bfloat16"})
    nbytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return replace(loaded, key=f"{loaded.key}|{VARIANT}", ref=ref, model=model, nbytes=nbytes,
                   fingerprint=fingerprint(model), bridge=None, nnsight=None,
                   provenance={**loaded.provenance, "precision": VARIANT}, lock=type(loaded.lock)())


@contextmanager
def lease_at(cache: ModelCache, ref: ModelRef, precision: PrecisionName) -> Iterator[LoadedModel]:
    """Lease ``ref`` (a float32 load) at ``precision``: the model itself for float32, else its cached
    bfloat16 copy (made from the float32 model once, its own cache entry within the memory budget)."""
    if precision == "float32":
        with cache.lease(ref) as lm:
            yield lm
        return
    if ref.dtype != "float32" or ref.device == "auto":
        raise InputError("precision", "bfloat16 copies are made of float32 models on one device",
                         fix="set precision='float32', or load the model in float32 on one device")
    with cache.lease_variant(ref, VARIANT, reduced_model) as lm:
        yield lm


@contextmanager
def lease_pair(cache: ModelCache, ref: ModelRef, precision: PrecisionName
               ) -> Iterator[tuple[LoadedModel, LoadedModel]]:
    """(the model to run at ``precision``, the float32 model for the agreement's recompute): the same model
    twice in float32. The bfloat16 copy is leased first (making it leases the float32 model for a moment)."""
    if precision == "float32":
        with cache.lease(ref) as lm:
            yield lm, lm
        return
    with lease_at(cache, ref, precision) as reduced, cache.lease(ref) as lm:
        yield reduced, lm


# -- agreement -----------------------------------------------------------------------------------

class Agreement(BaseModel):
    """How a bfloat16 run agrees with float32, measured on a recomputed sample of what it reports."""

    reference: Literal["float32"] = "float32"
    quantity: str = Field(description="The reported quantity compared (e.g. 'indirect effect').")
    n: int = Field(description="Cells or rows recomputed in float32.")
    n_peaks: int = Field(description="Of them, peaks (always recomputed).")
    n_random: int = Field(description="Of them, a seeded random sample of the rest.")
    seed: int
    chosen: list[str] = Field(description="Which were recomputed (peaks first).")
    max_abs_diff: float = Field(description="Largest |bfloat16 - float32| of the quantity over them.")
    worst: str = Field("", description="Where the largest difference is.")
    changed: list[str] = Field(default_factory=list, description="Readings that would change in float32.")
    rerun: str | None = Field(None, description="The float32 run to make when a reading would change.")
    summary: str = ""


def choose(n_total: int, peaks: Sequence[int], n_random: int, seed: int) -> tuple[list[int], list[int]]:
    """Indices to recompute: ``peaks`` (deduplicated, kept in order) and up to ``n_random`` others drawn
    with ``seed``. Returns (peaks, random)."""
    seen: list[int] = []
    for i in peaks:
        if 0 <= i < n_total and i not in seen:
            seen.append(i)
    taken = set(seen)
    rest = [i for i in range(n_total) if i not in taken]
    g = torch.Generator().manual_seed(int(seed))
    pick = torch.randperm(len(rest), generator=g)[:max(0, n_random)].tolist()
    return seen, sorted(rest[j] for j in pick)


def compare(reduced: Sequence[float], reference: Sequence[float], labels: Sequence[str]) -> tuple[float, str]:
    """The largest |reduced - reference| and the label where it is (0.0, '' when nothing was compared)."""
    if not reference:
        return 0.0, ""
    diffs = [abs(float(a) - float(b)) for a, b in zip(reduced, reference, strict=True)]
    i = max(range(len(diffs)), key=diffs.__getitem__)
    return diffs[i], labels[i]


def changed_readings(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """'name: before -> after' for every reading whose value differs (readings are named plain values)."""
    return [f"{k}: {_show(before[k])} -> {_show(after.get(k))}" for k in before if before[k] != after.get(k)]


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def agreement(quantity: str, labels: Sequence[str], n_peaks: int, seed: int, reduced: Sequence[float],
              reference: Sequence[float], changed: Sequence[str], rerun: str) -> Agreement:
    """The :class:`Agreement` of recomputed values ``reference`` (float32) with the run's ``reduced``
    (bfloat16) ones at ``labels`` (the first ``n_peaks`` are peaks), with its summary sentence.
    ``rerun`` names the float32 run to make; it is given only when a reading would change."""
    worst_diff, worst = compare(reduced, reference, labels)
    n = len(labels)
    head = (f"bfloat16 agreement with float32 on {n} recomputed {quantity} values ({n_peaks} peaks, "
            f"{n - n_peaks} seeded random): largest |difference| {worst_diff:.2g}")
    if changed:
        sentence = (f"{head}; in float32 {len(changed)} reading(s) would change ({'; '.join(changed[:3])}"
                    f"{'; ...' if len(changed) > 3 else ''}): rerun {rerun}.")
    else:
        sentence = f"{head}; no reading would change."
    return Agreement(quantity=quantity, n=n, n_peaks=n_peaks, n_random=n - n_peaks, seed=seed, chosen=list(labels),
                     max_abs_diff=worst_diff, worst=worst, changed=list(changed),
                     rerun=rerun if changed else None, summary=sentence)


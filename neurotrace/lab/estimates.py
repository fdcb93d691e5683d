"""Whole-job estimates: forward rows and peak bytes of a request, read before any model work.

Each estimate reads only the request and the model's shape: the shape of a model already in the cache,
else its ``config.json`` when the name is an embedded model or a local directory, else :data:`GUESS` (a
mid-size model). Positions are bounded by the prompt's characters (a token covers at least one) and the
model's context. The bytes are a coarse upper bound on the activations alive at once (a batch of rows x
positions x the widths a block materialises, plus attention's positions x positions per head and the
logits it keeps) and on what the job accumulates (result grids, generated rows); the model's own weights
are the cache's budget, not the job's. :func:`estimate` gives ``None`` for a tool without one.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

BYTES = 4                   # float32
ROWS_PER_BATCH = 512        # the trace grid's batch of restored rows
PACK_FACTS_GUESS = 128      # facts of a pack or dataset run when max_facts is unset


@dataclass(frozen=True)
class Dims:
    """The model shape an estimate needs."""

    n_layers: int
    d_model: int
    d_mlp: int
    n_heads: int
    d_vocab: int
    max_positions: int


GUESS = Dims(n_layers=48, d_model=4096, d_mlp=16384, n_heads=32, d_vocab=65_536, max_positions=4096)


@dataclass(frozen=True)
class Estimate:
    """A job's size: forward rows (one sequence through the model each), peak bytes, fields that drive it."""

    rows: int
    bytes: int
    fields: tuple[str, ...]


def dims_of(lab: Any, model: str | None) -> Dims:
    """The shape of ``model`` from the lab's cache (loaded, or its config.json), else GUESS."""
    if not model:
        return GUESS
    cache = getattr(lab, "cache", None)
    info = cache.shape_of(model) if cache is not None and hasattr(cache, "shape_of") else None
    if not info:
        return GUESS
    get = lambda name: int(info.get(name) or getattr(GUESS, name))  # noqa: E731
    return Dims(n_layers=get("n_layers"), d_model=get("d_model"), d_mlp=int(info.get("d_mlp") or 4 * get("d_model")),
                n_heads=get("n_heads"), d_vocab=get("d_vocab"), max_positions=get("max_positions"))


def positions(dims: Dims, texts: Iterable[str], extra: int = 0) -> int:
    """Tokens of the longest text (at most its characters + BOS/EOS), plus ``extra``, within the context."""
    longest = max((len(t) for t in texts), default=16)
    return max(1, min(dims.max_positions, longest + 2 + extra))


def forward_bytes(dims: Dims, rows: int, pos: int, logit_positions: int = 1) -> int:
    """Activations alive in one batched forward: per row and position the residual copies, the MLP's
    hidden layer and one layer's attention scores, plus the logits kept."""
    per_token = 4 * dims.d_model + dims.d_mlp + dims.n_heads * pos
    return rows * pos * per_token * BYTES + rows * logit_positions * dims.d_vocab * BYTES


def _texts(items: Iterable[Any]) -> list[str]:
    return [item if isinstance(item, str) else str(getattr(item, "prompt", "")) for item in items]


def trace(request: Any, lab: Any) -> Estimate:
    facts = len(request.facts) or PACK_FACTS_GUESS
    facts = min(facts, request.max_facts) if request.max_facts else facts
    samples = getattr(request.corruption, "samples", 1)
    biggest = Estimate(0, 0, ())
    rows_total = 0
    for model in request.models:
        d = dims_of(lab, model)
        pos = positions(d, [f.template + f.clean_subject for f in request.facts] or ["x" * 32])
        per_fact = samples * (1 + len(request.components) * d.n_layers * pos + (d.n_layers * d.n_heads
                                                                                 if request.heads else 0))
        if request.mode == "approx":
            per_fact = samples * 3 + (per_fact if request.check_agreement else 0)
        rows_total += facts * per_fact
        batch = min(ROWS_PER_BATCH, per_fact)
        grids = facts * len(request.components) * d.n_layers * pos * 8 * 3   # restored + indirect + record
        clean = len(request.components) * d.n_layers * pos * d.d_model * BYTES * (1 + samples)
        need = forward_bytes(d, batch, pos) + grids + clean
        biggest = max(biggest, Estimate(0, need, ()), key=lambda e: e.bytes)
    first = ("facts",) if request.facts else ("max_facts",)
    return Estimate(rows_total, biggest.bytes, (*first, "corruption.samples", "components", "heads"))


def intervene(request: Any, lab: Any) -> Estimate:
    d = dims_of(lab, request.model)
    pos = positions(d, _texts(request.prompts), request.max_new_tokens)
    per_prompt = (1 + len(request.policies) + request.controls) * max(1, request.max_new_tokens) \
        + request.rank_features
    rows = len(request.prompts) * per_prompt
    need = forward_bytes(d, 1, pos, pos) * 2 + len(request.prompts) * pos * d.d_model * BYTES
    return Estimate(rows, need, ("prompts", "max_new_tokens", "controls", "rank_features", "policies"))


def patch(request: Any, lab: Any) -> Estimate:
    d = dims_of(lab, request.model)
    pos = positions(d, [request.clean, request.corrupt])
    cells = len(request.components) * d.n_layers * (pos + d.n_heads) \
        + len(request.receivers) * len(request.receiver_parts) * d.n_layers * d.n_heads
    cache = 2 * d.n_layers * 4 * pos * d.d_model * BYTES       # clean + corrupt states at every site
    return Estimate(cells + 2, forward_bytes(d, request.batch_size, pos) + cache,
                    ("batch_size", "components", "receivers", "clean"))


def logit_lens(request: Any, lab: Any) -> Estimate:
    d = dims_of(lab, request.model)
    texts = [request.prompt, *request.fit_prompts]
    pos = positions(d, texts)
    states = len(texts) * (d.n_layers + 1) * pos * d.d_model * BYTES
    lens = (d.n_layers + 1) * pos * d.d_vocab * BYTES                  # every row's unembedding
    tuned = (d.n_layers * d.d_model * d.d_model * BYTES * 3) if request.tuned else 0
    return Estimate(len(texts), forward_bytes(d, 1, pos) + states + lens + tuned, ("fit_prompts", "prompt", "tuned"))


def find_neurons(request: Any, lab: Any) -> Estimate:
    d = dims_of(lab, request.model)
    prompts = len(request.prompts) + len(request.control_prompts)
    generating = request.mode == "collapse"
    pos = positions(d, [*request.prompts, *request.control_prompts], request.max_new_tokens if generating else 0)
    layers = len(request.layers) if request.layers else d.n_layers
    rows = prompts * (request.max_new_tokens if generating else 1)
    pooled = prompts * layers * d.d_mlp * BYTES * 2
    return Estimate(rows, forward_bytes(d, 1, pos, pos) + pooled + layers * d.d_mlp * pos * BYTES,
                    ("prompts", "control_prompts", "max_new_tokens", "layers"))


def steer(request: Any, lab: Any) -> Estimate:
    d = dims_of(lab, request.model)
    prompts = [*request.prompts, *request.control_prompts, *[p for pair in getattr(request.direction_from,
                                                                                    "pairs", []) for p in pair]]
    pos = positions(d, prompts, request.max_new_tokens)
    arms = len(request.alphas) * (2 + request.n_random)
    rows = len(prompts) * arms * max(1, request.max_new_tokens)
    batch = min(len(prompts) * arms, 256)                             # steering.measure.MAX_ROWS
    kept = len(prompts) * (d.d_model + arms * 2) * BYTES * 4           # pooled states, p(targets) per arm
    return Estimate(rows, forward_bytes(d, batch, pos) + kept, ("prompts", "alphas", "n_random", "max_new_tokens"))


def probe(request: Any, lab: Any) -> Estimate:
    d = dims_of(lab, request.model)
    pos = positions(d, request.prompts)
    layers = len(request.layers) if request.layers else d.n_layers + 1
    states = len(request.prompts) * layers * d.d_model * BYTES
    fits = request.k_folds * (1 + request.n_shuffles) * d.d_model * d.d_model * BYTES
    return Estimate(len(request.prompts), forward_bytes(d, 1, pos) + states + fits, ("prompts", "layers", "k_folds"))


def attribute(request: Any, lab: Any) -> Estimate:
    d = dims_of(lab, request.model)
    pos = positions(d, [request.prompt, request.corrupt_prompt or ""])
    cache = d.n_layers * pos * (3 * d.d_model + d.d_mlp) * BYTES * (3 if request.corrupt_prompt else 1)
    rows = 1 + (2 + 2 * request.check_top if request.corrupt_prompt else 0)
    return Estimate(rows, forward_bytes(d, 1, pos, pos) * 2 + cache, ("prompt", "corrupt_prompt"))


def attention(request: Any, lab: Any) -> Estimate:
    d = dims_of(lab, request.model)
    pos = max(positions(d, [request.prompt]), min(d.max_positions, 2 * request.induction_len + 1))
    patterns = d.n_layers * d.n_heads * pos * pos * BYTES * 2            # prompt + induction sequence
    return Estimate(2, forward_bytes(d, 1, pos, pos) + patterns, ("prompt", "induction_len"))


ESTIMATES: dict[str, Callable[[Any, Any], Estimate]] = {
    "trace": trace, "intervene": intervene, "patch": patch, "logit_lens": logit_lens,
    "find_neurons": find_neurons, "steer": steer, "probe": probe, "attribute": attribute, "attention": attention,
}


def estimate(request: Any, tool: str, lab: Any) -> Estimate | None:
    """The job estimate of ``tool``'s request (its own ``cost(lab)`` method where the request type carries
    its cost model), or None when the tool has none here."""
    own = getattr(request, "cost", None)
    if callable(own):
        return own(lab)
    fn = ESTIMATES.get(tool)
    return fn(request, lab) if fn is not None else None

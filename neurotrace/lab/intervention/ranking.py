"""Where a dictionary reads a prompt, and its features ranked by ablating each alone there.

The rows a fit_sae dictionary was trained on (:func:`~neurotrace.lab.sae.fitted_positions`: not position 0, a
special token or a massive-norm attention sink) are the rows intervene reads features at and, for a feature
edit without ``positions``, edits: off them, features fire in the hundreds off the training distribution.
"""

import torch

from neurotrace.lab.intervention.schema import FeatureEffect
from neurotrace.lab.model.access.hooks import hooked
from neurotrace.lab.model.runtime.stepwise import prediction_position
from neurotrace.lab.model.weights.loading import LoadedModel
from neurotrace.lab.sae import Dictionary, fitted_positions
from neurotrace.lab.tracing import clean_states


@torch.no_grad()
def rank_features(lm: LoadedModel, sae: Dictionary, ids: list[int], metric_token: int, top: int,
                  include_dense: bool = False) -> list[FeatureEffect]:
    """Ablate each of the ``top`` most active features alone (batched) and rank by |change in log p|; dense
    features (``sae.density``) are no candidates unless ``include_dense``. Activations and ablations are at the
    positions the dictionary was trained on (:func:`~neurotrace.lab.sae.fitted_positions`: not position 0, a
    special token or an attention sink's massive row, where features fire in the hundreds off-distribution)."""
    density = sae.density
    acts: dict[str, torch.Tensor] = {}

    def rec(act: torch.Tensor, site: str) -> None:
        acts["h"] = act.detach()

    x = torch.tensor([ids], device=lm.device)
    pos = prediction_position(lm, ids)
    with hooked(lm.model, lm.adapter, {sae.cfg.site: rec}):
        clean = torch.log_softmax(lm.model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0, pos].float(), -1)
    keep = fitted_positions(ids, lm.tokenizer.all_special_ids, acts["h"][0])   # the rows the dictionary reads
    peak = sae.encode(acts["h"][0][keep]).max(0).values                  # (d_sae,)
    at = torch.zeros(len(ids), 1, dtype=torch.bool, device=peak.device)
    at[keep] = True
    candidates = peak
    if density is not None and not include_dense:
        candidates = peak.masked_fill(torch.from_numpy(density.dense()).to(peak.device), 0.0)
    n = min(top, int((candidates > 0).sum()))
    if n == 0:
        return []
    feats = candidates.topk(n).indices.sort().values                             # sorted for a stable batch order

    def ablate(act: torch.Tensor, site: str) -> torch.Tensor:
        a = sae.encode(act)                                                # (n, pos, d_sae)
        own = a.gather(2, feats.view(-1, 1, 1).expand(-1, a.shape[1], 1)) * at   # (n, pos, 1), kept positions
        return act - (own * sae.directions(feats)[:, None, :]).to(act.dtype)

    xb = x.expand(n, -1)
    with hooked(lm.model, lm.adapter, {sae.cfg.site: ablate}):
        logits = lm.model(input_ids=xb, attention_mask=torch.ones_like(xb)).logits[:, pos].float()
    effect = torch.log_softmax(logits, -1)[:, metric_token] - clean[metric_token]
    order = sorted(range(n), key=lambda i: (-abs(float(effect[i])), int(feats[i])))
    return [FeatureEffect(feature=int(feats[i]), effect=float(effect[i]), activation=float(peak[feats[i]]),
                          density=density.of(int(feats[i])) if density is not None else None) for i in order]


def unfitted_positions(lm: LoadedModel, sae: Dictionary, ids: list[int]) -> frozenset[int]:
    """The prompt positions a dictionary was not trained on (:func:`~neurotrace.lab.sae.fitted_positions`'s
    rule on the clean activations at its site: position 0, special tokens, attention-sink rows)."""
    store, _ = clean_states(lm, torch.tensor(ids), [sae.cfg.site])
    return frozenset(range(len(ids))) - set(fitted_positions(ids, lm.tokenizer.all_special_ids, store[sae.cfg.site]))

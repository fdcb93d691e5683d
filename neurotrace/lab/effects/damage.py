"""Is the edited model still a language model? The one destructive-edit check every edit tool calls.

An edit can move the metric because it breaks the model, not because it hits the mechanism: ablating one
SAE feature that turns every prompt's top-1 into ' follicles' moves p(target) a lot. So every edit
(intervene, steer, clamp_sweep, the SAE splice) is also run on **neutral text** and its generations are
checked:

* *Neutral text*: the prompts' own prefixes (the predictions before the last prompt token, which the edit's
  task does not ask to change) and, where the model's vocabulary covers them (at most 10% unknown tokens), a
  few plain sentences (:data:`NEUTRAL_SENTENCES`). On every scored position: ``KL(clean || edited)`` of the
  next-token distributions, the change of the next-token loss (a masked LM: of the token's own
  reconstruction loss), whether the top-1 token changed, and the share of positions whose edited top-1 is
  the single most common one.
* *Generations*: how many edited generations collapse (the rules of :mod:`neurotrace.lab.effects.collapse`)
  where the baseline's did not; ``None`` when nothing was generated, so "0 texts changed" is never claimed
  for texts that do not exist.

``destructive`` (:func:`judge`) when any bar in :data:`DAMAGE_RULES` is passed: mean KL above
:data:`MAX_KL` nats per token while the neutral text's own loss rises (an edit that makes the actual text *more*
likely, such as one that repairs a looping model, changes the distribution without breaking it), loss up by more than :data:`MAX_LOSS` nats per token, one token predicted
at :data:`MAX_MODE_SHARE` of the neutral positions (that were not so before), or more than half of the
edited generations collapsing where their baselines did not.
"""

from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from neurotrace.lab.effects.collapse import CollapseThresholds, collapse_reasons, text_metrics
from neurotrace.lab.model.weights.loading import LoadedModel

MAX_KL = 1.0               # nats per neutral token
MAX_LOSS = 1.0             # nats per neutral token
MAX_MODE_SHARE = 0.8       # one edited top-1 token at this share of the neutral positions
MIN_MODE_POSITIONS = 5     # ... judged only with at least this many positions
MAX_UNKNOWN = 0.1          # a neutral sentence is used when at most this share of its tokens is unknown
DAMAGE_RULES = (f"destructive: on neutral text (the prompts' prefixes and plain sentences) mean KL(clean || edited) "
                f"> {MAX_KL:g} nats/token while the text's own loss rises, or next-token loss up > {MAX_LOSS:g} nats/token, or one token is the "
                f"edited top-1 at >= {MAX_MODE_SHARE:.0%} of the positions (it was not before), or more than half "
                "of the edited generations collapse (repetition, a loop, nothing) where the baseline's did not")
NEUTRAL_SENTENCES = ("The weather was mild, and the market opened early on Monday.",
                     "She put the books back on the shelf and turned off the light.",
                     "Most of the town's water comes from a lake in the hills to the north.",
                     "After dinner they walked along the river and talked about the summer.")

EditFor = Callable[[Sequence[int]], AbstractContextManager]      # token ids -> the edit during one full forward


class Damage(BaseModel):
    """What an edit does to neutral text and to generations, and whether that makes it destructive."""

    model_config = ConfigDict(extra="forbid")
    kl: float | None = Field(description="Mean KL(clean || edited) of the next-token distributions over the neutral "
                             "positions (nats per token); null without neutral positions.")
    loss_change: float | None = Field(description="Mean edited - clean loss of the actual next token there (nats "
                                      "per token; > 0 = the edit makes ordinary text less likely).")
    top1_changed: float | None = Field(description="Fraction of neutral positions whose top-1 token changed.")
    mode_share: float | None = Field(description="Share of neutral positions whose edited top-1 is the single "
                                     "most common edited top-1 (1.0 = one token everywhere).")
    n_positions: int = Field(ge=0, description="Neutral positions scored.")
    n_generated: int = Field(ge=0, description="Edited generations checked (0: nothing was generated).")
    generations_collapsed: int | None = Field(description="Edited generations that collapse where the baseline's "
                                              "did not; null when nothing was generated.")
    destructive: bool
    reasons: list[str] = Field(default_factory=list, description="The bars passed (empty = not destructive).")


@dataclass
class NeutralText:
    ids: list[int]
    scored: list[int]           # positions whose predictions are scored


def _unknown_share(lm: LoadedModel, ids: Sequence[int]) -> float:
    unk = getattr(lm.tokenizer, "unk_token_id", None)
    return sum(i == unk for i in ids) / max(1, len(ids)) if unk is not None else 0.0


def neutral_texts(lm: LoadedModel, prompts: Sequence[Sequence[int]]) -> list[NeutralText]:
    """The prompts' prefixes (positions before the last) and the plain sentences the vocabulary covers."""
    out = [NeutralText(list(p), list(range(len(p) - 1))) for p in prompts if len(p) >= 2]
    for s in NEUTRAL_SENTENCES:
        ids = list(lm.tokenizer(s).input_ids)
        if len(ids) >= 2 and _unknown_share(lm, ids) <= MAX_UNKNOWN:
            out.append(NeutralText(ids, list(range(len(ids)))))
    return out


@torch.no_grad()
def _logprobs(lm: LoadedModel, ids: Sequence[int]) -> Tensor:
    x = torch.tensor([list(ids)], device=lm.device)
    return torch.log_softmax(lm.model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0].float(), -1).cpu()


class NeutralSet:
    """Neutral texts with their clean log-probabilities computed once, for checking many edits."""

    def __init__(self, lm: LoadedModel, prompts: Sequence[Sequence[int]]):
        self.lm = lm
        self.texts = neutral_texts(lm, prompts)
        self.clean = [_logprobs(lm, t.ids) for t in self.texts]              # each (pos, vocab)

    def measure(self, edit_for: EditFor) -> dict[str, float | int | None]:
        """KL, loss change, top-1 change and mode share of one edit over every neutral position."""
        causal = self.lm.lm_kind == "causal"
        kls, losses, changed, tops, base_tops = [], [], [], [], []
        for t, clean in zip(self.texts, self.clean, strict=True):
            with edit_for(t.ids):
                edited = _logprobs(self.lm, t.ids)
            pos = torch.tensor(t.scored, dtype=torch.long)
            c, e = clean[pos], edited[pos]                                     # (scored, vocab)
            kls += (c.exp() * (c - e)).sum(-1).clamp_min(0).tolist()
            for j, p in enumerate(t.scored):
                nxt = p + 1 if causal else p
                if nxt < len(t.ids):
                    losses.append(float(c[j, t.ids[nxt]] - e[j, t.ids[nxt]]))
            changed += (c.argmax(-1) != e.argmax(-1)).tolist()
            tops += e.argmax(-1).tolist()
            base_tops += c.argmax(-1).tolist()
        if not kls:
            return {"kl": None, "loss_change": None, "top1_changed": None, "mode_share": None, "n_positions": 0,
                    "base_mode_share": None}
        mode, count = Counter(tops).most_common(1)[0]
        return {"kl": sum(kls) / len(kls), "loss_change": sum(losses) / len(losses) if losses else None,
                "top1_changed": sum(changed) / len(changed), "mode_share": count / len(tops),
                "base_mode_share": sum(b == mode for b in base_tops) / len(base_tops), "n_positions": len(kls)}


def new_collapses(baseline: Sequence[tuple[Sequence[int], str]], edited: Sequence[tuple[Sequence[int], str]],
                  thresholds: CollapseThresholds | None = None) -> int:
    """Edited generations (tokens, text) that collapse where the baseline generation at the same index did not."""
    th = thresholds or CollapseThresholds(min_tokens=1)
    n = 0
    for (bt, btext), (et, etext) in zip(baseline, edited, strict=True):
        if collapse_reasons(text_metrics(list(et), etext), th) and not collapse_reasons(text_metrics(list(bt), btext),
                                                                                        th):
            n += 1
    return n


def judge(neutral: dict[str, float | int | None], n_generated: int = 0,
          generations_collapsed: int | None = None) -> Damage:
    """The :class:`Damage` record of one edit with its bars applied (see :data:`DAMAGE_RULES`)."""
    reasons = []
    kl, loss, share = neutral.get("kl"), neutral.get("loss_change"), neutral.get("mode_share")
    if kl is not None and kl > MAX_KL and (loss is None or loss > 0):
        reasons.append(f"KL on neutral text {kl:.2f} nats/token > {MAX_KL:g}")
    if loss is not None and loss > MAX_LOSS:
        reasons.append(f"neutral-text loss up {loss:.2f} nats/token > {MAX_LOSS:g}")
    base_share = neutral.get("base_mode_share")
    if (share is not None and share >= MAX_MODE_SHARE and int(neutral.get("n_positions") or 0) >= MIN_MODE_POSITIONS
            and (base_share is None or base_share < 0.5)):
        reasons.append(f"one token is the top-1 at {share:.0%} of neutral positions")
    if n_generated and generations_collapsed is not None and generations_collapsed * 2 > n_generated:
        reasons.append(f"{generations_collapsed} of {n_generated} generations collapse where the baseline's do not")
    return Damage(kl=kl, loss_change=loss, top1_changed=neutral.get("top1_changed"), mode_share=share,
                  n_positions=int(neutral.get("n_positions") or 0), n_generated=n_generated,
                  generations_collapsed=generations_collapsed if n_generated else None,
                  destructive=bool(reasons), reasons=reasons)


def describe(d: Damage) -> str:
    """One clause for a summary: 'destructive (KL on neutral text 3.1 nats/token > 1)' or the plain numbers."""
    if d.destructive:
        return "destructive (" + "; ".join(d.reasons) + ")"
    if d.kl is None:
        return "no neutral text to check"
    return (f"not destructive (neutral text: KL {d.kl:.3f} nats/token, loss {d.loss_change or 0.0:+.3f}, top-1 "
            f"changed at {d.top1_changed or 0.0:.0%} of {d.n_positions} positions)")

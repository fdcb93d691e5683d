"""Intervention policies: ``InterventionPolicy.apply(step, h, sae, context) -> h'``.

A policy edits the activation ``h`` (batch, pos, width) at one site during the forward passes of the
generation steps it lists (``steps``; step 0 is the forward over the prompt, step ``s`` the forward
that produces generated token ``s``; ``None`` = every step), at the token ``positions`` it lists
(negative = from the end of the prompt; ``None`` = all). Positions are absolute: on the KV-cache path a
forward feeds only the newest token, at ``context.start``. Every policy is position-wise, so intervene
takes that path whenever the policies' steps allow (:mod:`neurotrace.lab.capture.generation`).

On SAE features (site = the SAE's site), edits keep the SAE's reconstruction error: with
``a = sae.encode(h)`` and the edited ``a'``, ``h' = h + (a'_F - a_F) @ W_dec[F] / input_scale`` for the touched
features ``F`` only. So clamping a feature to the value it already has changes nothing, bit for bit.

* ``ablate_features``: ``a'_f = 0``.
* ``clamp_features``: ``a'_f = value``.
* ``patch_features``: ``a'_f`` = the feature's activation on another input (``source``), at the same
  position (``align='position'``) or at the source's last token (``'last'``).

Component edits (zero, zero_heads, set_neurons, mean, patch, knockout) are capture's: one union,
defined and applied in :mod:`neurotrace.lab.capture.edits`, here at generation steps.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from neurotrace.lab.capture import (
    AttentionKnockout,
    HeadAblation,
    MeanAblation,
    PatchActivations,
    SetNeurons,
    StepInfo,
    ZeroAblation,
    fed_positions,
)
from neurotrace.lab.errors import InputError
from neurotrace.lab.sae import Dictionary

GenSteps = Annotated[list[Annotated[int, Field(ge=0)]] | None,
                     Field(description="Generation steps where the policy acts (0 = the forward over the prompt, "
                                       "s = the forward producing new token s); null = every step.")]
Positions = Annotated[list[int] | None, Field(description="Token positions; negative counts from the end of the "
                                                          "prompt (-1 = last prompt token); null = all (feature "
                                                          "edits: all the dictionary was fitted on, not position 0, "
                                                          "special tokens or attention sinks).")]
Features = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, description="SAE feature indices.")]


@dataclass
class PolicyContext:
    """What a policy may read besides ``h``: the prompt length and clean source activations."""

    prompt_len: int
    sources: dict[tuple[str, str], Tensor] = field(default_factory=dict)   # (site, text) -> (pos, width)
    n_heads: int = 1
    text_acts: Callable[[str, str], Tensor] | None = None                  # (site, text) -> clean (pos, width)
    start: int = 0                                 # absolute position of the forward's first fed token
    unfitted: frozenset[int] = frozenset()         # prompt positions the dictionary was not trained on

    def source(self, site: str, text: str) -> Tensor:
        if (site, text) not in self.sources and self.text_acts is not None:
            self.sources[(site, text)] = self.text_acts(site, text)
        return self.sources[(site, text)]


class InterventionPolicy(BaseModel):
    """Base: step/position filters and the ``apply`` contract."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    steps: GenSteps = None
    positions: Positions = None

    def active(self, step: int) -> bool:
        return self.steps is None or step in self.steps

    def site(self, sae: Dictionary | None) -> str:
        if sae is None:
            raise InputError("fit_sae_run_id", f"policy {self.kind!r} edits SAE features but no SAE was given",
                             fix="pass fit_sae_run_id (a fit_sae run id) or dictionary")
        return sae.cfg.site

    def sources(self, sae: Dictionary | None) -> list[tuple[str, str]]:
        """(site, text) pairs whose clean activations this policy reads (computed by the caller)."""
        return []

    def apply(self, step: int, h: Tensor, sae: Dictionary | None, context: PolicyContext) -> Tensor:
        raise NotImplementedError

    def _pos(self, h: Tensor, context: PolicyContext) -> list[int]:
        """Indices into ``h`` of the chosen positions (absolute position = index + ``context.start``)."""
        return fed_positions(self.positions, StepInfo(0, context.prompt_len, start=context.start), h.shape[1])


class _FeaturePolicy(InterventionPolicy):
    features: Features

    def new_values(self, a: Tensor, pos: list[int], context: PolicyContext, sae: Dictionary) -> Tensor:
        """The features' new activations at absolute positions ``pos`` (``a``: their old ones)."""
        raise NotImplementedError

    def apply(self, step: int, h: Tensor, sae: Dictionary | None, context: PolicyContext) -> Tensor:
        pos = self._pos(h, context)
        if self.positions is None:     # every position: those the dictionary reads (not position 0, a special
            pos = [p for p in pos if p + context.start not in context.unfitted]   # token or an attention sink)
        if not pos:
            return h
        f = torch.tensor(self.features, dtype=torch.long, device=h.device)
        hs = h[:, pos]                                                  # (batch, n_pos, d_in)
        old = sae.encode(h)[:, pos][..., f]                             # (batch, n_pos, n_feat); encoding all
        # positions, as sae.encode(h) does for a caller, keeps the values bit-identical to what they read
        new = self.new_values(old, [p + context.start for p in pos], context, sae)
        out = h.clone()
        out[:, pos] = hs + ((new - old) @ sae.directions(f)).to(h.dtype)
        return out


class AblateFeatures(_FeaturePolicy):
    kind: Literal["ablate_features"] = "ablate_features"

    def new_values(self, a: Tensor, pos: list[int], context: PolicyContext, sae: Dictionary) -> Tensor:
        return torch.zeros_like(a)


class ClampFeatures(_FeaturePolicy):
    kind: Literal["clamp_features"] = "clamp_features"
    value: float = Field(description="Activation the features are held at.")

    def new_values(self, a: Tensor, pos: list[int], context: PolicyContext, sae: Dictionary) -> Tensor:
        return torch.full_like(a, self.value)


class PatchFeatures(_FeaturePolicy):
    kind: Literal["patch_features"] = "patch_features"
    source: str = Field(min_length=1, description="Another input; its feature activations are patched in.")
    align: Literal["position", "last"] = Field("position", description="'position': same position of the "
                                               "source (positions past its end are left alone); 'last': the "
                                               "source's last token at every chosen position.")

    def sources(self, sae: Dictionary | None) -> list[tuple[str, str]]:
        return [(self.site(sae), self.source)]

    def new_values(self, a: Tensor, pos: list[int], context: PolicyContext, sae: Dictionary) -> Tensor:
        src = sae.encode(context.source(sae.cfg.site, self.source).to(a.device))[:, self.features]
        new = a.clone()                                                 # (batch, n_pos, n_feat)
        for j, p in enumerate(pos):
            if self.align == "last":
                new[:, j] = src[-1]
            elif p < src.shape[0]:
                new[:, j] = src[p]
        return new


Policy = Annotated[AblateFeatures | ClampFeatures | PatchFeatures | ZeroAblation | HeadAblation | SetNeurons
                   | MeanAblation | PatchActivations | AttentionKnockout, Field(discriminator="kind")]
FEATURE_POLICIES = (AblateFeatures, ClampFeatures, PatchFeatures)


def features_everywhere(policies: list[Any]) -> bool:
    """Whether a feature edit acts without ``positions``: then it leaves out the rows the dictionary was not
    trained on (:attr:`PolicyContext.unfitted`)."""
    return any(isinstance(p, FEATURE_POLICIES) and p.positions is None for p in policies)


def check_policies(policies: list[Any], sae: Dictionary | None) -> None:
    """InputError('policies') for SAE feature indices out of range (component edits: capture's validate)."""
    for i, p in enumerate(policies):
        if isinstance(p, _FeaturePolicy):
            p.site(sae)
            if max(p.features) >= sae.cfg.d_sae:
                raise InputError("policies", f"policy {i}: feature {max(p.features)} >= d_sae {sae.cfg.d_sae}",
                                 fix=f"use features in 0..{sae.cfg.d_sae - 1}")

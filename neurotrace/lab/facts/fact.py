"""The fact record every tool shares, in both framings people use.

* ROME framing: a prompt ending right before the answer, a subject span inside it, and a target.
* Masked-LM framing: a ``template`` with exactly one ``{}`` for the subject, ``clean_subject`` /
  ``corrupt_subject`` (subject-swap corruption), a ``target`` that follows the template, a context
  word ``context_from`` in the template and its corruption ``context_to``, and prompt ``variants``
  (prefix/suffix pairs wrapped around the prompt).

The prompt is ``prefix + template.format(subject)``; a causal LM predicts the target as the next token;
a masked LM sees ``prompt + " " + mask_token + suffix`` and predicts the target at the mask.
"""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from neurotrace.lab.errors import InputError


class PromptVariant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    prefix: str = Field("", description="Text placed before the filled template.")
    suffix: str = Field("", description="Text placed after the answer slot (masked LMs) - e.g. '.'.")


class Fact(BaseModel):
    """One fact: ``template.format(clean_subject)`` is followed by ``target``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field("", description="Stable identifier, unique within a dataset.")
    relation: str = Field("", description="Relation name, e.g. 'capital_of' or a ROME relation id 'P36'.")
    template: Annotated[str, Field(description="Prompt text with exactly one '{}' where the subject goes; "
                                                "the target follows the template.")]
    clean_subject: Annotated[str, Field(min_length=1, description="The subject the fact is about.")]
    corrupt_subject: Annotated[str | None, Field(description="A plausible subject of the same category "
                                                        "for subject-swap corruption; must differ.")] = None
    target: Annotated[str, Field(min_length=1, description="The answer, without a leading space.")]
    context_from: Annotated[str | None, Field(description="A context word that occurs in the template.")] = None
    context_to: Annotated[str | None, Field(description="The word that replaces context_from "
                                                       "for context corruption.")] = None
    variants: list[PromptVariant] = Field(default_factory=list, description="Extra prefix/suffix pairs.")
    held_out: bool = Field(False, description="True if the fact was kept out of a model's training data.")
    known: dict[str, bool] = Field(default_factory=dict, description="Per model: its clean greedy top-1 is the "
                                   "target (as measured by `neurotrace packs measure`); informative only.")

    @model_validator(mode="after")
    def _check(self) -> "Fact":
        if self.template.count("{}") != 1:
            raise InputError("template", f"template {self.template!r} must contain exactly one '{{}}'",
                             fix="write the subject slot as a single '{}'")
        if self.corrupt_subject is not None and self.corrupt_subject.strip() == self.clean_subject.strip():
            raise InputError("corrupt_subject", f"corrupt subject equals the clean subject {self.clean_subject!r}",
                             fix="choose another subject of the same category")
        if self.context_from is not None and self.context_from not in self.template:
            raise InputError("context_from", f"context word {self.context_from!r} does not occur in the template",
                             fix="pick a word that appears in the template, or omit context_from")
        if (self.context_from is None) != (self.context_to is None):
            raise InputError("context_to", "context_from and context_to must be given together",
                             fix="give both or neither")
        return self

    def prompt(self, subject: str | None = None, variant: PromptVariant | None = None) -> str:
        """The causal-LM prompt: ``prefix + template.format(subject)``."""
        text = self.template.format(self.clean_subject if subject is None else subject)
        return (variant.prefix if variant else "") + text

    def subject_span(self, subject: str | None = None, variant: PromptVariant | None = None) -> tuple[int, int]:
        """Character span [start, end) of the subject inside :meth:`prompt`."""
        subj = self.clean_subject if subject is None else subject
        start = len(variant.prefix if variant else "") + self.template.index("{}")
        return start, start + len(subj)

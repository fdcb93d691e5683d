"""Chat inputs: one rule for every prompt-taking tool.

A prompt is either plain text or a conversation (a list of ``{"role", "content"}`` messages). With
``chat=True`` a plain prompt becomes one user message; a conversation is always templated. The model's
own chat template renders it (``add_generation_prompt=True`` when the conversation does not end with
the assistant, so the model answers next; a conversation ending with an assistant message is continued
inside that message). The result is *text*: tools tokenize it as they tokenize any prompt, so token
positions and scored tokens are positions in the templated text. When the tokenizer adds BOS itself
and the template writes it too, the template's copy is dropped (one BOS, as the model was trained).

A model whose tokenizer has no template gets :class:`~neurotrace.lab.errors.InputError` naming the
field, e.g. ``chat: gemma-3-270m has no chat template``.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from neurotrace.lab.errors import InputError

MAX_MESSAGES = 64


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=20_000)


Conversation = Annotated[list[Message], Field(min_length=1, max_length=MAX_MESSAGES)]
#: A prompt field that also takes a conversation.
PromptInput = str | Conversation
CHAT_FIELD_HELP = ("Apply the chat template. The model's own: each plain prompt becomes one user message (a list "
                   "of messages is always templated); positions and tokens are those of the templated text.")


def has_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def templated(tokenizer: Any, prompt: "str | list[Message] | list[dict]", *, chat: bool, model: str,
              field: str = "chat") -> str:
    """The text a tool tokenizes for ``prompt``: itself, or the chat-templated conversation."""
    if isinstance(prompt, str) and not chat:
        return prompt
    if not has_template(tokenizer):
        raise InputError(field, f"{model} has no chat template",
                         fix="pass plain-text prompts with chat=false, or use an instruct model that has a template")
    messages = ([{"role": "user", "content": prompt}] if isinstance(prompt, str)
                else [m.model_dump() if isinstance(m, BaseModel) else dict(m) for m in prompt])
    ends_with_answer = messages[-1]["role"] == "assistant"
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=not ends_with_answer,
                                             continue_final_message=ends_with_answer)
    except Exception as exc:  # the template's own error (jinja): report it as the input's fault
        raise InputError(field, f"{model}'s chat template refused the conversation: {str(exc)[:200]}",
                         fix="check the roles (system first, then alternating user/assistant)") from exc
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos) and _adds_bos(tokenizer):
        text = text[len(bos):]
    return text


def _adds_bos(tokenizer: Any) -> bool:
    bos_id = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer("a")["input_ids"]
    return bos_id is not None and len(ids) > 0 and ids[0] == bos_id


def templated_at(tokenizer: Any, prompt: str, *, model: str, field: str = "chat") -> tuple[str, int]:
    """``prompt`` as one templated user message, and where its first character sits in that text: character
    offsets inside the prompt (a subject's span, a context word) move by that much."""
    text = templated(tokenizer, prompt, chat=True, model=model, field=field)
    at = text.rfind(prompt)      # the last copy: a system prompt written before it may repeat its words
    if at < 0:
        raise InputError(field, f"{model}'s chat template rewrites the message text, so positions inside it "
                         "cannot be found", fix="strip leading and trailing spaces from the prompt")
    return text, at


def prompt_label(prompt: "str | list[Message]") -> str:
    """A short readable label of a prompt or conversation (its last message)."""
    if isinstance(prompt, str):
        return prompt
    last = prompt[-1]
    return f"[{last.role}] {last.content}"


def apply_chat(request: Any, tokenizer: Any, model: str, single: tuple[str, ...] = (),
               many: tuple[str, ...] = (), inner: str = "prompt") -> Any:
    """``request`` with its prompt fields as the text tools tokenize: ``single`` fields hold one prompt (text or
    a conversation), ``many`` fields a list of them; a list item that is a record (a prompt with its target)
    has its prompt in the field ``inner``. With ``chat`` set, or any conversation, each is templated
    (:func:`templated`) and the copy has ``chat`` off, so what the run records is the templated text."""
    chat = bool(getattr(request, "chat", False))

    def text(value: Any) -> Any:
        if isinstance(value, BaseModel):          # a record holding the prompt (intervene's {prompt, target})
            prompt = getattr(value, inner)
            return value.model_copy(update={inner: text(prompt)}) if chat or not isinstance(prompt, str) else value
        return templated(tokenizer, value, chat=chat, model=model) if chat or not isinstance(value, str) else value

    update: dict[str, Any] = {}
    for name in single:
        value = getattr(request, name)
        if value is not None and (chat or not isinstance(value, str)):
            update[name] = text(value)
    for name in many:
        values = list(getattr(request, name) or [])
        new = [text(v) for v in values]
        if any(a is not b for a, b in zip(new, values, strict=True)):
            update[name] = new
    return request.model_copy(update={**update, "chat": False}) if update or chat else request

"""The records that stages exchange as JSONL files.

Shapes (one JSON object per line):

- ``PromptRecord``     {"id", "prompt"}                      prompt = text or a list of messages
- ``DemoRecord``       {"prompt", "response"} or {"messages"}   SFT demonstrations
- ``CompletionRecord`` {"prompt_id", "prompt", "response", "model", "index", "finished", "sampling"}
- ``PairRecord``       {"prompt", "chosen", "rejected", "p", "weight", "margin", "source"}
- ``UnpairedRecord``   {"prompt", "completion", "label", "weight", "source"}   one response judged alone (KTO)

``PairRecord.p`` is the probability that ``chosen`` is preferred (docs/architecture.md): 1.0 for a hard human
label, the judge's normalized probability for AI feedback, 0.5 for a tie.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Role = Literal["system", "user", "assistant"]


class _Record(BaseModel):
    # Unknown keys are kept (metadata travels through stages) but known keys are validated.
    model_config = ConfigDict(extra="allow")


class Message(BaseModel):
    """One chat turn, as in TRL's conversational format and OpenAI's chat API."""

    model_config = ConfigDict(extra="forbid")
    role: Role
    content: str


Prompt = Union[str, list[Message]]


def prompt_text(prompt: Prompt) -> str:
    """A plain-text rendering of a prompt, for display, hashing and text-only scorers."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"{m.role.capitalize()}: {m.content}" for m in prompt)


def as_messages(prompt: Prompt) -> list[dict[str, str]]:
    """A prompt as chat messages (a plain string becomes one user turn)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [m.model_dump() for m in prompt]


def parse_prompt(value: Any, where: str) -> Prompt:
    """A prompt read back as plain JSON (text, or a list of {role, content} mappings, as the feedback store
    keeps it) as a ``Prompt`` the record helpers take; a bad one is a ``DataError`` naming ``where``."""
    from pydantic import TypeAdapter, ValidationError

    from rlhaif.errors import DataError

    try:
        return _check_prompt(TypeAdapter(Prompt).validate_python(value))
    except (ValidationError, ValueError) as e:
        raise DataError(where, None, "prompt", str(e).splitlines()[0]) from None


def _non_empty(v: str, name: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"{name} must be a non-empty string")
    return v


def _check_prompt(v: Prompt) -> Prompt:
    if isinstance(v, str):
        return _non_empty(v, "prompt")
    if not v:
        raise ValueError("prompt must be a non-empty string or a non-empty list of messages")
    if v[-1].role == "assistant":
        raise ValueError("a prompt's last message must not be from the assistant")
    return v


class PromptRecord(_Record):
    """A prompt to generate from. ``id`` defaults to the line number when absent."""

    id: str | None = None
    prompt: Prompt

    _v = field_validator("prompt")(classmethod(lambda cls, v: _check_prompt(v)))


class DemoRecord(_Record):
    """An SFT demonstration: ``prompt`` + ``response``, or ``messages`` ending with the assistant."""

    prompt: Prompt | None = None
    response: str | None = None
    messages: list[Message] | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: Prompt | None) -> Prompt | None:
        return v if v is None else _check_prompt(v)

    @field_validator("response")
    @classmethod
    def _response(cls, v: str | None) -> str | None:
        return v if v is None else _non_empty(v, "response")

    @field_validator("messages")
    @classmethod
    def _messages(cls, v: list[Message] | None) -> list[Message] | None:
        if v is None:
            return v
        if len(v) < 2 or v[-1].role != "assistant":
            raise ValueError("messages must end with an assistant turn (the response to learn)")
        if not v[-1].content.strip():
            raise ValueError("the last assistant message must not be empty")
        return v

    @model_validator(mode="after")
    def _one_form(self) -> "DemoRecord":
        if self.messages is None and (self.prompt is None or self.response is None):
            missing = "prompt" if self.prompt is None else "response"
            raise ValueError(f"'{missing}' is missing: give either 'prompt' and 'response', or 'messages'")
        return self

    def split(self) -> tuple[Prompt, str]:
        """(prompt, response): the conversation before the last assistant turn, and that turn."""
        if self.messages is not None:
            return list(self.messages[:-1]), self.messages[-1].content
        assert self.prompt is not None and self.response is not None
        return self.prompt, self.response


class CompletionRecord(_Record):
    """One sampled response. ``finished`` is False when generation hit the length cap before EOS."""

    prompt_id: str
    prompt: Prompt
    response: str
    model: str = ""
    index: int = 0
    finished: bool = True
    sampling: dict[str, Any] = Field(default_factory=dict)


class PairRecord(_Record):
    """A preference: ``chosen`` preferred to ``rejected`` with probability ``p``.

    ``weight`` scales the pair's loss (1/C(K,2) for pairs from one ranking, InstructGPT);
    ``margin`` is the Llama-2 preference-strength margin m in -log σ(r_c - r_r - m);
    ``source`` says where the label came from: "human:<annotator>", "ai:<model>:<principle>", "hh-rlhf".
    """

    prompt: Prompt
    chosen: str
    rejected: str
    p: float = 1.0
    weight: float = 1.0
    margin: float = 0.0
    source: str = ""
    id: str | None = None

    _vp = field_validator("prompt")(classmethod(lambda cls, v: _check_prompt(v)))

    @field_validator("chosen", "rejected")
    @classmethod
    def _responses(cls, v: str, info) -> str:
        return _non_empty(v, info.field_name)

    @field_validator("p")
    @classmethod
    def _prob(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"p must lie in [0, 1] (the probability that chosen is preferred), got {v}")
        return v

    @field_validator("weight")
    @classmethod
    def _weight(cls, v: float) -> float:
        if v < 0:
            raise ValueError(f"weight must be >= 0, got {v}")
        return v


class UnpairedRecord(_Record):
    """One response judged on its own (a thumb, a rating over a threshold): ``label`` True = desirable.

    The data of KTO (Ethayarajh et al. 2024) and of TRL's unpaired preference format; ``weight`` scales the
    example's loss, ``source`` says where the label came from, as in ``PairRecord``."""

    prompt: Prompt
    completion: str
    label: bool
    weight: float = 1.0
    source: str = ""
    id: str | None = None

    _vp = field_validator("prompt")(classmethod(lambda cls, v: _check_prompt(v)))

    @field_validator("completion")
    @classmethod
    def _completion(cls, v: str) -> str:
        return _non_empty(v, "completion")

    @field_validator("label", mode="before")
    @classmethod
    def _label(cls, v: Any) -> Any:
        if not isinstance(v, bool):  # 1 / "yes" / "true" would pass pydantic's lax bool: say what is expected
            raise ValueError(f"label must be true (desirable) or false (undesirable), got {v!r}")
        return v

    _vw = field_validator("weight")(classmethod(lambda cls, v: PairRecord._weight(v)))

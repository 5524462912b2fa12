"""The vocabulary every part shares: chat messages, sampling parameters and generations."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Literal, TypedDict


class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


Conversation = list[Message]


def message(role: Literal["system", "user", "assistant"], content: str) -> Message:
    return {"role": role, "content": content}


@dataclass(frozen=True)
class SamplingParams:
    """How to sample replies.

    Attributes:
        max_new_tokens: Upper bound on generated tokens per reply; a reply that hits it ends with
            `finish_reason="length"`.
        temperature: Sampling temperature; 0 means greedy decoding.
        top_p: Nucleus sampling mass.
        n: Replies per prompt. Sample `i` of a prompt is a separate cache entry, so asking for more samples later
            reuses the first ones.
        seed: Base seed. Together with the sample index it identifies a sample in the request cache.
        json_mode: Ask the backend for a JSON object where it supports structured output.
    """

    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    n: int = 1
    seed: int = 0
    json_mode: bool = False

    def with_(self, **changes: object) -> SamplingParams:
        return replace(self, **changes)  # type: ignore[arg-type]

    def cache_fields(self) -> dict[str, object]:
        """The fields that change what a single sample looks like (n does not: it only counts samples)."""
        fields = asdict(self)
        fields.pop("n")
        return fields


FinishReason = Literal["stop", "length", "error"]


@dataclass
class Generation:
    """One reply. A failed call is a Generation with `finish_reason="error"` and the reason in `error`; callers
    must handle it explicitly (it is never turned into an empty success)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: FinishReason = "stop"
    cached: bool = False
    error: str | None = None
    cost_usd: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.finish_reason != "error"

    @staticmethod
    def failure(error: str) -> Generation:
        return Generation(text="", finish_reason="error", error=error)

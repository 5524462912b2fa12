"""Token efficiency: the multiturn-aware reward penalises long conversations.

The CollabLLM paper counts the tokens of the forward window (the candidate plus the simulated future turns, both
roles) and caps the penalty at 1: R_tok = -min(lambda * tokens, 1). Their later code counted only assistant
tokens over the whole conversation and left the penalty uncapped. The paper form is the default; the variant is a
choice of `assistant_tokens` plus `cap=False`.

`count_tokens` is the policy backend's `Backend.count_tokens`, so the count matches what the policy pays for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from collab.chat import Message

CountTokens = Callable[[str], int]


def token_penalty(token_count: int | float, lam: float, *, cap: bool = True) -> float:
    """-min(lam * tokens, 1) (or -lam * tokens with cap=False). Always <= 0."""
    if lam < 0:
        raise ValueError(f"lambda must be >= 0, got {lam}")
    if token_count < 0:
        raise ValueError(f"token count must be >= 0, got {token_count}")
    penalty = lam * token_count
    return -min(penalty, 1.0) if cap else -penalty


def window_tokens(messages: Sequence[Message], count_tokens: CountTokens, start: int = 0) -> int:
    """Tokens of the forward window: every user and assistant message from `start` on (pass the candidate's
    index to score a whole conversation, or pass the window alone). System prompts are not part of the window."""
    return sum(count_tokens(m["content"]) for m in messages[start:] if m["role"] in ("user", "assistant"))


def assistant_tokens(messages: Sequence[Message], count_tokens: CountTokens) -> int:
    """Tokens of every assistant message of the whole conversation (the later-code variant)."""
    return sum(count_tokens(m["content"]) for m in messages if m["role"] == "assistant")

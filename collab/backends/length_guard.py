"""Fit a conversation into an engine's context window by dropping its oldest turns.

Why here and not in vLLM: vLLM rejects a prompt longer than `max_model_len` with an exception that fails the whole
`LLM.chat` call, so one long conversation would sink a batch of hundreds. The guard measures each prompt with the
engine's own tokenizer and chat template first. A prompt that is too long keeps its leading system messages and its
latest turns (what the next reply depends on most) and loses the oldest turns after the system prompt; if even the
system prompt and the last message do not fit, the request is skipped and fails alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from collab.chat import Conversation


@dataclass(frozen=True)
class Fitted:
    """The outcome for one conversation: `messages` to send (None: skipped), turns dropped, and its token count."""

    messages: Conversation | None
    dropped: int
    prompt_tokens: int


def prompt_tokens(tokenizer: Any, messages: Conversation) -> int:
    """Tokens of `messages` as the engine sees them: chat template applied, generation prompt or prefill included."""
    prefill = bool(messages) and messages[-1]["role"] == "assistant"
    ids = tokenizer.apply_chat_template(
        list(messages), tokenize=True, add_generation_prompt=not prefill, continue_final_message=prefill
    )
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # newer transformers may return a BatchEncoding
        ids = ids["input_ids"]
    return len(ids)


def fit_conversation(tokenizer: Any, messages: Conversation, max_prompt_tokens: int) -> Fitted:
    """Drop the oldest non-system messages until the prompt has at most `max_prompt_tokens` tokens.

    The kept part starts with a user message where one exists (chat templates and models expect a user turn after
    the system prompt), so messages go in whole turns, not singly.
    """
    total = prompt_tokens(tokenizer, messages)
    if total <= max_prompt_tokens:
        return Fitted(list(messages), 0, total)
    n_system = 0
    while n_system < len(messages) and messages[n_system]["role"] == "system":
        n_system += 1
    system, rest = list(messages[:n_system]), list(messages[n_system:])
    for start in range(1, len(rest)):
        if rest[start]["role"] != "user" and start < len(rest) - 1:
            continue  # keep cutting until the kept part opens with a user turn (or only the last message is left)
        kept = system + rest[start:]
        total = prompt_tokens(tokenizer, kept)
        if total <= max_prompt_tokens:
            return Fitted(kept, start, total)
    return Fitted(None, len(rest), total)


__all__ = ["Fitted", "fit_conversation", "prompt_tokens"]

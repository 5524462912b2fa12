"""Prompts of the LLM user simulator (CollabLLM semantics, our wording).

The simulated user knows the task type, the hidden goal (the complete single-turn request) and the transcript. It
is told to behave like a real user who minimises effort: vague at first, revealing details gradually and only when
useful, sometimes imprecise, with personal preferences, never pasting the hidden goal. It writes a JSON object
{"current_answer", "thought", "response"}; only "response" reaches the assistant. The thought gives the model room
to reason about the conversation without leaking that reasoning into the user turn.
"""

from __future__ import annotations

from collab.chat import Conversation, message
from collab.tasks.record import Task

TERMINATE = "[[TERMINATE CHAT]]"

KIND_DESCRIPTIONS: dict[str, str] = {
    "math": "solving a math problem; you want the correct final answer",
    "code": "writing a piece of code; you want a working function that does what you need",
    "qa": "answering a question; you want a correct, direct answer",
    "doc": "writing or editing a document; you want a document that matches what you have in mind",
}

SYSTEM_PROMPT = (
    "You are role-playing a USER who is chatting with an AI assistant to get a task done. You are not the "
    "assistant: you never solve the task yourself, you never write the solution, code or document, and you never "
    "talk like an assistant (no 'Sure, here is', no 'As an AI')."
)

_GUIDELINES = f"""How to behave:
- Minimise your effort. Write short, casual messages, like a busy person typing in a chat box.
- Start vague. Reveal details of your goal gradually, only when the assistant asks for them or when they are
  clearly needed to fix the assistant's answer. Give at most one or two details per message.
- Never copy your goal verbatim or paste it in full; put things in your own words.
- You may have personal preferences (style, format, level of detail) and you may be a little imprecise now and
  then, as real users are.
- Do not answer questions about things your goal does not say; say you are not sure or that it does not matter.
- Do not solve the task yourself and do not write code, formulas or drafts for the assistant.
- When the assistant has given you what you need, or the conversation is going nowhere, end the chat by writing
  {TERMINATE} in your response (you may thank the assistant before it).

Reply with one JSON object and nothing else:
{{"current_answer": "<the assistant's current answer or solution, in brief, or an empty string>",
  "thought": "<your private reasoning about what to say next>",
  "response": "<your next message to the assistant, written as the user>"}}"""


def render_transcript(transcript: Conversation) -> str:
    """The chat so far as plain text; the simulator reads it rather than playing it back as its own turns, which
    would make the model answer as the assistant."""
    if not transcript:
        return "(no messages yet)"
    labels = {"user": "USER (you)", "assistant": "ASSISTANT"}
    return "\n\n".join(
        f"{labels.get(m['role'], m['role'].upper())}: {m['content']}" for m in transcript if m["role"] != "system"
    )


def _task_header(task: Task) -> str:
    kind = KIND_DESCRIPTIONS.get(task.kind, task.kind)
    return (
        f"Task type: {kind}.\n\n"
        f"Your hidden goal (the assistant cannot see it; never paste it):\n<<<\n{task.goal}\n>>>"
    )


def respond_prompt(task: Task, transcript: Conversation) -> Conversation:
    """Messages asking for the next user turn of `transcript`."""
    body = (
        f"{_task_header(task)}\n\nThe conversation so far:\n<<<\n{render_transcript(transcript)}\n>>>\n\n"
        f"{_GUIDELINES}\n\nWrite the USER's next message."
    )
    return [message("system", SYSTEM_PROMPT), message("user", body)]


def opening_prompt(task: Task) -> Conversation:
    """Messages asking for a vague first user message (used when the task has no scripted opening)."""
    body = (
        f"{_task_header(task)}\n\nThe conversation has not started. Write your first message to the assistant: "
        "a short, vague request that states what you roughly want and leaves details out, as a real user "
        f"would.\n\n{_GUIDELINES}\n\nWrite the USER's first message."
    )
    return [message("system", SYSTEM_PROMPT), message("user", body)]


def reask_note(reason: str) -> str:
    """What the simulated user is told when its reply was rejected."""
    return (
        f"That reply was rejected ({reason}). Remember: you are the USER, not the assistant. Reply with only the "
        'JSON object with the keys "current_answer", "thought" and "response", all strings.'
    )

"""The task record: one thing a simulated user wants done, with the hidden goal and how to score the outcome."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

TaskKind = Literal["math", "code", "qa", "doc", "message"]


class Task(BaseModel):
    """A task, as stored one per line in a JSONL file (see docs/tasks.md).

    Attributes:
        id: Unique within its task set.
        kind: Which task metric scores it: math (accuracy), code (pass rate), qa (F1), doc (BLEU), message (every
            required detail present).
        goal: The complete single-turn request. Hidden from the assistant; the simulated user knows it.
        opening: The user's first message. When absent, the user simulator writes one.
        facts: Ordered pieces of information the user holds back and may reveal when asked. Empty when the opening
            already says everything needed.
        answer: Reference answer (math, qa), reference solution (code) or reference document (doc).
        tests: Unit-test code for code tasks (defines `check(candidate)`, as in HumanEval).
        entry_point: Name of the function the tests call, for code tasks.
        required: Details a message task's reply must contain, one entry per detail, each listing its accepted
            spellings (["3 pm", "3pm", "15:00"]); a plain string is one detail with one spelling.
        needs_clarification: True when the opening lacks something needed, so a good assistant asks first.
        metadata: Free-form extra information (template, difficulty, source dataset, ...).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    kind: TaskKind
    goal: str = Field(min_length=1)
    opening: str | None = None
    facts: tuple[str, ...] = ()
    answer: str = ""
    tests: str | None = None
    entry_point: str | None = None
    required: tuple[tuple[str, ...], ...] = ()
    needs_clarification: bool = False
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("facts", mode="before")
    @classmethod
    def _facts_are_strings(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError("facts must be a list of strings, not one string")
        return value

    @field_validator("required", mode="before")
    @classmethod
    def _required_spellings(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError("required must be a list of details, not one string")
        if isinstance(value, (list, tuple)):
            value = [(item,) if isinstance(item, str) else item for item in value]
            if any(not item or any(not str(s).strip() for s in item) for item in value):
                raise ValueError("every required detail needs at least one non-empty spelling")
        return value

    @field_validator("tests")
    @classmethod
    def _tests_non_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("tests is empty; omit it or give test code")
        return value

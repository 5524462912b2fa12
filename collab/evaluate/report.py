"""Write an evaluation's results: results.json, report.md, report.html (self-contained) and, optionally, W&B.

Why three forms: results.json is what programs read (the schema is fixed, see docs/evaluation.md); report.md reads
well in a terminal, a pull request or a notebook; report.html carries the plots inline (base64 PNGs) so it can be
mailed or archived as one file. Every number is shown with its 95% CI and the number of tasks behind it, and the
failures that were left out are listed beside them.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collab.evaluate.aggregate import RATE_METRICS
from collab.io import atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from collab.config import TrackingConfig

RESULTS_FILE = "results.json"
MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"


def _number(x: float | None, metric: str) -> str:
    if x is None:
        return "n/a"
    return f"{x:.1f}" if metric in ("turns", "tokens") or metric.startswith("tokens") else f"{x:.3f}"


def format_estimate(est: dict[str, Any], metric: str) -> str:
    """'0.250 [0.100, 0.400] (n=20)'; 'n/a (n=0)' without data; no interval when there is none (n=1)."""
    if est["mean"] is None:
        return f"n/a (n={est['n']})"
    ci = ""
    if est["ci_low"] is not None:
        ci = f" [{_number(est['ci_low'], metric)}, {_number(est['ci_high'], metric)}]"
    return f"{_number(est['mean'], metric)}{ci} (n={est['n']})"


def format_difference(diff: dict[str, Any], metric: str) -> str:
    if diff["diff"] is None:
        return "n/a"
    sign = "+" if diff["diff"] >= 0 else ""
    ci = ""
    if diff["ci_low"] is not None:
        ci = f" [{_number(diff['ci_low'], metric)}, {_number(diff['ci_high'], metric)}]"
        excludes_zero = diff["ci_low"] > 0 or diff["ci_high"] < 0
        ci += " *" if excludes_zero else ""
    return f"{sign}{_number(diff['diff'], metric)}{ci}"


def _tables(results: dict[str, Any]) -> dict[str, tuple[list[str], list[list[str]]]]:
    """The report's tables as (header, rows) of plain strings, shared by the markdown and HTML writers."""
    models = list(results["models"])
    metrics = list(next(iter(results["models"].values()))) if models else []
    descriptions = results.get("meta", {}).get("metrics", {})
    tables: dict[str, tuple[list[str], list[list[str]]]] = {}
    tables["Metrics (mean [95% CI] (n tasks))"] = (
        ["metric", *models, "definition"],
        [[m, *(format_estimate(results["models"][model][m], m) for model in models), descriptions.get(m, "")]
         for m in metrics],
    )
    if results["comparisons"]:
        pairs = list(results["comparisons"])
        tables["Paired differences (first minus second, by task; * = CI excludes 0)"] = (
            ["metric", *pairs],
            [[m, *(format_difference(results["comparisons"][p][m], m) for p in pairs)] for m in metrics],
        )
    failures = results.get("meta", {}).get("failures", {})
    if failures:
        rows = []
        for model, f in failures.items():
            reasons = ", ".join(f"{k}: {v}" for k, v in f["reasons"].items()) or "-"
            metric_failures = ", ".join(f"{k}: {v}" for k, v in f["metric_failures"].items()) or "-"
            rows.append([model, f"{f['conversations_failed']} of {f['conversations_total']}", reasons, metric_failures])
        tables["Failures (excluded from the means above)"] = (
            ["model", "failed conversations", "reasons", "failed metrics (conversations)"],
            rows,
        )
    return tables


def _settings_lines(results: dict[str, Any]) -> list[str]:
    meta = results.get("meta", {})
    settings = meta.get("settings", {})
    tasks = meta.get("tasks", {})
    parts = []
    if settings:
        parts.append(
            f"tasks `{settings['tasks']}` (split {settings['split']}, limit {settings['limit']}), mode "
            f"**{settings['mode']}**, runs {settings['runs']}, max turns {settings['max_turns']}, "
            f"temperature {settings['temperature']}, max new tokens {settings['max_new_tokens']}, "
            f"seed {settings['seed']}"
        )
        parts.append(f"simulator: `{settings['simulator']}`")
    if tasks:
        parts.append(
            f"{tasks['count']} tasks: {tasks['needs_clarification']} need clarification, {tasks['complete']} complete"
        )
    parts.append(f"95% percentile-bootstrap CIs over tasks ({meta.get('resamples', '?')} resamples)")
    return parts


def _asked_and_solved(row: dict[str, Any]) -> bool:
    scores = row.get("scores") or {}
    return bool(scores.get("elicited")) and scores.get("task_score") == 1.0


def _failed_task(row: dict[str, Any]) -> bool:
    return bool(row.get("failed")) or (row.get("scores") or {}).get("task_score") == 0.0


def example_conversations(rows: Sequence[dict[str, Any]], *, max_chars: int = 400) -> list[tuple[str, list[str]]]:
    """Per model, in task order: the first conversation whose questions obtained a withheld fact and that ended
    with a right answer, and the first that failed (the first conversation when there is neither), each turn cut
    to `max_chars`: numbers are easier to trust next to what produced them, the good and the bad."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: (str(r["task_id"]), int(r["run"]))):
        by_model.setdefault(row["model"], []).append(row)
    chosen = []
    for model_rows in by_model.values():
        picks = [next((r for r in model_rows if wanted(r)), None) for wanted in (_asked_and_solved, _failed_task)]
        chosen.extend([r for r in picks if r is not None] or model_rows[:1])
    examples = []
    for row in chosen:
        scores = row.get("scores") or {}
        title = (
            f"{row['model']} on task {row['task_id']} (run {row['run']}, needs clarification: "
            f"{row['needs_clarification']}, task_score: {scores.get('task_score')}, asked: {scores.get('asked')}, "
            f"elicited: {scores.get('elicited')}"
            + (f", failed: {row['failed']}" if row.get("failed") else "")
            + ")"
        )
        turns = []
        for m in row["messages"]:
            text = " ".join(str(m["content"]).split())
            turns.append(f"{m['role']}: {text[:max_chars]}{' ...' if len(text) > max_chars else ''}")
        examples.append((title, turns))
    return examples


def render_markdown(results: dict[str, Any], rows: Sequence[dict[str, Any]] = ()) -> str:
    lines = ["# Evaluation report", ""]
    lines += [f"- {p}" for p in _settings_lines(results)]
    for title, (header, table_rows) in _tables(results).items():
        lines += ["", f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table_rows]
    examples = example_conversations(rows)
    if examples:
        lines += ["", "## Example conversations"]
        for title, turns in examples:
            lines += ["", f"**{title}**", ""] + [f"> {t}  " for t in turns]
    return "\n".join(lines) + "\n"


# --- plots -------------------------------------------------------------------------------------------------------


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _errors(ests: Sequence[dict[str, Any]]) -> list[list[float]]:
    low = [e["mean"] - e["ci_low"] if e["ci_low"] is not None else 0.0 for e in ests]
    high = [e["ci_high"] - e["mean"] if e["ci_high"] is not None else 0.0 for e in ests]
    return [low, high]


def metrics_figure(results: dict[str, Any]) -> str:
    """One panel per metric: each model's mean with its CI as an error bar (base64 PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results["models"])
    metrics = list(next(iter(results["models"].values())))
    cols = 4
    rows = (len(metrics) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        ests = [results["models"][m][metric] for m in models]
        xs = [i for i, e in enumerate(ests) if e["mean"] is not None]
        shown = [ests[i] for i in xs]
        if shown:
            ax.errorbar(xs, [e["mean"] for e in shown], yerr=_errors(shown), fmt="o", capsize=4)
        for i, e in enumerate(ests):
            if e["mean"] is None:
                ax.text(i, 0.5, "n/a", ha="center", transform=ax.get_xaxis_transform(), color="gray")
        ax.set_title(metric, fontsize=9)
        ax.set_xticks(range(len(models)))
        ax.set_xticklabels([m[:18] for m in models], rotation=20, fontsize=7)
        ax.set_xlim(-0.5, len(models) - 0.5)
        if metric in RATE_METRICS or metric.startswith("task_score"):
            ax.set_ylim(-0.05, 1.05)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def ask_scatter_figure(results: dict[str, Any]) -> str:
    """Ask rate (needs clarification) against over-ask rate (complete tasks), one point per model: the good corner
    is top left (asks when needed, not otherwise)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    for model, metrics in results["models"].items():
        ask, over = metrics.get("ask_rate"), metrics.get("over_ask_rate")
        if ask is None or over is None:
            continue
        x = over["mean"] if over["mean"] is not None else 0.0
        y = ask["mean"] if ask["mean"] is not None else 0.0
        xerr = _errors([over]) if over["mean"] is not None else None
        yerr = _errors([ask]) if ask["mean"] is not None else None
        marker = "o" if ask["mean"] is not None and over["mean"] is not None else "x"
        ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt=marker, capsize=3, label=model[:30])
    ax.plot([0, 1], [0, 1], ls="--", color="gray", lw=0.8)
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("over-ask rate (complete tasks)")
    ax.set_ylabel("ask rate (tasks needing clarification)")
    ax.set_title("asking: when needed vs needlessly (x = n/a)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    data = _png(fig)
    plt.close(fig)
    return data


def render_html(results: dict[str, Any], rows: Sequence[dict[str, Any]] = ()) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>collab evaluation</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f3f3f3}"
        "code{background:#f6f6f6;padding:0 3px}</style></head><body>",
        "<h1>Evaluation report</h1><ul>",
    ]
    parts += [f"<li>{esc(p).replace('**', '')}</li>" for p in _settings_lines(results)]
    parts.append("</ul>")
    for title, (header, table_rows) in _tables(results).items():
        parts.append(f"<h2>{esc(title)}</h2><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in table_rows]
        parts.append("</table>")
    if results["models"]:
        parts.append("<h2>Metrics with 95% CIs</h2>")
        parts.append(f"<img alt='metrics per model' src='data:image/png;base64,{metrics_figure(results)}'>")
        parts.append("<h2>Ask rate vs over-ask rate</h2>")
        parts.append(f"<img alt='ask vs over-ask' src='data:image/png;base64,{ask_scatter_figure(results)}'>")
    examples = example_conversations(rows)
    if examples:
        parts.append("<h2>Example conversations</h2>")
        for title, turns in examples:
            parts.append(f"<h3>{esc(title)}</h3><pre style='white-space:pre-wrap'>" + esc("\n".join(turns)) + "</pre>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_reports(results: dict[str, Any], rows: Sequence[dict[str, Any]], out_dir: str | Path) -> dict[str, Path]:
    """Write results.json, report.md and report.html atomically (conversations.jsonl is written by the runner)."""
    out = Path(out_dir)
    paths = {"results": out / RESULTS_FILE, "markdown": out / MARKDOWN_FILE, "html": out / HTML_FILE}
    atomic_write_json(paths["results"], results)
    atomic_write_text(paths["markdown"], render_markdown(results, rows))
    atomic_write_text(paths["html"], render_html(results, rows))
    return paths


def results_table_rows(results: dict[str, Any]) -> list[list[Any]]:
    """[model, metric, mean, ci_low, ci_high, n] for every estimate: the W&B table."""
    return [
        [model, metric, e["mean"], e["ci_low"], e["ci_high"], e["n"]]
        for model, metrics in results["models"].items()
        for metric, e in metrics.items()
    ]


def wandb_mode(tracking: TrackingConfig | None, environ: dict[str, str] | None = None) -> str:
    """The effective W&B mode: WANDB_MODE when set (`dryrun` counts as offline), else the configured one, as for
    training stages (collab.train.tracking)."""
    import os

    env = os.environ if environ is None else environ
    mode = (env.get("WANDB_MODE") or "").strip().lower()
    mode = "offline" if mode == "dryrun" else mode
    if mode in ("online", "offline", "disabled"):
        return mode
    return tracking.wandb if tracking is not None else "disabled"


def log_wandb(results: dict[str, Any], tracking: TrackingConfig, wandb_dir: str | Path, *, run_name: str) -> None:
    """Log the results table (model, metric, mean, ci_low, ci_high, n) and every mean as a summary value to one W&B
    run of job type `eval`. Offline runs are written under `wandb_dir/wandb/offline-run-*`."""
    import wandb

    Path(wandb_dir).mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=tracking.project,
        entity=tracking.entity,
        tags=list(tracking.tags),
        name=run_name,
        job_type="eval",
        dir=str(wandb_dir),
        mode=wandb_mode(tracking),
        config=results.get("meta", {}).get("settings", {}),
        reinit="finish_previous",
    )
    try:
        table = wandb.Table(columns=["model", "metric", "mean", "ci_low", "ci_high", "n"],
                            data=results_table_rows(results))
        run.log({"eval/results": table})
        for model, metrics in results["models"].items():
            for metric, e in metrics.items():
                if e["mean"] is not None:
                    run.summary[f"eval/{model}/{metric}"] = e["mean"]
    finally:
        run.finish()

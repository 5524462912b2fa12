"""What a training stage logged, step by step, read back from `<stage>/metrics.jsonl`, and plotted.

Every rank-0 log entry of a trainer stage (TRL's loss and rewards, and for online stages the MR breakdown
`mr/...`) is appended to the stage's metrics.jsonl as it happens (collab.train.callbacks.MetricsLogCallback), so
the curves survive the checkpoints that a finished stage deletes, and W&B is not needed to see them. A resumed
stage logs the steps after its checkpoint again; the entry written last for a step is the one kept.

    python -m collab.train.curves RUN_DIR STAGE --keys mr/mean,mr/ask_rate --out curves.png
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from collab.errors import CollabError
from collab.run.layout import StagePaths


def _entry_kind(entry: dict[str, Any]) -> str:
    """Training steps, evaluations and the end-of-training summary are logged separately, several at one step."""
    if "train_runtime" in entry:
        return "summary"
    return "eval" if any(k.startswith("eval_") for k in entry) else "train"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The logged entries by step (one per step and kind of entry, the last written wins), in step order."""
    if not path.is_file():
        raise CollabError(f"{path} does not exist", fix="give the run directory and the name of a trainer stage "
                          "that has logged at least one step.")
    latest: dict[tuple[int, str], dict[str, Any]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # the line a crash cut short; the entries before it are whole
        if isinstance(entry, dict) and isinstance(entry.get("step"), int):
            latest[(entry["step"], _entry_kind(entry))] = entry
    return [latest[key] for key in sorted(latest)]


def series(entries: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """The steps that logged `key` and its values."""
    points = [(e["step"], float(e[key])) for e in entries if isinstance(e.get(key), (int, float))]
    return [s for s, _ in points], [v for _, v in points]


def plot_curves(entries: Sequence[dict[str, Any]], keys: Sequence[str], out: Path, *, title: str = "") -> Path:
    """One panel per key, value against step, with a moving average of 5 logged points (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.0), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        steps, values = series(entries, key)
        if not steps:
            raise CollabError(f"no logged entry has `{key}`", fix="pick keys that the stage logs, e.g. "
                              + ", ".join(sorted({k for e in entries for k in e if k != 'step'})[:12]) + ".")
        ax.plot(steps, values, ".", alpha=0.35)
        smooth = [sum(values[max(0, i - 4): i + 1]) / len(values[max(0, i - 4): i + 1]) for i in range(len(values))]
        ax.plot(steps, smooth, "-")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("stage")
    parser.add_argument("--keys", default="mr/mean,mr/ask_rate,mr/over_ask_rate")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    entries = read_metrics(StagePaths(Path(args.run_dir), args.stage).metrics)
    print(plot_curves(entries, args.keys.split(","), Path(args.out), title=f"{args.run_dir}: {args.stage}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

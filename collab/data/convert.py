"""Turn the data engine's records into training datasets: SFT rows from best-MR turns, DPO pairs from MR gaps.

Splits are by conversation (a stable hash of the conversation id), never by row, so no conversation's turns leak
between train and eval. Ties never make pairs: a pair needs a chosen MR strictly above the rejected one by at least
`min_gap`; among equal-MR candidates the earliest (by candidate order) is taken, which keeps the choice
deterministic.
"""

from __future__ import annotations

import statistics
import zlib
from itertools import combinations
from typing import Any, Literal

from datasets import Dataset, DatasetDict, Features, List, Value

from collab.chat import message

PairRule = Literal["best_worst", "across_acts", "all"]
MESSAGES = List({"role": Value("string"), "content": Value("string")})
SFT_FEATURES = Features({"messages": MESSAGES, "conv_id": Value("string"), "turn": Value("int32"), "mr": Value("float64")})
DPO_FEATURES = Features({
    "prompt": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES, "conv_id": Value("string"), "turn": Value("int32"),
    "chosen_mr": Value("float64"), "rejected_mr": Value("float64"), "gap": Value("float64"),
    "chosen_strategy": Value("string"), "rejected_strategy": Value("string"),
})


def is_eval_conversation(conv_id: str, eval_fraction: float, seed: int) -> bool:
    return zlib.crc32(f"{seed}:{conv_id}".encode()) / 2**32 < eval_fraction


def _prompt(record: dict[str, Any], system_prompt: str | None) -> list[dict[str, str]]:
    history = list(record["history"])
    return [message("system", system_prompt), *history] if system_prompt else history


def sft_rows(record: dict[str, Any], system_prompt: str | None) -> list[dict[str, Any]]:
    if record.get("best") is None:
        return []
    best = record["candidates"][record["best"]]
    if best["truncated"]:
        return []  # a reply cut off mid-sentence is no demonstration, whatever the others scored
    return [{"messages": [*_prompt(record, system_prompt), message("assistant", best["text"])],
             "conv_id": record["conv_id"], "turn": record["turn"], "mr": best["mr"]}]


def dpo_rows(
    record: dict[str, Any],
    system_prompt: str | None,
    *,
    min_gap: float,
    pairs: PairRule,
    min_chosen_mr: float | None = None,
) -> list[dict[str, Any]]:
    scored = [(i, c) for i, c in enumerate(record["candidates"]) if c["mr"] is not None]
    if len(scored) < 2:
        return []
    if pairs in ("best_worst", "across_acts"):
        best = max(scored, key=lambda ic: (ic[1]["mr"], -ic[0]))
        rivals = scored
        if pairs == "across_acts":
            # The worst reply that takes the other action (asks where the best does not, or the reverse), so the pair
            # contrasts the decision itself. Best against worst alone compares two questions on most requests that
            # need one (the worst is the question that obtained nothing), and DPO then never sees asking beat
            # answering, while on complete requests it sees answering beat asking every time: a bias against asking.
            other_act = [ic for ic in scored if _asks(ic[1]["text"]) != _asks(best[1]["text"])]
            rivals = other_act or scored
        worst = min(rivals, key=lambda ic: (ic[1]["mr"], ic[0]))
        candidate_pairs = [(best[1], worst[1])]
    else:
        candidate_pairs = [(a, b) if a["mr"] >= b["mr"] else (b, a) for (_, a), (_, b) in combinations(scored, 2)]
    prompt = _prompt(record, system_prompt)
    rows = []
    for chosen, rejected in candidate_pairs:
        gap = chosen["mr"] - rejected["mr"]
        if gap <= 0 or gap < min_gap or chosen["text"] == rejected["text"]:
            continue
        if min_chosen_mr is not None and chosen["mr"] < min_chosen_mr:
            continue
        rows.append({"prompt": prompt, "chosen": [message("assistant", chosen["text"])],
                     "rejected": [message("assistant", rejected["text"])], "conv_id": record["conv_id"],
                     "turn": record["turn"], "chosen_mr": chosen["mr"], "rejected_mr": rejected["mr"], "gap": gap,
                     "chosen_strategy": chosen["strategy"], "rejected_strategy": rejected["strategy"]})
    return rows


def build_datasets(
    records: list[dict[str, Any]],
    *,
    min_gap: float,
    pairs: PairRule,
    eval_fraction: float,
    seed: int,
    system_prompt: str | None = None,
    min_chosen_mr: float | None = None,
    balance_actions: bool = False,
) -> tuple[DatasetDict, DatasetDict, dict[str, Any]]:
    """SFT and DPO DatasetDicts (splits train / eval) and a stats summary."""
    split_rows: dict[str, dict[str, list[dict[str, Any]]]] = {"sft": {"train": [], "eval": []},
                                                               "dpo": {"train": [], "eval": []}}
    for record in sorted(records, key=lambda r: (r["conv_id"], r["turn"])):
        split = "eval" if is_eval_conversation(record["conv_id"], eval_fraction, seed) else "train"
        split_rows["sft"][split] += sft_rows(record, system_prompt)
        split_rows["dpo"][split] += dpo_rows(record, system_prompt, min_gap=min_gap, pairs=pairs,
                                             min_chosen_mr=min_chosen_mr)
    if balance_actions:
        split_rows["dpo"] = {k: balance_by_action(v) for k, v in split_rows["dpo"].items()}
    sft = DatasetDict({k: _dataset(v, SFT_FEATURES) for k, v in split_rows["sft"].items()})
    dpo = DatasetDict({k: _dataset(v, DPO_FEATURES) for k, v in split_rows["dpo"].items()})
    all_pairs = split_rows["dpo"]["train"] + split_rows["dpo"]["eval"]
    candidates = [c for r in records for c in r["candidates"]]
    mrs = [c["mr"] for c in candidates if c["mr"] is not None]
    stats = {
        "conversations": len({r["conv_id"] for r in records}),
        "turns": len(records),
        "candidates": len(candidates),
        "failed_candidates": sum(c["mr"] is None for c in candidates),
        "failed_turns": sum(r.get("best") is None for r in records),
        "mr_mean": statistics.fmean(mrs) if mrs else None,
        "mr_std": statistics.pstdev(mrs) if len(mrs) > 1 else 0.0,
        "sft_rows": {k: len(v) for k, v in sft.items()},
        "pairs": {k: len(v) for k, v in dpo.items()},
        "mean_gap": statistics.fmean(p["gap"] for p in all_pairs) if all_pairs else None,
        "chosen_ask_share": statistics.fmean(_chosen_asks(p) for p in all_pairs) if all_pairs else None,
        "rejected_ask_share": statistics.fmean(_asks(p["rejected"][0]["content"]) for p in all_pairs) if all_pairs else None,
        "chosen_strategies": _counts(p["chosen_strategy"] for p in all_pairs),
    }
    return sft, dpo, stats


def _asks(text: str) -> bool:
    from collab.metrics.dialogue_acts import is_question

    return is_question(text)


def _chosen_asks(row: dict[str, Any]) -> bool:
    return _asks(row["chosen"][0]["content"])


def balance_by_action(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep as many pairs whose chosen reply asks as pairs whose chosen reply does not: the larger group loses its
    smallest-gap pairs (ties broken by order, so the result is deterministic). Order is otherwise preserved."""
    asks = [i for i, row in enumerate(rows) if _chosen_asks(row)]
    asking = set(asks)
    others = [i for i in range(len(rows)) if i not in asking]
    larger, smaller = (asks, others) if len(asks) > len(others) else (others, asks)
    by_gap = sorted(larger, key=lambda i: (-rows[i]["gap"], i))
    keep = set(smaller) | set(by_gap[: len(smaller)])
    return [row for i, row in enumerate(rows) if i in keep]


def _dataset(rows: list[dict[str, Any]], features: Features) -> Dataset:
    # Built column-wise so an empty split still carries its columns (from_list([]) would have none).
    return Dataset.from_dict({name: [row[name] for row in rows] for name in features}, features=features)


def _counts(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out

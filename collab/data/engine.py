"""`collab data`: the CollabLLM data engine, MR-guided conversation synthesis.

For every task the simulated user opens; at each turn K candidates are sampled with the configured strategies,
each is scored by MR, the best continues, and the next user turn comes from the best candidate's rollout. Every turn
of every conversation is appended to the stage's store as soon as it is scored, with all candidates, scores,
breakdowns and rollouts. A rerun continues at turn granularity: finished turns are read back from the store, never
re-scored and never duplicated, and the request cache makes the interrupted turn's finished calls free.

All conversations of a batch advance in lockstep, so each turn is one batched candidate call and one batched MR
computation for the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collab.candidates import assign_strategies, sample_candidates
from collab.chat import Conversation, SamplingParams, message
from collab.config import DataStage, Recipe
from collab.data.store import JsonlStore
from collab.errors import CollabError
from collab.reward import Candidate, MRResult, MultiturnReward
from collab.seeding import stable_seed
from collab.simulators.base import UserSimulator
from collab.tasks.record import Task


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: tasks index, index+count, ... (for data-parallel processes or array jobs)."""

    index: int = 0
    count: int = 1

    @staticmethod
    def parse(text: str) -> Shard:
        try:
            index, count = (int(x) for x in text.split("/"))
        except ValueError:
            raise CollabError(f"--shard '{text}' is not of the form i/n", fix="write e.g. --shard 0/4.") from None
        if count < 1 or not 0 <= index < count:
            raise CollabError(f"--shard {text}: need 0 <= i < n", fix="shards are numbered 0 to n-1.")
        return Shard(index, count)

    @property
    def tag(self) -> str:
        return f"shard-{self.index:04d}-of-{self.count:04d}"

    def select(self, tasks: list[Task]) -> list[Task]:
        return tasks[self.index :: self.count]


def store_dir(run_dir: Path, stage: DataStage) -> Path:
    return run_dir / stage.label / "store"


def turn_key(record: dict[str, Any]) -> tuple[str, int]:
    return (record["conv_id"], record["turn"])


@dataclass
class Dialogue:
    """A conversation being synthesised: the transcript so far and the index of the next assistant turn."""

    task: Task
    history: Conversation = field(default_factory=list)
    turn: int = 0
    done: bool = False


class DataEngine:
    def __init__(
        self,
        recipe: Recipe,
        stage: DataStage,
        reward: MultiturnReward,
        simulator: UserSimulator,
        store: JsonlStore,
    ) -> None:
        self.recipe, self.stage, self.reward, self.simulator, self.store = recipe, stage, reward, simulator, store
        self.policy = reward.policy
        self.strategies = assign_strategies(list(stage.strategies), stage.candidates)

    def resume_state(self, tasks: list[Task]) -> list[Dialogue]:
        """Each task's conversation as far as the store has it."""
        last: dict[str, dict[str, Any]] = {}
        for record in self.store.records.values():
            current = last.get(record["conv_id"])
            if current is None or record["turn"] > current["turn"]:
                last[record["conv_id"]] = record
        out = []
        for task in tasks:
            record = last.get(task.id)
            if record is None:
                out.append(Dialogue(task))
                continue
            conv = Dialogue(task, turn=record["turn"] + 1, done=record["done"])
            if not conv.done:
                best = record["candidates"][record["best"]]["text"]
                conv.history = [*record["history"], message("assistant", best), message("user", record["next_user"])]
            out.append(conv)
        return out

    def run(self, tasks: list[Task], progress: Any | None = None) -> None:
        conversations = self.resume_state(tasks)
        done_already = sum(c.done for c in conversations)
        if progress is not None:
            progress.update(advance=done_already)
        pending = [c for c in conversations if not c.done]
        size = self.stage.batch_conversations
        for start in range(0, len(pending), size):
            batch = pending[start : start + size]
            while any(not c.done for c in batch):
                finished = self.step([c for c in batch if not c.done])
                if progress is not None:
                    progress.update(advance=finished, note=f"turn {max(c.turn for c in batch)}")

    def step(self, conversations: list[Dialogue]) -> int:
        """Advance every conversation by one scored assistant turn; returns how many finished."""
        self._open([c for c in conversations if not c.history])
        live = [c for c in conversations if not c.done]
        # Seeds per conversation and turn, never per batch position: a resumed run batches the unfinished
        # conversations differently, and must still produce what an uninterrupted run produces.
        seeds = [stable_seed(self.recipe.seed, c.task.id, c.turn) for c in live]
        params = SamplingParams(max_new_tokens=self.stage.max_new_tokens, temperature=self.stage.temperature)
        groups = sample_candidates(
            self.policy, [(c.task, c.history) for c in live], self.strategies, params,
            system_prompt=self.recipe.model.system_prompt, seeds=seeds, prefills=self.stage.prefills,
            stops=self.stage.stops,
        )
        flat = [cand for group in groups for cand in group]
        rollout_seeds = [seed * 1_000_003 + j * 101 for seed, group in zip(seeds, groups) for j in range(len(group))]
        scores = self.reward.score(flat, seeds=rollout_seeds)
        records, offset = [], 0
        for conv, group in zip(live, groups):
            records.append(self._advance(conv, group, scores[offset : offset + len(group)]))
            offset += len(group)
        self._fill_next_user(live, records)
        self.store.append(records)
        return sum(c.done for c in live)

    def _open(self, conversations: list[Dialogue]) -> None:
        if not conversations:
            return
        turns = self.simulator.respond(
            [(c.task, []) for c in conversations], seeds=[stable_seed(self.recipe.seed, c.task.id) for c in conversations]
        )
        for conv, turn in zip(conversations, turns):
            if not turn.text:
                conv.done = True  # the simulator could not even open: nothing to record
                self.store.append([{"conv_id": conv.task.id, "turn": 0, "history": [], "candidates": [], "best": None,
                                    "next_user": None, "done": True, "error": f"no opening: {turn.info}"}])
            else:
                conv.history = [message("user", turn.text)]

    def _advance(self, conv: Dialogue, group: list[Candidate], scores: list[MRResult]) -> dict[str, Any]:
        candidates = [
            {"text": c.text, "strategy": c.strategy, "truncated": c.truncated, "mr": s.mr, "std": s.std,
             "components": s.components, "error": s.error, "failed_rollouts": s.failed_rollouts,
             "rollouts": [{"messages": r.messages, "reward": r.reward, "components": r.components, "error": r.error,
                           "user_done": [bool(i.get("done")) for i in r.user_info]} for r in s.rollouts]}
            for c, s in zip(group, scores)
        ]
        valid = [i for i, c in enumerate(candidates) if c["mr"] is not None]
        record: dict[str, Any] = {"conv_id": conv.task.id, "task_id": conv.task.id, "turn": conv.turn,
                                  "history": conv.history, "candidates": candidates, "best": None,
                                  "next_user": None, "done": True}
        if not valid:
            record["error"] = "every candidate failed: " + "; ".join(sorted({str(c["error"]) for c in candidates}))
            conv.done = True
            return record
        best = max(valid, key=lambda i: (candidates[i]["mr"], -i))  # ties: the earliest candidate
        record["best"] = best
        user, ended = _next_user_from_rollouts(candidates[best]["rollouts"])
        record["next_user"], record["done"] = user, ended
        conv.done = ended
        return record

    def _fill_next_user(self, live: list[Dialogue], records: list[dict[str, Any]]) -> None:
        """Close conversations at the turn limit; those still open whose best candidate has no rollout with a user
        turn (window 0, every rollout failed) ask the simulator directly, in one batched call; then every open
        conversation moves to its next turn."""
        for conv, record in zip(live, records):
            if conv.turn + 1 >= self.stage.max_turns or record["best"] is None:
                record["done"] = conv.done = True
        ask = [(c, r) for c, r in zip(live, records) if not r["done"] and r["next_user"] is None]
        if ask:
            transcripts = [[*c.history, message("assistant", r["candidates"][r["best"]]["text"])] for c, r in ask]
            turns = self.simulator.respond([(c.task, t) for (c, _), t in zip(ask, transcripts)],
                                           seeds=[stable_seed(self.recipe.seed, c.task.id, c.turn) for c, _ in ask])
            for (conv, record), turn in zip(ask, turns):
                record["next_user"] = turn.text
                record["done"] = conv.done = bool(turn.done or not turn.text)
        for conv, record in zip(live, records):
            if not conv.done:
                best = record["candidates"][record["best"]]["text"]
                conv.history = [*conv.history, message("assistant", best), message("user", record["next_user"])]
                conv.turn += 1


def _next_user_from_rollouts(rollouts: list[dict[str, Any]]) -> tuple[str | None, bool]:
    """The user's reply to the candidate in its first successful rollout, and whether the user ended there.

    Returns (None, False) when no rollout got as far as a user turn (the caller then asks the simulator)."""
    for rollout in sorted(rollouts, key=lambda r: r["error"] is not None):
        window = rollout["messages"]
        if len(window) >= 2 and window[1]["role"] == "user":
            ended = bool(rollout["user_done"] and rollout["user_done"][0])
            return window[1]["content"], ended
        if rollout["user_done"] and rollout["user_done"][0]:
            return None, True  # the user ended the conversation without another word
    return None, False

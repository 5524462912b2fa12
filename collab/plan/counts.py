"""How many model requests and tokens a stage makes, from its sizes and the MR settings, without running anything.

The structure follows the code that will run:

- data stage (`collab.data.engine`): per conversation one simulator request opens it; then per assistant turn t
  the policy samples K candidates (K requests, one batched call), and MR scores each with S rollouts
  (`collab.reward`); a rollout alternates w simulator and w policy requests (user, assistant, ... as
  `collab.rollout.RolloutEngine` advances it) and, with `reward.interactivity: judge`, one judge request rates it.
  The next user turn is read from the best candidate's rollout (no extra request unless w = 0).
- online stages: every sampled completion is one policy request and is scored by the same MR.
- eval stage: per (model, task, run) a conversation of T assistant turns: T simulator and T policy requests and one
  judge request.

Input tokens grow with the history; the model is explicit: a request at assistant turn t sees the system prompt
plus the transcript so far, u user turns of `user_turn_tokens` and a assistant turns of `assistant_turn_tokens`
(capped by the stage's max_new_tokens), plus the simulator's or judge's own instructions. Two columns are given:
the upper bound (every conversation runs its turn limit, every rollout its full window, no candidate truncated)
and the expected value (`mean_turns` turns per conversation, `rollout_fill` of each window). Re-asks of a
malformed simulator or judge reply and retries of failed HTTP requests come on top of both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields


@dataclass(frozen=True)
class TokenAssumptions:
    """Sizes the counts cannot know before a run; every field is a `collab plan` option (`--user-turn-tokens`).

    The defaults reproduce the CollabLLM paper's cost note within about 10%: one forward rollout at w=2 costs about
    2.5k policy input tokens and 4.5k simulator input tokens (here 2.7k and 4.2k at the mean turn of a conversation
    of `mean_turns` = 4 turns), and `mean_turns` = 4 with K=3 candidates gives about 190 LLM calls per generated
    conversation, inside the paper's 150-300.

    Parameters:
        user_turn_tokens: Mean tokens of one user turn as the policy sees it.
        assistant_turn_tokens: Mean tokens of one assistant turn (each stage caps it by its max_new_tokens).
        system_prompt_tokens: Per policy request: the chat template, the system prompt and a candidate's steering.
        simulator_prompt_tokens: Per simulator request: the user simulator's instructions and the hidden goal.
        simulator_output_tokens: Per simulator request: its structured reply (current answer, thought, response).
        judge_prompt_tokens: Per judge request: the rubric and the hidden goal (the transcript comes on top).
        judge_output_tokens: Per judge request: its JSON rating with a short thought.
        mean_turns: Expected assistant turns per conversation (capped by the turn limit); the simulated user
            usually ends before the limit. The upper bound column uses the limit.
        rollout_fill: Expected share of a rollout's window that happens before the simulated user ends it (1.0: the
            whole window).
        pair_yield: Share of scored turns that give a DPO pair (MR gap of best vs worst at least `min_gap`); the
            data stage's stats.json reports the real share.
    """

    user_turn_tokens: float = field(default=100, metadata={"help": "mean tokens of a user turn"})
    assistant_turn_tokens: float = field(default=300, metadata={"help": "mean tokens of an assistant turn"})
    system_prompt_tokens: float = field(default=60, metadata={"help": "template + system prompt per policy request"})
    simulator_prompt_tokens: float = field(default=900, metadata={"help": "simulator instructions + goal per request"})
    simulator_output_tokens: float = field(default=200, metadata={"help": "tokens of one simulator reply"})
    judge_prompt_tokens: float = field(default=500, metadata={"help": "judge rubric + goal per request"})
    judge_output_tokens: float = field(default=80, metadata={"help": "tokens of one judge reply"})
    mean_turns: float = field(default=4.0, metadata={"help": "expected assistant turns per conversation"})
    rollout_fill: float = field(default=1.0, metadata={"help": "expected share of a rollout window that happens"})
    pair_yield: float = field(default=0.7, metadata={"help": "share of scored turns that give a DPO pair"})

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) < 0:
                raise ValueError(f"{f.name} must be >= 0, got {getattr(self, f.name)}")
        if not 0 <= self.rollout_fill <= 1 or not 0 <= self.pair_yield <= 1:
            raise ValueError("rollout_fill and pair_yield are shares in [0, 1]")


@dataclass
class Usage:
    """What one party (policy, simulator or judge) does in a stage.

    Parameters:
        calls: Batched calls (one per engine step for a batch of conversations); a backend serves each as one batch.
        requests: Single generations (one reply each).
        input_tokens: Prompt tokens over all requests.
        output_tokens: Generated tokens over all requests.
    """

    calls: float = 0.0
    requests: float = 0.0
    input_tokens: float = 0.0
    output_tokens: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.calls + other.calls, self.requests + other.requests,
                     self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens)

    def scaled(self, factor: float) -> Usage:
        """Requests and tokens times `factor`; calls are batched, so they are set separately."""
        return Usage(self.calls, self.requests * factor, self.input_tokens * factor, self.output_tokens * factor)


@dataclass
class Counts:
    """All requests of a stage under one scenario (the upper bound or the expected value).

    Parameters:
        policy: The policy model: candidates or completions, and the assistant turns of rollouts and conversations.
        simulator: The simulated user (for a scripted simulator: turns, with no tokens).
        judge: The interactivity judge (nothing unless `reward.interactivity: judge`).
        sampled: Policy requests that sample candidates (data) or completions (online stages); the rest are turns.
        conversations: Conversations (data, eval) or scored completions (online stages).
        turns: Assistant turns per conversation in this scenario.
    """

    policy: Usage = field(default_factory=Usage)
    simulator: Usage = field(default_factory=Usage)
    judge: Usage = field(default_factory=Usage)
    sampled: float = 0.0
    conversations: float = 0.0
    turns: float = 0.0


@dataclass(frozen=True)
class MRSettings:
    """The parts of a recipe that fix what one MR computation costs.

    Parameters:
        window: Future assistant turns per rollout (w).
        samples: Rollouts per candidate (S).
        judged: One judge request per rollout (`reward.interactivity: judge`).
        rollout_max_new_tokens: Cap of the policy's turns in rollouts (`reward.policy_max_new_tokens`).
    """

    window: int
    samples: int
    judged: bool
    rollout_max_new_tokens: int


# --- the token model --------------------------------------------------------------------------------------------


def transcript_tokens(a: TokenAssumptions, user_turns: float, assistant_turns: float, max_new_tokens: int) -> float:
    """Tokens of a transcript of `user_turns` user and `assistant_turns` assistant turns."""
    return user_turns * a.user_turn_tokens + assistant_turns * min(a.assistant_turn_tokens, max_new_tokens)


def positions(turns: float) -> list[tuple[int, float]]:
    """(assistant turn index t, weight) for a conversation of `turns` turns; a fractional last turn has weight < 1."""
    return [(t, min(1.0, turns - t)) for t in range(math.ceil(turns))]


def candidate_request(a: TokenAssumptions, t: int, max_new_tokens: int) -> Usage:
    """One policy request that answers the user at assistant turn t (t+1 user and t assistant turns before it)."""
    return Usage(0, 1, a.system_prompt_tokens + transcript_tokens(a, t + 1, t, max_new_tokens),
                 min(a.assistant_turn_tokens, max_new_tokens))


def user_request(a: TokenAssumptions, seen: float, max_new_tokens: int, llm_user: bool) -> Usage:
    """One simulator request that sees `seen` user and `seen` assistant turns (a scripted user costs no tokens)."""
    if not llm_user:
        return Usage(0, 1, 0, 0)
    return Usage(0, 1, a.simulator_prompt_tokens + transcript_tokens(a, seen, seen, max_new_tokens),
                 a.simulator_output_tokens)


def rollout(a: TokenAssumptions, t: int, mr: MRSettings, fill: float, llm_user: bool,
            history_cap: int) -> tuple[Usage, Usage, Usage]:
    """(policy, simulator, judge) usage of ONE rollout of a candidate given at assistant turn t.

    After the candidate the transcript holds t+1 user and t+1 assistant turns; future step j (0-based) is a
    simulator request seeing t+1+j of each, then a policy request seeing one more user turn. `fill` scales the
    window (the user may end early).
    """
    policy, simulator = Usage(), Usage()
    reply = min(a.assistant_turn_tokens, mr.rollout_max_new_tokens)
    for j in range(mr.window):
        seen = t + 1 + j
        simulator += user_request(a, seen, history_cap, llm_user)
        policy += Usage(0, 1, a.system_prompt_tokens + transcript_tokens(a, seen + 1, seen, history_cap), reply)
    judge = Usage()
    if mr.judged:
        end = t + 1 + mr.window * fill
        judge = Usage(0, 1, a.judge_prompt_tokens + transcript_tokens(a, end, end, history_cap),
                      a.judge_output_tokens)
    return policy.scaled(fill), simulator.scaled(fill), judge


def mr_scoring(a: TokenAssumptions, t: int, mr: MRSettings, fill: float, llm_user: bool,
               history_cap: int) -> tuple[Usage, Usage, Usage]:
    """(policy, simulator, judge) usage of scoring ONE candidate at turn t: S rollouts."""
    policy, simulator, judge = rollout(a, t, mr, fill, llm_user, history_cap)
    return policy.scaled(mr.samples), simulator.scaled(mr.samples), judge.scaled(mr.samples)


# --- stages -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataShape:
    """A data stage's sizes.

    Parameters:
        conversations: Tasks (one conversation each).
        max_turns: Assistant turns per conversation at most (the stage's max_turns and the simulator's max_turns).
        candidates: K, candidates per turn.
        max_new_tokens: Cap of a candidate.
        batch_conversations: Conversations advanced together (one batched call per side per step).
        llm_user: The simulator is an LLM (its requests carry tokens) rather than scripted.
    """

    conversations: int
    max_turns: int
    candidates: int
    max_new_tokens: int
    batch_conversations: int
    llm_user: bool


def data_counts(a: TokenAssumptions, shape: DataShape, mr: MRSettings, *, expected: bool) -> Counts:
    """Requests and tokens of a data stage: the upper bound, or the expected value when `expected`."""
    turns = min(a.mean_turns, shape.max_turns) if expected else float(shape.max_turns)
    fill = a.rollout_fill if expected else 1.0
    cap = shape.max_new_tokens
    policy, simulator, judge, sampled = Usage(), user_request(a, 0, cap, shape.llm_user), Usage(), 0.0
    for t, weight in positions(turns):
        candidates = candidate_request(a, t, cap).scaled(shape.candidates)
        p, s, j = mr_scoring(a, t, mr, fill, shape.llm_user, cap)
        policy += (candidates + p.scaled(shape.candidates)).scaled(weight)
        simulator += s.scaled(shape.candidates * weight)
        judge += j.scaled(shape.candidates * weight)
        sampled += shape.candidates * weight
        if mr.window == 0 and t + 1 < turns:  # no rollout produced the next user turn: one direct request
            simulator += user_request(a, t + 1, cap, shape.llm_user).scaled(weight)
    n = shape.conversations
    # A batch advances until its longest conversation ends, so batched calls follow the turn limit in both columns.
    batches = math.ceil(n / shape.batch_conversations) if n else 0
    steps = batches * shape.max_turns
    out = Counts(policy.scaled(n), simulator.scaled(n), judge.scaled(n), sampled * n, n, turns)
    out.policy.calls = steps * (1 + mr.window)
    out.simulator.calls = batches + steps * (mr.window or 1)  # w = 0: one direct next-user call per step
    out.judge.calls = steps if mr.judged else 0
    return out


@dataclass(frozen=True)
class OnlineShape:
    """An online stage's sizes.

    Parameters:
        completions: Completions sampled over the whole stage (each scored by MR).
        generation_rounds: Batched generation rounds per process (each: one sampling call, then the MR rollouts).
        turns: Turns of the conversations the prompts come from: prompt positions are spread evenly over them.
        max_turns: The turn limit of those conversations.
        max_new_tokens: Cap of a completion.
        llm_user: The simulator is an LLM rather than scripted.
        fill: Share of each rollout window that happens (1.0 for the upper bound, `rollout_fill` expected).
    """

    completions: float
    generation_rounds: float
    turns: float
    max_turns: int
    max_new_tokens: int
    llm_user: bool
    fill: float = 1.0


def online_counts(a: TokenAssumptions, shape: OnlineShape, mr: MRSettings) -> Counts:
    """Requests and tokens of an online stage: every completion is one policy request plus its MR."""
    turns, fill = shape.turns, shape.fill
    places = positions(turns)
    total_weight = sum(w for _, w in places) or 1.0
    policy, simulator, judge = Usage(), Usage(), Usage()
    for t, weight in places:  # one completion at a prompt position drawn like the data's turns
        share = weight / total_weight
        p, s, j = mr_scoring(a, t, mr, fill, shape.llm_user, shape.max_new_tokens)
        policy += (candidate_request(a, t, shape.max_new_tokens) + p).scaled(share)
        simulator += s.scaled(share)
        judge += j.scaled(share)
    c = shape.completions
    out = Counts(policy.scaled(c), simulator.scaled(c), judge.scaled(c), c, c, turns)
    out.policy.calls = shape.generation_rounds * (1 + mr.window)
    out.simulator.calls = shape.generation_rounds * mr.window
    out.judge.calls = shape.generation_rounds if mr.judged else 0
    return out


@dataclass(frozen=True)
class EvalShape:
    """An eval stage's sizes.

    Parameters:
        models: Models compared.
        tasks: Evaluation tasks.
        runs: Conversations per task and model.
        max_turns: Assistant turns per conversation at most (`simulator.max_turns`).
        max_new_tokens: Cap of an assistant turn.
        batch_conversations: Conversations advanced together.
        llm_user: The simulator is an LLM rather than scripted.
        judged: One judge request per conversation.
    """

    models: int
    tasks: int
    runs: int
    max_turns: int
    max_new_tokens: int
    batch_conversations: int
    llm_user: bool
    judged: bool


def eval_counts(a: TokenAssumptions, shape: EvalShape, *, expected: bool) -> Counts:
    """Per conversation: T simulator requests (the opening, then a reply to each assistant turn but the last) and T
    policy requests, and one judge request."""
    turns = min(a.mean_turns, shape.max_turns) if expected else float(shape.max_turns)
    cap = shape.max_new_tokens
    policy, simulator = Usage(), Usage()
    for t, weight in positions(turns):
        simulator += user_request(a, t, cap, shape.llm_user).scaled(weight)
        policy += candidate_request(a, t, cap).scaled(weight)
    judge = Usage()
    if shape.judged:
        judge = Usage(0, 1, a.judge_prompt_tokens + transcript_tokens(a, turns, turns, cap), a.judge_output_tokens)
    n = shape.models * shape.tasks * shape.runs
    batches = shape.models * math.ceil(shape.tasks * shape.runs / shape.batch_conversations) if n else 0
    out = Counts(policy.scaled(n), simulator.scaled(n), judge.scaled(n), 0.0, n, turns)
    out.policy.calls = out.simulator.calls = batches * shape.max_turns
    out.judge.calls = batches if shape.judged else 0
    return out


def data_rows(a: TokenAssumptions, conversations: int, turns: float, *, eval_fraction: float, candidates: int,
              pairs: str) -> tuple[float, float]:
    """(SFT rows, DPO pairs) in the train split of a data stage: one SFT row per scored turn, and `pair_yield` of
    the turns give a pair (`best_worst`, `across_acts`) or up to K(K-1)/2 pairs (`all`)."""
    turns_total = conversations * turns * (1 - eval_fraction)
    per_turn = candidates * (candidates - 1) / 2 if pairs == "all" else 1
    return turns_total, turns_total * a.pair_yield * per_turn


def row_tokens(a: TokenAssumptions, turns: float, max_new_tokens: int, kind: str) -> float:
    """Mean tokens of one training row: a conversation up to a turn (SFT), or its prompt with chosen and rejected
    replies (DPO: both sequences), averaged over the turn positions."""
    places = positions(turns)
    total = sum(w for _, w in places) or 1.0
    reply = min(a.assistant_turn_tokens, max_new_tokens)
    mean = 0.0
    for t, weight in places:
        prompt = a.system_prompt_tokens + transcript_tokens(a, t + 1, t, max_new_tokens)
        mean += weight / total * (2 * (prompt + reply) if kind == "dpo" else prompt + reply)
    return mean

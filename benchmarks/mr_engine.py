"""MR throughput: the batched engine against a sequential reference doing identical work.

8 conversation states x 4 candidates x S rollouts x w future turns on SmolLM2 with the sharded simulator. Both sides
decode greedily with the same token limit, so they generate the same tokens; the sequential reference scores one
candidate's one rollout at a time, the way CollabLLM's code schedules them. The raw line is the backend generating
the first future turn of every rollout in one batched call: the throughput ceiling the engine is compared with.

    python -m benchmarks.mr_engine [--samples 3] [--window 2] [--new-tokens 32] [--skip-sequential]
"""

from __future__ import annotations

import argparse
import time

from benchmarks.common import machine
from collab.backends.base import Request
from collab.backends.hf import HFBackend
from collab.chat import SamplingParams
from collab.config import BackendConfig, RewardConfig
from collab.reward import Candidate, MultiturnReward
from collab.simulators.sharded import ShardedSimulator
from collab.tasks.registry import load_task_set


def candidates_for(states: int, per_state: int) -> list[Candidate]:
    tasks = load_task_set("clarify-math", split="train", limit=states)
    replies = [
        "Could you tell me how many are in each one?",
        "The answer is 12.",
        "Let me think step by step. First we multiply the numbers, then we add them. The answer is 24.",
        "Which quantity is missing? I need it to solve this.",
    ]
    return [Candidate(t, [{"role": "user", "content": t.opening or t.goal}], replies[k % len(replies)])
            for t in tasks for k in range(per_state)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--states", type=int, default=8)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--window", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--max-batch-size", type=int, default=BackendConfig().max_batch_size)
    parser.add_argument("--skip-sequential", action="store_true")
    args = parser.parse_args()
    backend = HFBackend.from_name("smollm2-135m-instruct", device="cpu", max_batch_size=args.max_batch_size)
    # collab's engine runs on the backend as recipes configure it (prefix caching on, BackendConfig's default);
    # the sequential reference and the raw line use the plain backend, as CollabLLM's code has no such reuse.
    engine_backend = HFBackend(backend.model, backend.tokenizer, name=backend.name, max_batch_size=args.max_batch_size,
                               prefix_cache_bytes=BackendConfig().prefix_cache_mb * 2**20)
    config = RewardConfig(window=args.window, samples=args.samples, policy_temperature=0.0,
                          policy_max_new_tokens=args.new_tokens)
    cands = candidates_for(args.states, args.candidates)
    print(f"machine: {machine()}")
    print(f"work: {args.states} states x {args.candidates} candidates x S={args.samples} x w={args.window}, "
          f"{args.new_tokens} new tokens per turn, greedy")

    def run(batched: bool) -> tuple[float, int, int]:
        used = engine_backend if batched else backend
        used.stats.__init__()
        start = time.perf_counter()
        if batched:
            results = MultiturnReward(used, ShardedSimulator(max_turns=10), config).score(cands)
        else:
            single = MultiturnReward(used, ShardedSimulator(max_turns=10), config.model_copy(update={"samples": 1}))
            results = [single.score([c], seed=k)[0] for c in cands for k in range(args.samples)]
        elapsed = time.perf_counter() - start
        assert all(r.mr is not None for r in results), [r.error for r in results if r.mr is None]
        return elapsed, used.stats.completion_tokens, used.stats.calls

    batched_s, batched_tokens, batched_calls = run(batched=True)
    reuse = engine_backend.prefix_store.stats if engine_backend.prefix_store is not None else None
    first_turn = [Request([{"role": "user", "content": c.history[0]["content"]}, {"role": "assistant", "content": c.text},
                           {"role": "user", "content": "I don't know."}],
                          SamplingParams(max_new_tokens=args.new_tokens, temperature=0.0, seed=k))
                  for c in cands for k in range(args.samples)]
    backend.stats.__init__()
    start = time.perf_counter()
    backend.generate_requests(first_turn)
    raw_s = time.perf_counter() - start
    raw_tps = backend.stats.completion_tokens / raw_s
    print("| schedule | wall s | policy calls | tokens | tokens/s | vs raw batched |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| raw batched generate (one turn, {len(first_turn)} prompts) | {raw_s:.1f} | 1 | "
          f"{backend.stats.completion_tokens} | {raw_tps:.1f} | 100% |")
    print(f"| collab batched engine | {batched_s:.1f} | {batched_calls} | {batched_tokens} | "
          f"{batched_tokens / batched_s:.1f} | {100 * batched_tokens / batched_s / raw_tps:.0f}% |")
    if reuse is not None:
        share = reuse.reused_tokens / max(reuse.reused_tokens + reuse.prefilled_tokens, 1)
        print(f"\nengine prefix cache: {reuse.reused_tokens} prompt tokens reused, {reuse.prefilled_tokens} prefilled "
              f"({100 * share:.0f}% reused)")
    if not args.skip_sequential:
        seq_s, seq_tokens, seq_calls = run(batched=False)
        print(f"| sequential reference | {seq_s:.1f} | {seq_calls} | {seq_tokens} | {seq_tokens / seq_s:.1f} | "
              f"{100 * seq_tokens / seq_s / raw_tps:.0f}% |")
        print(f"\nspeed-up of the batched engine over the sequential reference: {seq_s / batched_s:.1f}x")


if __name__ == "__main__":
    main()

"""hf backend throughput on SmolLM2 at batch 1, 4, 16, 32, and its overhead against model.generate.

Both sides generate greedily from the same left-padded batch with the same stopping rule, so the difference is the
backend's own work: chat templating, padding, grouping, decoding and bookkeeping.

    python benchmarks/hf_backend.py [--new-tokens 64] [--repeats 3]
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import best_of, machine
from collab.backends.hf import HFBackend
from collab.chat import SamplingParams

QUESTIONS = [
    "Tom has 3 boxes of apples. How many apples does he have?",
    "Write a short poem about the sea.",
    "What is 17 times 23?",
    "Explain what a hash map is in two sentences.",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 32])
    args = parser.parse_args()
    backend = HFBackend.from_name("smollm2-135m-instruct", device="cpu", max_batch_size=max(args.batches))
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=0.0)
    print(f"machine: {machine()}")
    print(f"| batch | backend tok/s | model.generate tok/s | overhead |")
    print(f"|---:|---:|---:|---:|")
    for batch in args.batches:
        prompts = [[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)] + " " * (i // len(QUESTIONS))}]
                   for i in range(batch)]
        # The same batch, pre-padded, straight into model.generate.
        encoded = [backend.encode_messages(p) for p in prompts]
        width = max(len(e) for e in encoded)
        pad = backend.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])

        def direct() -> int:
            with torch.inference_mode():
                out = backend.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.new_tokens,
                                             do_sample=False, top_k=None, top_p=None, temperature=None,
                                             pad_token_id=pad, eos_token_id=backend._stop_ids())
            new = out[:, width:]
            return int((new != pad).sum())

        def through_backend() -> int:
            gens = backend.generate_requests([backend_request(p, params) for p in prompts])
            return sum(g.completion_tokens for g in gens)

        t_direct, _ = best_of(args.repeats, direct)
        t_backend, tokens = best_of(args.repeats, through_backend)
        print(f"| {batch} | {tokens / t_backend:.1f} | {tokens / t_direct:.1f} | {100 * (t_backend / t_direct - 1):+.1f}% |")


def backend_request(prompt: list, params: SamplingParams):  # noqa: ANN201
    from collab.backends.base import Request

    return Request(prompt, params)


if __name__ == "__main__":
    main()

"""Per-step cost of the hf backend's sampling: one generator per row (the exponential race, collab/backends/decode.py)
against the single batch generator it replaced (`torch.multinomial`), on a batch of rollout size, and, for scale,
one SmolLM2 decode step of the same batch.

    python -m benchmarks.sampling [--rows 96] [--vocab 49152] [--repeats 20]
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import torch

from benchmarks.common import machine
from collab.backends.decode import sample_next


def batch_generator_sample(logits: torch.Tensor, temperature: float, top_p: float,
                           generator: torch.Generator) -> torch.Tensor:
    """The sampler before per-row generators: every row drawn from one generator (top-p as in decode.py)."""
    logits = logits.float() / temperature
    if top_p < 1.0:
        ascending, order = torch.sort(logits, dim=-1)
        drop = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p
        drop[:, -1] = False
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(1)


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1000


def decode_step_ms(rows: int, context: int, repeats: int) -> float:
    """One forward of `rows` new tokens over a cache of `context` tokens per row, SmolLM2-135M-Instruct."""
    from collab.models import load_model

    model = load_model("smollm2-135m-instruct", dtype="float32", device="cpu")
    ids = torch.randint(0, model.config.vocab_size, (rows, context))
    with torch.inference_mode():
        past = model(input_ids=ids, use_cache=True).past_key_values
        token = ids[:, -1:]

        def step() -> None:
            model(input_ids=token, past_key_values=past, use_cache=True, logits_to_keep=1)
            past.crop(-1)  # back to `context` tokens, so every step reads the same cache

        return median_ms(step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=96)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--context", type=int, default=256)
    args = parser.parse_args()
    logits = torch.randn(args.rows, args.vocab, generator=torch.Generator().manual_seed(0)) * 3
    generators = [torch.Generator().manual_seed(i) for i in range(args.rows)]
    single = torch.Generator().manual_seed(0)
    print(f"machine: {machine()}")
    print(f"| {args.rows} rows x vocab {args.vocab} | batch generator (before) ms | per-row generators ms | change |")
    print("|---|---:|---:|---:|")
    for top_p in (1.0, 0.95):
        before = median_ms(functools.partial(batch_generator_sample, logits, 1.0, top_p, single), args.repeats)
        after = median_ms(functools.partial(sample_next, logits, 1.0, top_p, generators), args.repeats)
        print(f"| temperature 1.0, top_p {top_p} | {before:.1f} | {after:.1f} | {after - before:+.1f} ms |")
    step = decode_step_ms(args.rows, args.context, max(3, args.repeats // 4))
    print(f"one SmolLM2-135M decode step, {args.rows} rows over {args.context} cached tokens: {step:.0f} ms")


if __name__ == "__main__":
    main()

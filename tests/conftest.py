"""Shared fixtures. Unit tests use the tiny random-weight model; integration tests load the real SmolLM2."""

from __future__ import annotations

import pytest

from collab.backends.hf import HFBackend


@pytest.fixture(scope="session")
def tiny_backend() -> HFBackend:
    """A batched hf backend over a 2-layer random Llama with SmolLM2's tokenizer and chat template."""
    return HFBackend.from_name("tiny-random-smollm2", device="cpu")


@pytest.fixture(scope="session")
def smollm2_backend() -> HFBackend:
    """The real embedded SmolLM2-135M-Instruct (integration tier only)."""
    return HFBackend.from_name("smollm2-135m-instruct", device="cpu")

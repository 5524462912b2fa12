"""Shared fixtures. Unit tests use the tiny random-weight model; integration tests load the real SmolLM2."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from collab.backends.hf import HFBackend
from tests.servers import server_deaths


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    """A test that failed while a server it uses had died reports the server's exit and log first: the client's own
    error ("Connection error") is only the consequence."""
    outcome = yield
    report = outcome.get_result()
    deaths = server_deaths() if report.failed else []
    if deaths:
        consequence = str(report.longrepr).strip().splitlines()[-1:] if report.longrepr else []
        report.longrepr = "\n\n".join(deaths) + "\n\n(the test's own failure, a consequence: " + \
            (consequence[0] if consequence else "?") + ")"


@pytest.fixture(scope="session")
def tiny_backend() -> HFBackend:
    """A batched hf backend over a 2-layer random Llama with SmolLM2's tokenizer and chat template."""
    return HFBackend.from_name("tiny-random-smollm2", device="cpu")


@pytest.fixture(scope="session")
def smollm2_backend() -> HFBackend:
    """The real embedded SmolLM2-135M-Instruct (integration tier only)."""
    return HFBackend.from_name("smollm2-135m-instruct", device="cpu")

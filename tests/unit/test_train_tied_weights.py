"""Resuming a model with tied embeddings: the Trainer's missing-keys warning is explained once, not shown raw."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from collab.models import load_model
from collab.train.tied_weights import TRAINER_LOGGER, explain_tied_weights


@pytest.fixture
def trainer_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger(TRAINER_LOGGER)
    before = list(logger.filters)
    yield logger
    logger.filters[:] = before


def test_missing_tied_lm_head_is_explained_once_and_other_missing_keys_still_warn(
    trainer_logger: logging.Logger, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    model = load_model("tiny-random-smollm2", device="cpu")
    assert model.config.tie_word_embeddings
    assert explain_tied_weights(model) is not None

    with caplog.at_level(logging.WARNING, logger=TRAINER_LOGGER):
        for _ in range(2):
            trainer_logger.warning("There were missing keys in the checkpoint model loaded: ['lm_head.weight'].")
        trainer_logger.warning("There were missing keys in the checkpoint model loaded: ['model.norm.weight'].")

    assert [r.getMessage() for r in caplog.records] == [
        "There were missing keys in the checkpoint model loaded: ['model.norm.weight']."]
    assert capsys.readouterr().out.count("collab: the checkpoint has no lm_head.weight: tied to the input "
                                         "embeddings") == 1

"""The Trainer's "missing keys ... ['lm_head.weight']" on resume, explained instead of alarming.

Models with tied input and output embeddings (SmolLM2, Llama 3.2 1B/3B, Qwen small models) save the shared matrix
once, so a checkpoint has no separate `lm_head.weight`; loading it reports that key as missing, and the model ties
it back to the embeddings right after. Nothing is lost, but the warning reads like a broken checkpoint. This filter
drops exactly that warning (only when every missing key is a tied one) and prints one line saying why.
"""

from __future__ import annotations

import logging
import re
from typing import Any

_MISSING = re.compile(r"There were missing keys in the checkpoint model loaded: \[(?P<keys>.*)\]")
TRAINER_LOGGER = "transformers.trainer"


def tied_keys(model: Any) -> set[str]:
    """Parameter names of `model` that are tied to another parameter (and so not saved on their own)."""
    keys: set[str] = set()
    config = getattr(model, "config", None)
    if getattr(config, "tie_word_embeddings", False):
        keys.add("lm_head.weight")
    declared = getattr(model, "_tied_weights_keys", None)
    if isinstance(declared, dict):
        keys.update(declared)
    elif isinstance(declared, (list, tuple, set)):
        keys.update(declared)
    return keys


class TiedWeightsFilter(logging.Filter):
    """Drops the missing-keys warning when the keys are the model's tied ones; prints an explanation once."""

    def __init__(self, tied: set[str]) -> None:
        super().__init__()
        self.tied = tied
        self.explained = False

    def filter(self, record: logging.LogRecord) -> bool:
        match = _MISSING.search(record.getMessage())
        if match is None:
            return True
        missing = {key.strip().strip("'\"") for key in match.group("keys").split(",") if key.strip()}
        if not missing or not missing <= self.tied:
            return True
        if not self.explained:
            self.explained = True
            print(f"collab: the checkpoint has no {', '.join(sorted(missing))}: tied to the input embeddings, it is "
                  "saved once and restored from them (harmless)", flush=True)
        return False


def explain_tied_weights(model: Any) -> TiedWeightsFilter | None:
    """Install the filter for `model` on the Trainer's logger; None when the model ties nothing."""
    tied = tied_keys(model)
    if not tied:
        return None
    log_filter = TiedWeightsFilter(tied)
    logging.getLogger(TRAINER_LOGGER).addFilter(log_filter)
    return log_filter

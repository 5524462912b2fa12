"""vLLM within its limits, without vLLM: the length guard with the tiny model's real tokenizer and chat template, and
the vLLM backend's batch handling against a stand-in engine (the GPU process boundary) that, like vLLM, refuses the
whole call when any prompt exceeds max_model_len."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from transformers import AutoTokenizer

from collab.backends import vllm_backend
from collab.backends.base import Request
from collab.backends.length_guard import fit_conversation, prompt_tokens
from collab.chat import Conversation, SamplingParams, message
from collab.config import BackendConfig
from collab.models import merged_weights, resolve_model


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(resolve_model("tiny-random-smollm2"))


def long_conversation(turns: int, words: int = 60) -> Conversation:
    convo = [message("system", "You are a careful assistant that asks clarifying questions.")]
    for t in range(turns):
        convo.append(message("user", f"user turn {t}: " + "detail " * words))
        convo.append(message("assistant", f"assistant turn {t}: " + "answer " * words))
    convo.append(message("user", "final question: which one should I pick?"))
    return convo


def test_a_conversation_that_fits_is_sent_unchanged(tokenizer: Any) -> None:
    convo = long_conversation(1)
    fit = fit_conversation(tokenizer, convo, 4096)
    assert fit.messages == convo and fit.dropped == 0
    assert fit.prompt_tokens == prompt_tokens(tokenizer, convo) > 100


def test_a_long_conversation_loses_its_oldest_turns_and_keeps_system_prompt_and_latest_turns(tokenizer: Any) -> None:
    convo = long_conversation(6)  # system + 12 turn messages + final user message
    full = prompt_tokens(tokenizer, convo)
    budget = prompt_tokens(tokenizer, [convo[0], *convo[-5:]])  # room for the system prompt and the last 2.5 turns

    fit = fit_conversation(tokenizer, convo, budget)

    assert full > budget
    assert fit.messages == [convo[0], *convo[-5:]]
    assert fit.dropped == 8 and fit.prompt_tokens <= budget
    assert fit.messages[1]["role"] == "user"  # the kept part opens with a user turn


def test_a_conversation_whose_last_message_alone_is_too_long_is_skipped(tokenizer: Any) -> None:
    convo = [message("system", "Be brief."), message("user", "word " * 500)]
    fit = fit_conversation(tokenizer, convo, 200)
    assert fit.messages is None and fit.prompt_tokens > 200


def test_a_prefill_conversation_is_measured_without_a_generation_prompt(tokenizer: Any) -> None:
    convo = [message("user", "hi"), message("assistant", "Sure, here")]
    with_prompt = len(tokenizer.apply_chat_template(convo[:1], tokenize=True, add_generation_prompt=True))
    assert prompt_tokens(tokenizer, convo) > with_prompt  # the partial reply counts, no new assistant header


class _Engine:
    """Stands in for vllm.LLM: real tokenizer, a max_model_len, and vLLM's refusal of any over-long prompt."""

    def __init__(self, tokenizer: Any, max_model_len: int) -> None:
        self.tokenizer = tokenizer
        self.model_config = SimpleNamespace(max_model_len=max_model_len)
        self.calls: list[list[Conversation]] = []

    def get_tokenizer(self) -> Any:
        return self.tokenizer

    def chat(self, convos: list[Conversation], sampling: list[Any], **kwargs: Any) -> list[Any]:
        self.calls.append(convos)
        outs = []
        for convo, sp in zip(convos, sampling, strict=True):
            n = prompt_tokens(self.tokenizer, convo)
            if n + sp.max_tokens > self.model_config.max_model_len:
                raise ValueError(f"prompt of {n} tokens is longer than the maximum model length")  # as vLLM does
            outs.append(SimpleNamespace(prompt_token_ids=[0] * n,
                                        outputs=[SimpleNamespace(text=" ok ", token_ids=[1, 2], finish_reason="stop")]))
        return outs


def test_one_over_long_conversation_fails_alone_and_a_long_one_is_cut_never_sinking_the_batch(
    tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vllm_backend, "_require_vllm", lambda: SimpleNamespace(SamplingParams=SimpleNamespace))
    engine = _Engine(tokenizer, max_model_len=1024)
    backend = vllm_backend.VLLMBackend(name="tiny", llm=engine)
    params = SamplingParams(max_new_tokens=128)
    short, long, hopeless = long_conversation(1), long_conversation(12), [message("user", "word " * 2000)]

    gens = backend.generate_requests([Request(c, params) for c in (short, long, hopeless)])

    assert backend.max_model_len == 1024  # read from the wrapped engine
    assert [g.ok for g in gens] == [True, True, False]
    assert gens[0].extra == {} and gens[1].extra["messages_dropped"] > 0
    assert gens[2].error is not None and gens[2].error.startswith("PromptTooLong:")
    assert "max_model_len=1024 - max_new_tokens=128" in gens[2].error
    [sent] = engine.calls
    assert len(sent) == 2 and sent[0] == short and sent[1][0] == long[0] and sent[1][-1] == long[-1]
    assert backend.stats.prompts_truncated == 1 and backend.stats.failure_reasons == {"PromptTooLong": 1}


def test_a_vllm_backend_without_max_model_len_is_a_recipe_error_naming_the_fix() -> None:
    with pytest.raises(ValueError, match="needs `max_model_len`.*max_model_len: 16384"):
        BackendConfig(kind="vllm")
    assert BackendConfig(kind="vllm", max_model_len=8192).max_model_len == 8192


def test_a_lora_stage_is_served_from_merged_weights_written_once(tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    base_dir = resolve_model("tiny-random-smollm2")
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                                LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    adapter = tmp_path / "sft" / "final"
    peft_model.save_pretrained(adapter)

    merged = merged_weights(str(adapter))

    assert merged == str(tmp_path / "sft" / "final-merged")
    assert (Path(merged) / "config.json").is_file() and (Path(merged) / "tokenizer_config.json").is_file()
    assert sorted(p.name for p in (tmp_path / "sft").iterdir()) == ["final", "final-merged"]  # no temp folder left
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(adapter))
    with torch.no_grad():
        expected = reference(ids).logits
        got = AutoModelForCausalLM.from_pretrained(merged)(ids).logits
        bare_base = AutoModelForCausalLM.from_pretrained(base_dir)(ids).logits
    assert torch.allclose(got, expected, atol=1e-4) and not torch.allclose(got, bare_base, atol=1e-4)

    written = (Path(merged) / "config.json").stat().st_mtime_ns
    assert merged_weights(str(adapter)) == merged  # the second call reuses it
    assert (Path(merged) / "config.json").stat().st_mtime_ns == written
    assert merged_weights(base_dir) == base_dir  # full weights are served as they are

"""The live policy of MR rollouts during online training: which path generates (transformers on the live model,
the trainer's colocated vLLM engine, or its vLLM server), and what each path guarantees, checked on CPU."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from collab.backends.base import Request
from collab.chat import SamplingParams
from collab.errors import BackendUnavailable
from collab.models import load_model, load_tokenizer
from collab.train import online_policy
from collab.train.online_policy import (
    HFLivePolicy,
    TRLServerBackend,
    VLLMColocatePolicy,
    make_live_policy,
    policy_mode,
    server_url,
    trainer_client,
    trainer_engine,
)

PROMPT = [{"role": "user", "content": "Tom has 3 boxes of apples. How many apples?"}]


def test_generation_path_follows_use_vllm_and_vllm_mode() -> None:
    assert policy_mode({}) == "hf"
    assert policy_mode({"use_vllm": False, "vllm_mode": "server"}) == "hf"
    assert policy_mode({"use_vllm": True}) == "vllm-colocate"
    assert policy_mode(SimpleNamespace(use_vllm=True, vllm_mode="server")) == "vllm-server"


@pytest.fixture(scope="module")
def live_trainer() -> Any:
    """What HFLivePolicy reads from a TRL trainer: accelerator, model_wrapped, processing_class, args."""
    from accelerate import Accelerator

    model = load_model("tiny-random-smollm2", device="cpu")
    return SimpleNamespace(accelerator=Accelerator(cpu=True), model_wrapped=model, model=model,
                           processing_class=load_tokenizer("tiny-random-smollm2"),
                           args=SimpleNamespace(use_vllm=False, ds3_gather_for_generation=True,
                                                gradient_checkpointing_kwargs=None))


def test_hf_policy_generates_with_the_trainers_own_model_and_leaves_training_state_alone(live_trainer: Any) -> None:
    policy = make_live_policy(live_trainer, name="run/grpo")
    assert isinstance(policy, HFLivePolicy) and policy.backend.cache is None
    model = live_trainer.model_wrapped
    model.train()
    outcome: dict[str, Any] = {}

    def generate() -> None:  # as AsyncMRRewardFunction does: in a worker thread, grad mode on there
        with policy.session(5) as backend:
            outcome["model"] = backend.model
            outcome["reply"] = backend.generate_requests(
                [Request(PROMPT, SamplingParams(max_new_tokens=4, temperature=0.0))])[0]

    thread = threading.Thread(target=generate)
    thread.start()
    thread.join()

    assert outcome["model"] is model and outcome["reply"].ok and outcome["reply"].completion_tokens > 0
    assert policy.backend.revision == "5" and policy.backend.identity.endswith("@5")
    assert model.training is True  # eval only for the call
    assert all(p.grad is None for p in model.parameters())
    assert torch.is_grad_enabled()


def test_colocated_engine_is_found_where_each_trainer_keeps_it() -> None:
    grpo_engine, dpo_engine = object(), object()
    assert trainer_engine(SimpleNamespace(vllm_generation=SimpleNamespace(llm=grpo_engine))) is grpo_engine
    assert trainer_engine(SimpleNamespace(llm=dpo_engine)) is dpo_engine
    assert trainer_engine(SimpleNamespace()) is None


def test_colocate_mode_on_a_machine_without_gpu_is_a_clear_error() -> None:
    trainer = SimpleNamespace(args=SimpleNamespace(use_vllm=True, vllm_mode="colocate"),
                              vllm_generation=SimpleNamespace(llm=object()))
    with pytest.raises(BackendUnavailable, match="needs a CUDA GPU"):
        make_live_policy(trainer, name="run/grpo")
    with pytest.raises(Exception, match="has no engine"):
        VLLMColocatePolicy(SimpleNamespace(), name="run/grpo")


def test_server_mode_uses_trls_client_on_the_main_rank_and_an_own_client_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    main_client = object()
    assert trainer_client(SimpleNamespace(vllm_generation=SimpleNamespace(vllm_client=main_client))) is main_client
    assert trainer_client(SimpleNamespace(vllm_client=main_client)) is main_client

    opened: list[str] = []

    class FakeClient:
        def __init__(self, base_url: str, connection_timeout: float) -> None:
            opened.append(base_url)

    import trl.generation.vllm_client as client_module

    monkeypatch.setattr(client_module, "VLLMClient", FakeClient)
    args = SimpleNamespace(vllm_server_base_url=None, vllm_server_host="node7", vllm_server_port=8011,
                           vllm_server_timeout=5.0)
    other_rank = SimpleNamespace(vllm_generation=SimpleNamespace(vllm_client=None), args=args)
    assert isinstance(trainer_client(other_rank), FakeClient) and opened == ["http://node7:8011"]
    assert server_url(SimpleNamespace(vllm_server_base_url="http://vllm:9000")) == "http://vllm:9000"


class ScriptedClient:
    """TRL's VLLMClient.chat as the server answers it: token ids of the prompt and of the completion."""

    def __init__(self, tokenizer: Any, fail_on: str | None = None) -> None:
        self.tokenizer, self.fail_on = tokenizer, fail_on
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def chat(self, messages: list[list[dict[str, str]]], **kwargs: Any) -> dict[str, Any]:
        with self.lock:
            self.calls.append({"messages": messages, **kwargs})
        text = messages[0][-1]["content"]
        if self.fail_on and self.fail_on in text:
            raise ConnectionError("server went away")
        ids = self.tokenizer("Which box?", add_special_tokens=False)["input_ids"]
        if "long" not in text:
            ids = [*ids, self.tokenizer.eos_token_id]
        return {"prompt_ids": [[1, 2, 3]], "completion_ids": [ids]}


def test_server_backend_sends_one_seeded_request_per_sample_and_reports_failures() -> None:
    tokenizer = load_tokenizer("tiny-random-smollm2")
    client = ScriptedClient(tokenizer, fail_on="broken")
    backend = TRLServerBackend(client, tokenizer, name="run/grpo", concurrency=2)
    params = SamplingParams(max_new_tokens=3, temperature=0.7, seed=10)
    requests = [Request([{"role": "user", "content": c}], params, i)
                for i, c in enumerate(["short", "a long one", "broken"])]

    short, long, broken = backend.generate_requests(requests)

    assert short.text == "Which box?" and short.finish_reason == "stop" and short.prompt_tokens == 3
    assert long.finish_reason == "length"
    assert not broken.ok and "server went away" in (broken.error or "")
    assert sorted(c["generation_kwargs"]["seed"] for c in client.calls) == [10, 11, 12]
    assert all(c["n"] == 1 and c["max_tokens"] == 3 and c["temperature"] == 0.7 for c in client.calls)
    backend.set_revision(4)
    assert backend.identity == "trl-vllm-server:run/grpo@4"


def test_server_policy_wraps_the_trainers_client(monkeypatch: pytest.MonkeyPatch) -> None:
    tokenizer = load_tokenizer("tiny-random-smollm2")
    client = ScriptedClient(tokenizer)
    trainer = SimpleNamespace(args=SimpleNamespace(use_vllm=True, vllm_mode="server"), vllm_client=client,
                              processing_class=tokenizer)
    policy = make_live_policy(trainer, name="run/online_dpo", concurrency=3)
    with policy.session(9) as backend:
        assert isinstance(backend, online_policy.TRLServerBackend) and backend.client is client
        assert backend.revision == "9" and backend.concurrency == 3

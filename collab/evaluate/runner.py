"""Run an evaluation: simulate every (model, task, run) conversation, score it, save it, then aggregate and report.

Why it is shaped this way:
  * Conversations run from the opening to the end (the simulated user stops, or `max_turns` assistant turns), all
    conversations of a chunk advanced together by the batched engine, one model loaded at a time.
  * Every finished chunk is appended to `conversations.jsonl` (whole lines, fsynced) with its scores, so a rerun
    with the same settings skips (model, task id, run) rows already there and never duplicates one. The settings
    that change what a conversation looks like are fingerprinted (`eval_key`); resuming into a folder made with
    different settings is refused rather than mixing incomparable rows.
  * Conversation seeds depend on (seed, task id, run) only, so every model meets the same simulated-user draws,
    which is what makes the per-task pairing of the comparisons meaningful.
  * Scores come from the library, not from here: `mr` is collab.reward's ConversationScorer (the code behind
    training MR) and every backend, the simulator and the judge are built by collab.factory.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collab.chat import SamplingParams
from collab.errors import CollabError
from collab.evaluate.modes import Mode, apply_mode
from collab.evaluate.store import CONVERSATIONS_FILE, ConversationStore, row_key
from collab.metrics.base import MetricResult
from collab.reward import ConversationScorer
from collab.rollout import ConversationState, RolloutEngine
from collab.tasks.record import Task

if TYPE_CHECKING:
    from collab.backends.base import Backend
    from collab.config import EvalStage, Recipe, RewardConfig, TrackingConfig
    from collab.progress import StageProgress
    from collab.simulators.base import UserSimulator

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRef:
    """A model to evaluate: `label` names it in the results, `spec` says how to load it (a model name, a local
    checkpoint or LoRA adapter directory, or `openai:MODEL@BASE_URL`)."""

    label: str
    spec: str


@dataclass(frozen=True)
class EvalSettings:
    """An evaluation's settings resolved from a recipe and its eval stage (`for_stage`): the stage's values, or the
    recipe sections they default to. The schema and its defaults live in collab.config (EvalStage); this is the
    flat form the runner, the aggregation and the report read.

    Attributes:
        tasks: A registered task set or a path to a .jsonl file of tasks.
        split: Split of the task set.
        limit: Number of tasks; None for all.
        task_seed: Seed of generated task sets.
        runs: Conversations per task, each with its own seed.
        mode: Lost-in-Conversation mode (see collab.evaluate.modes).
        max_turns: Assistant turns after which a conversation stops.
        seed: Seed of the conversations and of the bootstrap.
        system_prompt: The policy's system prompt, or None.
        max_new_tokens: Longest assistant turn.
        temperature: Sampling temperature of the assistant.
        batch_size: Conversations advanced together and saved together.
        resamples: Bootstrap resamples for every interval.
        simulator: The simulated user's recipe section as JSON (part of the resume fingerprint).
        reward: When set, the conversation-level R* (`mr`) is computed with this reward configuration.
    """

    tasks: str
    split: str
    limit: int | None
    task_seed: int
    runs: int
    mode: Mode
    max_turns: int
    seed: int
    system_prompt: str | None
    max_new_tokens: int
    temperature: float
    batch_size: int
    resamples: int
    simulator: str
    reward: RewardConfig | None

    @classmethod
    def for_stage(cls, recipe: Recipe, stage: EvalStage) -> EvalSettings:
        """The settings of `stage`: tasks from the stage, else `tasks.name` with `tasks.eval_split` and
        `tasks.limit`; max turns from the stage, else `simulator.max_turns`; sampling from the stage, else
        `reward.policy_temperature` and `reward.policy_max_new_tokens`; batch size from the stage, else
        `policy.max_batch_size`; the system prompt from `model.system_prompt`; `mr` with `reward` unless the
        stage turns it off."""
        return cls(
            tasks=stage.tasks or recipe.tasks.name,
            split=stage.split or recipe.tasks.eval_split,
            limit=stage.limit or recipe.tasks.limit,
            task_seed=recipe.tasks.seed,
            runs=stage.runs,
            mode=stage.mode,
            max_turns=stage.max_turns or recipe.simulator.max_turns,
            seed=recipe.seed,
            system_prompt=recipe.model.system_prompt,
            max_new_tokens=stage.max_new_tokens or recipe.reward.policy_max_new_tokens,
            temperature=stage.temperature if stage.temperature is not None else recipe.reward.policy_temperature,
            batch_size=stage.batch_size or recipe.policy.max_batch_size,
            resamples=stage.resamples,
            simulator=json.dumps(recipe.simulator.model_dump(mode="json"), sort_keys=True),
            reward=recipe.reward if stage.mr else None,
        )

    def fingerprint(self) -> dict[str, Any]:
        """The settings that change a conversation or its scores; rows made under other values are not comparable."""
        return {
            "tasks": self.tasks,
            "split": self.split,
            "task_seed": self.task_seed,
            "mode": self.mode,
            "max_turns": self.max_turns,
            "seed": self.seed,
            "system_prompt": self.system_prompt,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "simulator": self.simulator,
            "reward": self.reward.model_dump(mode="json") if self.reward is not None else None,
        }

    @property
    def eval_key(self) -> str:
        """A short hash of `fingerprint()`, stored in every conversation row."""
        payload = json.dumps(self.fingerprint(), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def meta(self) -> dict[str, Any]:
        """Every setting and the eval key, for results.json."""
        data = asdict(self)
        data["reward"] = self.reward.model_dump(mode="json") if self.reward is not None else None
        data["eval_key"] = self.eval_key
        return data


# --- models ------------------------------------------------------------------------------------------------------


def resolve_system_prompt(text_or_name: str | None) -> str | None:
    """A named steering prompt (`proactive`, `ask`, `answer`; see collab.candidates) or the text itself."""
    if not text_or_name:
        return None
    from collab.candidates import STEERING

    named = STEERING.get(text_or_name)  # type: ignore[call-overload]
    return named if named else text_or_name


def conversation_seed(seed: int, task_id: str, run: int) -> int:
    """The same for every model, so models meet the same simulated-user draws (paired comparisons)."""
    digest = hashlib.sha256(f"eval:{seed}:{task_id}:{run}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x3FFFFFFF


# --- scoring -----------------------------------------------------------------------------------------------------


def score_states(
    states: Sequence[ConversationState],
    *,
    model: str,
    runs: Sequence[int],
    eval_key: str,
    mode: str,
    count_tokens: Callable[[str], int],
    reward: ConversationScorer | None = None,
) -> list[dict[str, Any]]:
    """One conversations.jsonl row per finished state: the transcript and every per-conversation score.

    A failed conversation keeps its transcript and reason but gets no scores; a metric that fails gets value None
    and its reason under `errors`. Neither is ever turned into a 0.
    """
    interactivity: list[MetricResult | None] = [None] * len(states)
    if reward is not None:
        ok = [i for i, s in enumerate(states) if s.failed is None]
        items = [(states[i].task, states[i].messages, states[i].user_info, 0) for i in ok]
        for i, result in zip(ok, reward.interactivity(items)):
            interactivity[i] = result
    rows = []
    for state, run, inter in zip(states, runs, interactivity):
        task = state.task
        row: dict[str, Any] = {
            "model": model,
            "task_id": task.id,
            "run": run,
            "seed": state.seed,
            "mode": mode,
            "eval_key": eval_key,
            "kind": task.kind,
            "needs_clarification": task.needs_clarification,
            "n_facts": len(task.facts),
            "failed": state.failed,
            "messages": state.messages,
            "assistant_finish": state.assistant_finish,
            "user_info": state.user_info,
            "final_artifact": None,
            "scores": {},
            "errors": {},
        }
        if state.failed is None:
            row["scores"], row["errors"], row["final_artifact"] = _score_one(state, count_tokens, reward, inter)
        rows.append(row)
    return rows


def _score_one(
    state: ConversationState,
    count_tokens: Callable[[str], int],
    reward: ConversationScorer | None,
    inter: MetricResult | None,
) -> tuple[dict[str, Any], dict[str, str], str | None]:
    """(scores, errors, final artifact) of one finished conversation; `mr` is R* of the whole conversation, computed
    by the same code as the MR of training and data (collab.reward)."""
    from collab.metrics.behaviour import behaviour
    from collab.metrics.interactivity import elicitation
    from collab.reward import final_artifact, task_result

    task, messages = state.task, state.messages
    scores: dict[str, Any] = {}
    errors: dict[str, str] = {}
    final = final_artifact(task, messages)
    task_score = task_result(task, messages)
    scores["task_score"] = task_score.value
    if not task_score.ok:
        errors["task_score"] = task_score.error or "failed"
    b = behaviour(task, messages, state.user_info)
    try:
        scores["elicited"] = elicitation(task, messages, state.user_info).share
    except ValueError as exc:
        scores["elicited"] = None
        errors["elicited"] = str(exc)
    scores.update(
        asked=b.asked,
        premature_answer=b.premature_answer,
        over_ask=b.over_ask,
        turns=b.turns,
        first_action=b.first_action,
        acts=list(b.acts),
    )
    scores["tokens"] = sum(count_tokens(m["content"]) for m in messages if m["role"] == "assistant")
    if reward is not None:
        scored = reward.score(messages, task=task_score, count_tokens=count_tokens,
                              interactivity=inter if inter is not None else MetricResult.fail("not scored"))
        scores["mr"] = scored.reward
        if scored.error is not None:
            errors["mr"] = scored.error
        else:
            scores["mr_components"] = scored.components
    return scores, errors, final


# --- the evaluation ----------------------------------------------------------------------------------------------


def load_tasks(settings: EvalSettings) -> list[Task]:
    from collab.tasks.registry import load_task_set

    tasks = load_task_set(settings.tasks, split=settings.split, limit=settings.limit, seed=settings.task_seed)
    ids = [t.id for t in tasks]
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise CollabError(f"task ids must be unique; repeated: {duplicates}", where=settings.tasks)
    return [apply_mode(t, settings.mode) for t in tasks]


def evaluate(
    models: Sequence[ModelRef | str],
    settings: EvalSettings,
    out_dir: str | Path,
    *,
    simulator: UserSimulator,
    loader: Callable[[ModelRef], Backend] | None = None,
    judge: Any | None = None,
    tracking: TrackingConfig | None = None,
    run_name: str | None = None,
    wandb_dir: str | Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate `models` and write results.json, conversations.jsonl, report.md and report.html into `out_dir`.

    Args:
        models: ModelRefs, or specs used as their own labels. Labels must be unique.
        settings: Tasks, mode, runs, turns, sampling and bootstrap settings.
        out_dir: The output folder; rerunning into it resumes.
        simulator: The simulated user.
        loader: ModelRef -> Backend; defaults to `collab.factory.build_eval_model` of a default recipe (no cache).
        judge: An InteractivityJudge when `settings.reward.interactivity == "judge"`.
        tracking: When W&B is on (its `wandb`, or WANDB_MODE), the results table is logged to W&B.
        run_name: Name of the W&B run.
        wandb_dir: Where W&B writes its files (`<wandb_dir>/wandb/`); defaults to `out_dir`.
        echo: Progress lines (e.g. console.print); logging only when None.

    Returns:
        The results.json content.
    """
    from filelock import FileLock, Timeout

    from collab.evaluate.aggregate import aggregate
    from collab.evaluate.report import log_wandb, wandb_mode, write_reports

    say = echo or logger.info
    refs = [m if isinstance(m, ModelRef) else ModelRef(m, m) for m in models]
    labels = [r.label for r in refs]
    if not refs:
        raise CollabError("no models to evaluate", where="eval", fix="give at least one --model.")
    if len(set(labels)) != len(labels):
        raise CollabError(f"model labels must be unique, got {labels}", where="eval.models")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks = load_tasks(settings)
    reward = ConversationScorer(settings.reward, judge) if settings.reward is not None else None
    load = loader or _default_loader
    store = ConversationStore(out / CONVERSATIONS_FILE)
    lock = FileLock(str(out / ".eval.lock"))
    try:
        lock.acquire(timeout=1)
    except Timeout as exc:
        raise CollabError(
            f"another evaluation is writing into {out}", fix="wait for it to finish, or use another --out folder."
        ) from exc
    try:
        existing = store.load()
        _check_compatible(existing, settings, store.path)
        if store.torn_lines_dropped:
            say(f"dropped a torn last line of {store.path} (an interrupted write); that conversation runs again")
        done = {row_key(r) for r in existing}
        for ref in refs:
            todo = [(t, run) for t in tasks for run in range(settings.runs) if (ref.label, t.id, run) not in done]
            total = len(tasks) * settings.runs
            if not todo:
                say(f"{ref.label}: all {total} conversations already done")
                continue
            say(f"{ref.label}: {total - len(todo)} of {total} conversations done, running {len(todo)}")
            _run_model(ref, todo, settings, simulator, load, reward, store, say)
        rows = store.load()
    finally:
        lock.release()
    wanted = {(r.label, t.id, run) for r in refs for t in tasks for run in range(settings.runs)}
    rows = [r for r in rows if row_key(r) in wanted]
    results = aggregate(rows, labels, tasks=tasks, settings=settings)
    write_reports(results, rows, out)
    if tracking is not None and wandb_mode(tracking) != "disabled":
        log_wandb(results, tracking, wandb_dir or out, run_name=run_name or out.name)
    return results


def _default_loader(ref: ModelRef) -> Backend:
    from collab.config import Recipe
    from collab.factory import build_eval_model

    return build_eval_model(Recipe(), ref.spec)


def _check_compatible(rows: list[dict[str, Any]], settings: EvalSettings, path: Path) -> None:
    other = sorted({r.get("eval_key") for r in rows if r.get("eval_key") != settings.eval_key}, key=str)
    if other:
        raise CollabError(
            f"{path} holds conversations made with other settings (eval key {other[0]}, now {settings.eval_key}); "
            "mixing them would compare incomparable conversations",
            fix="use a new --out folder, or rerun with the original tasks, mode, max turns, seed, system prompt, "
            "sampling, simulator and reward.",
        )


def _run_model(
    ref: ModelRef,
    todo: list[tuple[Task, int]],
    settings: EvalSettings,
    simulator: UserSimulator,
    load: Callable[[ModelRef], Backend],
    reward: ConversationScorer | None,
    store: ConversationStore,
    say: Callable[[str], None],
) -> None:
    from collab.progress import stage_progress

    backend = load(ref)
    try:
        with stage_progress(f"eval {ref.label}", len(todo), [backend]) as progress:
            _run_batches(ref, todo, settings, simulator, backend, reward, store, say, progress)
    finally:
        backend.close()
        del backend
        gc.collect()


def _run_batches(ref: ModelRef, todo: list[tuple[Task, int]], settings: EvalSettings, simulator: UserSimulator,
                 backend: Backend, reward: ConversationScorer | None, store: ConversationStore,
                 say: Callable[[str], None], progress: StageProgress) -> None:
    engine = RolloutEngine(
        backend,
        simulator,
        params=SamplingParams(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature),
        system_prompt=settings.system_prompt,
    )
    written = 0
    for start in range(0, len(todo), settings.batch_size):
        chunk = todo[start : start + settings.batch_size]
        states = [
            ConversationState(
                task,
                [],
                seed=conversation_seed(settings.seed, task.id, run),
                max_assistant_turns=settings.max_turns,
            )
            for task, run in chunk
        ]
        engine.run(states)
        rows = score_states(
            states,
            model=ref.label,
            runs=[run for _, run in chunk],
            eval_key=settings.eval_key,
            mode=settings.mode,
            count_tokens=backend.count_tokens,
            reward=reward,
        )
        written += store.append(rows)
        failed = sum(1 for s in states if s.failed)
        progress.update(advance=len(rows), note=f"{failed} failed" if failed else "")
        say(f"{ref.label}: {written}/{len(todo)} conversations saved" + (f" ({failed} failed)" if failed else ""))


# --- recipe stages -----------------------------------------------------------------------------------------------


def stage_model_refs(recipe: Recipe, stage: EvalStage, run_dir: Path) -> list[ModelRef]:
    """The stage's models: a name of an earlier training stage means `<run_dir>/<stage>/final`; anything else is a
    model spec. With no models listed: the recipe's model and every earlier training stage."""
    from collab.config import TrainerStage

    labels = [s.label for s in recipe.stages]
    index = labels.index(stage.label) if stage.label in labels else len(labels)
    trained = [s.label for s in recipe.stages[:index] if isinstance(s, TrainerStage)]
    names = list(stage.models) or [recipe.model.name, *trained]
    refs = []
    for name in names:
        if name in trained:
            refs.append(ModelRef(name, str(run_dir / name / "final")))
        elif name in labels:
            raise CollabError(
                f"model '{name}' is a stage that is not an earlier training stage of '{stage.label}'",
                where=f"stages.{stage.label}.models",
                fix=f"name one of {trained or 'the training stages before it'}, or a model.",
            )
        else:
            refs.append(ModelRef(name, name))
    return refs


def run_eval_stage(
    recipe: Recipe,
    stage: EvalStage,
    run_dir: str | Path,
    *,
    out_dir: str | Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run an eval stage of a recipe into `out_dir` (default `<run_dir>/<stage label>`), sharing the run's request
    cache. The one way an evaluation runs: a pipeline's eval stage and `collab eval` (collab.evaluate.command) both
    come here.

    Settings: `EvalSettings.for_stage`. Models: `stage_model_refs`, each built by `collab.factory.build_eval_model`;
    simulator and judge from the recipe (collab.factory). W&B: `tracking`, the run named `<recipe>-<out folder>`.
    """
    from collab.factory import build_eval_model, build_judge, build_simulator, cache_for

    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / stage.label
    settings = EvalSettings.for_stage(recipe, stage)
    cache = cache_for(run_dir)
    try:
        return evaluate(
            stage_model_refs(recipe, stage, run_dir),
            settings,
            out,
            simulator=build_simulator(recipe, cache),
            loader=lambda ref: build_eval_model(recipe, ref.spec, cache),
            judge=build_judge(recipe, cache) if settings.reward is not None else None,
            tracking=recipe.tracking,
            run_name=f"{recipe.name}-{out.name}",
            wandb_dir=run_dir,
            echo=echo,
        )
    finally:
        cache.close()

"""Running a data stage: one shard of the engine, and the merge that turns every shard's store into datasets."""

from __future__ import annotations

import shutil
from pathlib import Path

from collab.config import DataStage, Recipe
from collab.data.convert import build_datasets
from collab.data.engine import DataEngine, Shard, store_dir, turn_key
from collab.data.store import JsonlStore, read_records
from collab.errors import CollabError
from collab.io import atomic_write_json, atomic_write_text
from collab.run.layout import StagePaths


def run_data_stage(recipe: Recipe, stage: DataStage, run_dir: Path, shard: Shard = Shard()) -> Path:
    """Generate (or continue) shard `shard` of the stage; the unsharded run also merges. Returns the stage dir."""
    from collab.factory import build_policy, build_reward, build_simulator, cache_for
    from collab.progress import stage_progress
    from collab.tasks.registry import load_task_set

    out = run_dir / stage.label
    if StagePaths(run_dir, stage.label).is_done():
        return out
    tasks = shard.select(load_task_set(recipe.tasks.name, split=recipe.tasks.split, limit=recipe.tasks.limit,
                                       seed=recipe.tasks.seed))
    cache = cache_for(run_dir)
    policy = build_policy(recipe, cache)
    simulator = build_simulator(recipe, cache)
    reward = build_reward(recipe, policy, simulator, cache)
    store = JsonlStore(store_dir(run_dir, stage) / f"{shard.tag}.jsonl", key=turn_key)
    engine = DataEngine(recipe, stage, reward, simulator, store)
    backends = [policy, *[b for b in (getattr(simulator, "backend", None),) if b is not None]]
    with stage_progress(f"data {shard.tag}", len(tasks), backends) as progress:
        engine.run(tasks, progress)
    summary = {"tasks": len(tasks), "turn_records": len(store), "policy": vars(policy.stats),
               "simulator": vars(simulator.stats), "reward": vars(reward.stats),
               "cache": {"hits": cache.hits, "misses": cache.misses} if cache else None}
    atomic_write_json(store.path.with_suffix(".summary.json"), summary)
    atomic_write_text(store.path.with_suffix(".done"), "")
    if shard.count == 1:
        merge_data_stage(recipe, stage, run_dir)
    return out


def merge_data_stage(recipe: Recipe, stage: DataStage, run_dir: Path) -> Path:
    """Combine every shard's records into the stage's sft/ and dpo/ datasets and stats.json, then mark DONE."""
    out = run_dir / stage.label
    stores = sorted(store_dir(run_dir, stage).glob("shard-*.jsonl"))
    if not stores:
        raise CollabError(f"{store_dir(run_dir, stage)} holds no shard files", fix="run `collab data RECIPE` first.")
    counts = {int(p.stem.split("-of-")[1]) for p in stores}
    if len(counts) != 1:
        raise CollabError(f"{store_dir(run_dir, stage)} mixes shard counts {sorted(counts)}",
                          fix="keep the shards of one run only (same --shard i/n denominator).")
    expected = counts.pop()
    missing = [i for i in range(expected) if not store_dir(run_dir, stage).joinpath(
        f"shard-{i:04d}-of-{expected:04d}.done").is_file()]
    if missing:
        raise CollabError(f"shards {missing} of {expected} have not finished", where=str(store_dir(run_dir, stage)),
                          fix="run (or rerun) `collab data RECIPE --shard i/n` for them; finished turns are kept.")
    records: dict[tuple[str, int], dict] = {}
    for path in stores:
        for record in read_records(path):
            records.setdefault(turn_key(record), record)
    sft, dpo, stats = build_datasets(list(records.values()), min_gap=stage.min_gap, pairs=stage.pairs,
                                     min_chosen_mr=stage.min_chosen_mr, balance_actions=stage.balance_actions,
                                     eval_fraction=stage.eval_fraction, seed=recipe.seed,
                                     system_prompt=recipe.model.system_prompt)
    stats["shards"] = expected
    for name, dataset in (("sft", sft), ("dpo", dpo)):
        tmp = out / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        dataset.save_to_disk(str(tmp))
        shutil.rmtree(out / name, ignore_errors=True)
        tmp.rename(out / name)
    atomic_write_json(out / "stats.json", stats)
    StagePaths(run_dir, stage.label).mark_done(records=len(records))
    return out


def data_stage_of(recipe: Recipe, label: str | None) -> DataStage:
    stages = [s for s in recipe.stages if isinstance(s, DataStage)]
    if label is not None:
        stages = [s for s in stages if s.label == label]
    if not stages:
        names = [s.label for s in recipe.stages if isinstance(s, DataStage)]
        if label is not None and names:
            raise CollabError(f"no data stage named '{label}'", fix=f"use one of the data stages {names} (all "
                              f"stages: {[s.label for s in recipe.stages]}).")
        raise CollabError(f"recipe '{recipe.name}' has no data stage" + (f" named '{label}'" if label else ""),
                          fix="add a stage with `kind: data` or pick one with --stage.")
    return stages[0]

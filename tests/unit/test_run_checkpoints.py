"""Choosing the checkpoint to resume from: the newest complete one; torn ones (killed mid-save) are skipped."""

from __future__ import annotations

import json
from pathlib import Path

from collab.run.checkpoints import (
    is_complete_checkpoint,
    last_complete_checkpoint,
    list_checkpoints,
    remove_partial_checkpoints,
)


def make_checkpoint(root: Path, step: int, *, state: bool = True, weights: str | None = "model.safetensors",
                    torn_state: bool = False) -> Path:
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "optimizer.pt").write_bytes(b"x")
    if weights:
        target = path / weights
        if weights.startswith(("global_step", "pytorch_model_fsdp_")):
            target.mkdir()
        else:
            target.write_bytes(b"w")
    if state:
        (path / "trainer_state.json").write_text('{"global_step": ' if torn_state else json.dumps({"global_step": step}))
    return path


def test_newest_complete_checkpoint_is_chosen(tmp_path: Path) -> None:
    for step in (2, 4, 6):
        make_checkpoint(tmp_path, step)
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-6"


def test_checkpoints_are_ordered_by_step_number_not_by_name(tmp_path: Path) -> None:
    for step in (10, 9, 100):
        make_checkpoint(tmp_path, step)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-9", "checkpoint-10", "checkpoint-100"]
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-100"


def test_checkpoint_without_trainer_state_is_skipped(tmp_path: Path) -> None:
    make_checkpoint(tmp_path, 2)
    make_checkpoint(tmp_path, 4, state=False)  # killed before the Trainer wrote trainer_state.json (written last)
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-2"


def test_checkpoint_without_weights_is_skipped(tmp_path: Path) -> None:
    make_checkpoint(tmp_path, 2)
    make_checkpoint(tmp_path, 4, weights=None)
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-2"


def test_checkpoint_with_torn_trainer_state_is_skipped(tmp_path: Path) -> None:
    make_checkpoint(tmp_path, 2)
    make_checkpoint(tmp_path, 4, torn_state=True)
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-2"


def test_adapter_deepspeed_and_fsdp_checkpoints_count_as_complete(tmp_path: Path) -> None:
    lora = make_checkpoint(tmp_path / "a", 1, weights="adapter_model.safetensors")
    zero = make_checkpoint(tmp_path / "b", 1, weights="global_step1")
    fsdp = make_checkpoint(tmp_path / "c", 1, weights="pytorch_model_fsdp_0")
    sharded = make_checkpoint(tmp_path / "d", 1, weights="model.safetensors.index.json")
    assert [is_complete_checkpoint(p) for p in (lora, zero, fsdp, sharded)] == [True, True, True, True]


def test_no_checkpoint_folder_or_only_partial_ones_means_start_from_scratch(tmp_path: Path) -> None:
    assert last_complete_checkpoint(tmp_path / "missing") is None
    make_checkpoint(tmp_path, 2, state=False)
    (tmp_path / "runs").mkdir()  # not a checkpoint folder
    assert last_complete_checkpoint(tmp_path) is None


def test_partial_checkpoints_newer_than_the_resume_point_are_removed(tmp_path: Path) -> None:
    make_checkpoint(tmp_path, 1, state=False)  # older and partial: left alone (rotation deletes it eventually)
    good = make_checkpoint(tmp_path, 2)
    make_checkpoint(tmp_path, 4, state=False)
    removed = remove_partial_checkpoints(tmp_path, good)
    assert [p.name for p in removed] == ["checkpoint-4"]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-1", "checkpoint-2"]


def _checkpoint(root: Path, step: int, weights: bytes) -> Path:
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(weights)
    (path / "optimizer.pt").write_bytes(b"o" * 64)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


def test_a_finished_stage_keeps_the_last_complete_checkpoint_with_weights_linked_to_final(tmp_path: Path) -> None:
    from collab.run.checkpoints import prune_finished

    checkpoints, final = tmp_path / "checkpoints", tmp_path / "final"
    for step in (2, 4):
        _checkpoint(checkpoints, step, b"w%d" % step)
    (checkpoints / "checkpoint-6").mkdir()  # torn: no weights, no state
    final.mkdir()
    (final / "model.safetensors").write_bytes(b"w4")

    removed = prune_finished(checkpoints, final, "last")

    assert sorted(p.name for p in removed) == ["checkpoint-2", "checkpoint-6"]
    assert [p.name for p in checkpoints.iterdir()] == ["checkpoint-4"]
    kept = checkpoints / "checkpoint-4"
    assert (kept / "model.safetensors").samefile(final / "model.safetensors")
    assert (kept / "optimizer.pt").read_bytes() == b"o" * 64


def test_weights_that_differ_from_final_are_kept_as_they_are(tmp_path: Path) -> None:
    from collab.run.checkpoints import prune_finished

    checkpoints, final = tmp_path / "checkpoints", tmp_path / "final"
    _checkpoint(checkpoints, 4, b"old")
    final.mkdir()
    (final / "model.safetensors").write_bytes(b"new")

    assert prune_finished(checkpoints, final, "last") == []
    assert not (checkpoints / "checkpoint-4" / "model.safetensors").samefile(final / "model.safetensors")


def test_keep_none_removes_every_checkpoint_and_keep_all_none(tmp_path: Path) -> None:
    from collab.run.checkpoints import prune_finished

    checkpoints = tmp_path / "checkpoints"
    for step in (2, 4):
        _checkpoint(checkpoints, step, b"w")

    assert prune_finished(checkpoints, tmp_path / "final", "all") == []
    assert len(prune_finished(checkpoints, tmp_path / "final", "none")) == 2
    assert list(checkpoints.iterdir()) == []

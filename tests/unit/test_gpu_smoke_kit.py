"""scripts/gpu_smoke: the GPU smoke kit cannot run here (no GPU), so what can be checked on a CPU is: run.sh parses,
every recipe it uses loads through the normal loader with the overrides run.sh gives it (on a GPU and in its CPU dry
run), and check.py's table and argument handling work."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from collab.config import TrainerStage, load_recipe

REPO = Path(__file__).resolve().parents[2]
KIT = REPO / "scripts" / "gpu_smoke"
RUN_SH = (KIT / "run.sh").read_text()
RECIPES = sorted(KIT.glob("recipe_*.yaml"))


def test_run_sh_parses() -> None:
    bash = shutil.which("bash")
    assert bash is not None
    result = subprocess.run([bash, "-n", str(KIT / "run.sh")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_each_recipe_loads_and_keeps_the_checkpoint_that_verify_reads(path: Path) -> None:
    recipe = load_recipe(path)
    trainers = [s for s in recipe.stages if isinstance(s, TrainerStage)]
    assert trainers
    # check.py verify reads the last checkpoint's trainer state after the stage has finished.
    assert all(s.keep_checkpoints != "none" for s in trainers), path.name


def _dry_run_overrides() -> dict[str, list[str]]:
    """The $BF16_OFF_* variables of run.sh's CPU dry run, as --set assignments."""
    block = RUN_SH[RUN_SH.index('if [ "$DRY" = 1 ]; then\n  BF16_OFF_TRAIN'):]
    block = block[:block.index("fi\n")]
    return {name: re.findall(r"--set (\S+)", value) for name, value in re.findall(r'(BF16_OFF_\w+)="([^"]*)"', block)}


def _invocations() -> list[tuple[str, list[str], list[str]]]:
    """(recipe file, --set assignments, $BF16_OFF_* variables) of every recipe use in run.sh's check functions."""
    found = []
    for match in re.finditer(r"\$KIT/(recipe_\w+\.yaml)(.*?)(?:&&|\n\})", RUN_SH, flags=re.DOTALL):
        rest = match.group(2)
        sets = [s for s in re.findall(r'--set "?([^"\s]+)"?', rest) if not s.startswith("output_dir=")]
        found.append((match.group(1), sets, re.findall(r"\$(BF16_OFF_\w+)", rest)))
    return found


INVOCATIONS = _invocations()


def test_run_sh_uses_every_recipe_of_the_kit() -> None:
    assert sorted({name for name, _, _ in INVOCATIONS}) == [p.name for p in RECIPES]
    assert len(INVOCATIONS) >= 9  # b c d e f g h i j


@pytest.mark.parametrize(("name", "sets", "dry"), INVOCATIONS,
                         ids=[f"{n}:{'+'.join(s) or 'plain'}" for n, s, _ in INVOCATIONS])
def test_each_recipe_loads_with_the_overrides_run_sh_gives_it(name: str, sets: list[str], dry: list[str],
                                                              tmp_path: Path) -> None:
    dry_sets = [s for variable in dry for s in _dry_run_overrides()[variable]]
    for overrides in (sets, sets + dry_sets):  # on the GPU, and in the CPU dry run (GPU_DRYRUN=1)
        recipe = load_recipe(KIT / name, [f"output_dir={tmp_path}", *overrides])
        assert recipe.run_dir == tmp_path


def test_check_py_prints_the_pass_fail_table() -> None:
    results = ["a:hf_backend=PASS:21", "g:lora_sft_dpo_ddp=FAIL:52", "j:preempt_resume=SKIP", "c:dpo_zero3=NOT-RUN"]
    out = subprocess.run([sys.executable, str(KIT / "check.py"), "table", *results], capture_output=True, text=True,
                         check=True).stdout
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["check", "name", "result", "s"]
    assert lines[2].split()[:4] == ["g", "lora_sft_dpo_ddp", "FAIL", "52"] and "LoRA adapter" in lines[2]
    assert lines[-1] == "FAILED: g j (see their logs)"
    ok = subprocess.run([sys.executable, str(KIT / "check.py"), "table", "h:online_dpo_mr_ddp=PASS:35"],
                        capture_output=True, text=True, check=True).stdout
    assert ok.splitlines()[-1] == "ALL PASSED (1 checks)"

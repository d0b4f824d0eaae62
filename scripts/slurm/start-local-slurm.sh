#!/usr/bin/env bash
# Start a real single-node SLURM on localhost (for CI and for testing profiles/slurm-local).
#
#   sudo scripts/slurm/start-local-slurm.sh      # idempotent; safe to run again
#   scripts/slurm/stop-local-slurm.sh            # stops exactly the daemons started here
#
# What it does (Debian/Ubuntu, as root, no systemd needed):
#   * installs munge + slurm-wlm with apt (--no-install-recommends) if missing, with a
#     policy-rc.d in place so apt does not start any service itself;
#   * writes slurm.conf + gres.conf into its own state folder, wipes the controller state;
#   * one node "$(hostname -s)" at 127.0.0.1, partition "debug" (default), no accounting,
#     no cgroups, fake GPUs backed by character devices so GPU requests are really scheduled;
#   * starts munged (unless one already answers), slurmctld and slurmd in the background,
#     records the PIDs it started, waits until sinfo shows the node idle, prints one line.
#
# Clients (sbatch/squeue/sinfo, Snakemake) find the config through /etc/slurm/slurm.conf,
# which is made a symlink to the state folder when that path is free (or already ours);
# otherwise export SLURM_CONF=$GRADATLAS_SLURM_RUN/slurm.conf (printed in the summary).
#
# Tunables (environment):
#   GRADATLAS_SLURM_RUN     state folder for config, PIDs, logs   (/run/gradatlas-slurm)
#   GRADATLAS_SLURM_SPOOL   controller/slurmd spool               (/var/spool/gradatlas-slurm)
#   GRADATLAS_SLURM_CPUS    CPUs the node advertises              (4)
#   GRADATLAS_SLURM_MEM_MB  RealMemory of the node, MB            (8000)
#   GRADATLAS_SLURM_GPUS    number of fake GPUs                   (2)
#   GRADATLAS_SLURM_SHARDS  GPU shards per GPU (GRES "shard", for jobs sharing a GPU; 0 = none) (0)
#   GRADATLAS_SLURM_WAIT_S  how long to wait for the node idle    (60)
set -Eeuo pipefail
trap 'echo "start-local-slurm: ERROR: command failed (line $LINENO, exit $?): $BASH_COMMAND" >&2' ERR

RUN_DIR=${GRADATLAS_SLURM_RUN:-/run/gradatlas-slurm}
SPOOL_DIR=${GRADATLAS_SLURM_SPOOL:-/var/spool/gradatlas-slurm}
CPUS=${GRADATLAS_SLURM_CPUS:-4}
MEM_MB=${GRADATLAS_SLURM_MEM_MB:-8000}
NGPUS=${GRADATLAS_SLURM_GPUS:-2}
SHARDS=${GRADATLAS_SLURM_SHARDS:-0}
WAIT_S=${GRADATLAS_SLURM_WAIT_S:-60}
PARTITION=debug
NODE=$(hostname -s)

CONF=$RUN_DIR/slurm.conf
SETTINGS_FILE=$RUN_DIR/settings
SETTINGS="node=$NODE cpus=$CPUS mem_mb=$MEM_MB gpus=$NGPUS shards=$SHARDS"
PIDFILE=$RUN_DIR/pids
LOG_DIR=$RUN_DIR/log
DEV_DIR=$RUN_DIR/dev
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { echo "start-local-slurm: ERROR: $*" >&2; exit 1; }
say() { echo "start-local-slurm: $*" >&2; }

[[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and starts daemons)"
[[ $CPUS =~ ^[1-9][0-9]*$ && $MEM_MB =~ ^[1-9][0-9]*$ && $NGPUS =~ ^[0-9]+$ && $SHARDS =~ ^[0-9]+$ && $WAIT_S =~ ^[1-9][0-9]*$ ]] \
    || die "GRADATLAS_SLURM_CPUS/MEM_MB/GPUS/WAIT_S must be integers"
[[ -n $NODE ]] || die "hostname -s is empty"

# ---------------------------------------------------------------- 0. already up? (idempotence)
export SLURM_CONF=$CONF
node_state() { sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n1; }
recorded_alive() {
    # true when every PID recorded in $PIDFILE is still running the program it was recorded for
    [[ -s $PIDFILE ]] || return 1
    local name pid
    while read -r name pid; do
        [[ -n ${pid:-} && -r /proc/$pid/comm ]] || return 1
        [[ $(cat "/proc/$pid/comm") == "$name" ]] || return 1
    done <"$PIDFILE"
}
if recorded_alive && [[ $(cat "$SETTINGS_FILE" 2>/dev/null) == "$SETTINGS" ]] && command -v sinfo >/dev/null && [[ $(node_state) == idle || $(node_state) == mixed || $(node_state) == allocated ]]; then
    echo "local SLURM already running: node=$NODE partition=$PARTITION state=$(node_state) SLURM_CONF=$CONF pids=$(awk '{printf "%s%s:%s", (NR>1?",":""), $1, $2}' "$PIDFILE")"
    exit 0
fi
if [[ -s $PIDFILE ]]; then
    say "stale, partial or differently configured set-up found in $PIDFILE; stopping what it recorded first"
    "$SCRIPT_DIR/stop-local-slurm.sh" || die "could not stop the previous set-up"
fi

# ---------------------------------------------------------------- 1. packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
    || ! command -v sbatch >/dev/null; then
    command -v apt-get >/dev/null || die "slurm/munge missing and apt-get not available"
    created_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        # keep apt's maintainer scripts from starting munge/slurm services themselves
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    say "installing munge + slurm-wlm with apt-get (no recommends)"
    rc=0
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends munge slurm-wlm
    } >"${TMPDIR:-/tmp}/gradatlas-slurm-apt.log" 2>&1 || rc=$?
    [[ $created_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d
    if [[ $rc -ne 0 ]]; then
        tail -n 20 "${TMPDIR:-/tmp}/gradatlas-slurm-apt.log" >&2
        die "apt-get install munge slurm-wlm failed (rc=$rc); log: ${TMPDIR:-/tmp}/gradatlas-slurm-apt.log"
    fi
fi
for b in munged mungekey slurmctld slurmd sinfo sbatch squeue setpriv; do
    command -v "$b" >/dev/null || die "$b not found after installation"
done

# ---------------------------------------------------------------- 2. state folders + config
mkdir -p "$RUN_DIR" "$LOG_DIR" "$DEV_DIR" "$SPOOL_DIR"
rm -rf "$SPOOL_DIR/ctld" "$SPOOL_DIR/d"      # a DRAIN reason would survive in the controller state
rm -f "$LOG_DIR"/*                            # logs of this set-up only
mkdir -p "$SPOOL_DIR/ctld" "$SPOOL_DIR/d"
: >"$PIDFILE"
echo "$SETTINGS" >"$SETTINGS_FILE"

# fake GPUs: SLURM only accepts GRES files that are character (or block) devices
gpu_files=""
for ((i = 0; i < NGPUS; i++)); do
    [[ -c $DEV_DIR/nvidia$i ]] || { rm -f "$DEV_DIR/nvidia$i"; mknod -m 666 "$DEV_DIR/nvidia$i" c 1 3; } \
        || die "mknod $DEV_DIR/nvidia$i failed (fake GPUs need character devices)"
done
if ((NGPUS > 0)); then
    if ((NGPUS == 1)); then gpu_files=$DEV_DIR/nvidia0; else gpu_files="$DEV_DIR/nvidia[0-$((NGPUS - 1))]"; fi
    gres_node="Gres=gpu:$NGPUS"
    gres_types="gpu"
    if ((SHARDS > 0)); then
        gres_node+=",shard:$((SHARDS * NGPUS))"
        gres_types="gpu,shard"
    fi
else
    gres_node=""
    gres_types="gpu"
    SHARDS=0
fi

cat >"$CONF" <<EOF
# written by scripts/slurm/start-local-slurm.sh -- local single-node test cluster, do not edit
ClusterName=gradatlas-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
StateSaveLocation=$SPOOL_DIR/ctld
SlurmdSpoolDir=$SPOOL_DIR/d
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups in containers
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
# let the node advertise more CPUs/memory than it has, so small jobs run side by side
SlurmdParameters=config_overrides
# no accounting: use squeue for job status (profiles/slurm-local)
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# finished jobs stay visible to 'squeue --states=all' for 5 minutes
MinJobAge=300
MailProg=/bin/true
ReturnToService=2
GresTypes=$gres_types
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB $gres_node State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
{
    echo "# written by scripts/slurm/start-local-slurm.sh"
    echo "AutoDetect=off"
    [[ -n $gpu_files ]] && echo "NodeName=$NODE Name=gpu File=$gpu_files"
    ((SHARDS > 0)) && echo "NodeName=$NODE Name=shard Count=$((SHARDS * NGPUS)) File=$gpu_files"
    true
} >"$RUN_DIR/gres.conf"

# clients find the config without SLURM_CONF when /etc/slurm/slurm.conf is free or ours
mkdir -p /etc/slurm
if [[ -L /etc/slurm/slurm.conf && $(readlink /etc/slurm/slurm.conf) == "$CONF" ]] || [[ ! -e /etc/slurm/slurm.conf && ! -L /etc/slurm/slurm.conf ]]; then
    ln -sfn "$CONF" /etc/slurm/slurm.conf
    conf_hint="(linked from /etc/slurm/slurm.conf)"
else
    conf_hint="(/etc/slurm/slurm.conf is someone else's: export SLURM_CONF=$CONF)"
    say "WARNING: /etc/slurm/slurm.conf exists and is not ours; clients need SLURM_CONF=$CONF"
fi

# ---------------------------------------------------------------- 3. daemons
record() { echo "$1 $2" >>"$PIDFILE"; }
fail_with_logs() {
    local f
    for f in "$LOG_DIR"/*; do [[ -s $f ]] && { echo "---- $f (last 15 lines)" >&2; tail -n 15 "$f" >&2; }; done
    # leave no half-started cluster behind (logs and config stay for inspection)
    "$SCRIPT_DIR/stop-local-slurm.sh" >&2 || true
    die "$*"
}
check_alive() { kill -0 "$2" 2>/dev/null || fail_with_logs "$1 (pid $2) exited right after start"; }

# munge: reuse a munged that already answers (not ours, not recorded); otherwise start one
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    munge_note="munged: already running (not managed here)"
else
    if [[ ! -s /etc/munge/munge.key ]]; then
        mungekey --create --keyfile=/etc/munge/munge.key >/dev/null 2>&1 || die "mungekey --create failed"
    fi
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 755 /run/munge
    setsid setpriv --reuid=munge --regid=munge --init-groups munged -F \
        </dev/null >>"$LOG_DIR/munged.log" 2>&1 &
    pid=$!
    record munged "$pid"
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || fail_with_logs "munged does not answer"
    munge_note="munged pid $pid"
fi

setsid slurmctld -D -f "$CONF" </dev/null >>"$LOG_DIR/slurmctld.out" 2>&1 &
ctld_pid=$!
record slurmctld "$ctld_pid"
for _ in $(seq 50); do scontrol ping 2>/dev/null | grep -q 'is UP' && break; kill -0 "$ctld_pid" 2>/dev/null || break; sleep 0.2; done
check_alive slurmctld "$ctld_pid"

setsid slurmd -D -N "$NODE" -f "$CONF" </dev/null >>"$LOG_DIR/slurmd.out" 2>&1 &
d_pid=$!
record slurmd "$d_pid"

# ---------------------------------------------------------------- 4. wait for the node
deadline=$((SECONDS + WAIT_S))
state=""
while ((SECONDS < deadline)); do
    check_alive slurmctld "$ctld_pid"
    check_alive slurmd "$d_pid"
    state=$(node_state)
    case $state in
    idle) break ;;
    drain* | drained* | down* | fail*)
        reason=$(sinfo -h -N -n "$NODE" -o '%E' 2>/dev/null)
        # ReturnToService=2 usually heals a 'down' at first registration; only a drain is final
        [[ $state == drain* || $state == drained* ]] && fail_with_logs "node $NODE is $state: $reason"
        ;;
    esac
    sleep 1
done
[[ $state == idle ]] || fail_with_logs "node $NODE not idle after ${WAIT_S}s (state: '${state:-unknown}')"

echo "local SLURM up: node=$NODE partition=$PARTITION cpus=$CPUS mem=${MEM_MB}MB gpus=$NGPUS shards/gpu=$SHARDS state=idle SLURM_CONF=$CONF $conf_hint; $munge_note, slurmctld pid $ctld_pid, slurmd pid $d_pid (pids in $PIDFILE)"
